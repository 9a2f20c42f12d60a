import ArgumentParser
import Foundation

@main
struct SpectraBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-bench",
        abstract: "Release-built measurements for the README (run through Deploy/bench.sh).",
        subcommands: [
            MQTTPublishBench.self, WaveformBench.self, OutboxEnqueueBench.self, OutboxDrainBench.self, MQTTHold.self,
            IngestPublish.self, IngestBench.self, IngestStages.self, EnvelopeEncodeBench.self, OutboxDiskFull.self, FleetLoad.self,
        ]
    )
}

/// Prints one JSON line of results.
func report(_ fields: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Seconds of the monotonic clock.
func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
}
