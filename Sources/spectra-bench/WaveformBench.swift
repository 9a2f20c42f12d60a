import ArgumentParser
import Foundation
import Waveform

/// Plans and renders a full session for all channels, reporting time and the ratio to real time.
struct WaveformBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "waveform-render", abstract: "Plan and render a full 15-minute session for all channels.")

    @Option(help: "Samples per second per channel.") var sampleRate = 10_000.0
    @Option(help: "Repetitions (the best is reported).") var repeats = 5

    func run() async throws {
        let muscles = ["frontalis_lateral", "zygomaticus_major", "zygomaticus_minor", "levator_labii_superioris", "levator_anguli_oris"]
        let channels = muscles.enumerated().flatMap { index, muscle in
            [("left", "L"), ("right", "R")].map { side, prefix in
                CalibrationProfile.Channel(
                    id: "c\(index)-\(prefix)", muscle: muscle, side: side, electrodes: ["\(prefix)-a\(index)", "\(prefix)-b\(index)"],
                    electrodeAreaCm2: 1.5)
            }
        }
        let profile = CalibrationProfile(
            version: "bench", channels: channels,
            levels: [.init(level: 1, peakMicroAmps: 200), .init(level: 2, peakMicroAmps: 300), .init(level: 3, peakMicroAmps: 400)])
        var best = Double.infinity
        var samples = 0
        for _ in 0..<repeats {
            let start = monotonicSeconds()
            let segments = try SessionPlan.ideal(profile: profile, level: 3)
            let rendered = Renderer.render(segments, channels: channels.count, sampleRate: sampleRate, seconds: 900)
            best = min(best, monotonicSeconds() - start)
            samples = rendered.count
        }
        report([
            "bench": "waveform-render", "channels": channels.count, "sampleRate": sampleRate, "samples": samples,
            "seconds": best, "realTimeRatio": 900 / best,
        ])
    }
}
