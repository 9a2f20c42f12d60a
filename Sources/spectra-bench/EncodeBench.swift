import ArgumentParser
import Foundation
import SpectraProtocol

/// What an agent spends writing telemetry: `JSONEncoder` against the hand-written writer
/// `Envelope.encoded()` uses, on the same envelopes (the writer's bytes are the same).
struct EnvelopeEncodeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "envelope-encode", abstract: "Telemetry envelopes encoded per second: JSONEncoder and the telemetry writer.")
    @Option(help: "Envelopes per round.") var count = 100_000
    @Option(help: "Channels per telemetry message.") var channels = 10

    func run() async throws {
        let fleet = try Identifier("bench")
        let envelopes = try (0..<1_000).map { index in
            let readings = (0..<channels).map { channel in
                Telemetry.Channel(
                    id: "ch\(channel)", peakMicroAmps: 300 + Double(index % 97) / 4, rmsMicroAmps: 42.4, impedanceOhms: 5200 + Double(index),
                    complianceVolts: 1.6, contact: true)
            }
            return Envelope(
                fleet: fleet, gateway: try Identifier(String(format: "gw-%05d", index)), epoch: UUID(), seq: UInt64(index + 1), boot: UUID(),
                monoNanos: UInt64(index) * 1_000_000_000, timestamp: Date(), synced: true,
                message: .telemetry(Telemetry(
                    sessionId: try Identifier("s1"), level: 2, elapsedS: Double(index) / 3, channels: readings, batteryPct: 77,
                    headbandTempC: 31.5, agent: .init(outboxDepth: index, outboxBytes: index * 466, oldestUnackedS: 0.25, reconnects: 0, rssKiB: 36_000))))
        }
        // Alternated, best of three each: this machine's speed drifts within a run.
        var reference = 0.0, writer = 0.0, bytes = 0
        for _ in 0..<3 {
            var start = monotonicSeconds()
            for index in 0..<count { bytes &+= WireFormat.encode(envelopes[index % envelopes.count]).count }
            reference = max(reference, Double(count) / (monotonicSeconds() - start))
            start = monotonicSeconds()
            for index in 0..<count { bytes &+= envelopes[index % envelopes.count].encoded().count }
            writer = max(writer, Double(count) / (monotonicSeconds() - start))
        }
        report([
            "bench": "envelope-encode", "channels": channels, "jsonEncoderPerSecond": reference, "writerPerSecond": writer,
            "bytesPerEnvelope": bytes / (6 * count),
        ])
    }
}
