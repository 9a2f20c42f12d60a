import Aggregator
import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

/// A fleet sends a steady trickle (each gateway a message a second); a transaction per few
/// messages would spend the aggregator's time committing.
@Suite("Ingest of a steady trickle")
struct TrickleTests {
    @Test("a trickle is gathered into a few transactions, and every message is still committed promptly")
    func trickleIsGathered() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("trickle")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await RunningAggregator(broker: broker, database: folder.appendingPathComponent("aggregator.sqlite").path)
        let publisher = try await broker.client("trickle")

        func batches() async throws -> Int {
            let metrics = String(decoding: try await aggregator.get("/metrics").1, as: UTF8.self)
            let line = try #require(metrics.split(separator: "\n").first { $0.hasPrefix("spectra_aggregator_batches_total ") })
            return try #require(Int(line.split(separator: " ")[1]))
        }
        let before = try await batches()

        // 200 messages from 20 gateways, one every 2 ms.
        var feeds = (0..<20).map { GatewayFeed("gw-\($0)") }
        // A pause of two polls (10 ms) with nothing new ends a gather by design (a broker
        // that allows few messages in flight sends no more until these commit), so pauses the
        // publisher itself makes on a busy machine are counted and allowed for.
        let start = ContinuousClock.now
        var previous = start
        var pauses = 0
        for index in 0..<200 {
            try await publisher.publish(feeds[index % 20].telemetry(at: testNow))
            let sent = ContinuousClock.now
            if sent - previous >= .milliseconds(10) { pauses += 1 }
            previous = sent
            try await Task.sleep(until: start + .milliseconds(2 * (index + 1)))
        }
        let publishing = (ContinuousClock.now - start) / .seconds(1)

        // Committed soon after the last one arrived, though no full batch ever waited.
        #expect(await eventually(timeout: 3) { aggregator.server.ingest.committedEnvelopes == 200 })
        let committed = aggregator.server.ingest.committedEnvelopes
        let transactions = try await batches() - before
        // Gathered for 50 ms: about publishing / 0.05 transactions, and one more per pause.
        // One per 5 ms poll would be 80 for these 200 messages.
        let gathered = Int(publishing / 0.05) * 2 + 3 + pauses
        #expect(
            transactions <= gathered,
            "\(transactions) transactions for 200 messages over \(publishing) s with \(pauses) pauses of 10 ms or more")
        #expect(committed == 200)
        await aggregator.stop()
        await publisher.disconnect()
    }
}
