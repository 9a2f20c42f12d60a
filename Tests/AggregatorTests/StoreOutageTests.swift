@_spi(Testing) import Aggregator
import Foundation
import Logging
import MQTT
import ServiceLifecycle
import SpectraConfig
import SpectraProtocol
import SpectraTesting
import Synchronization
import Testing

/// The real SQLite store, with commits that fail while `failing` is set, as on a full disk.
final class FailingCommits: ForwardingStore, @unchecked Sendable {
    let failing = Atomic<Bool>(true)

    struct DiskFull: Error {}

    override func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome {
        if failing.load(ordering: .relaxed) { throw DiskFull() }
        return try await store.apply(records)
    }
}

@Suite("Ingest while the store cannot commit")
struct StoreOutageTests {
    @Test("reconnects while commits fail keep one window in memory, not one per reconnect; nothing is lost once they work")
    func commitsFailing() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("store-outage")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = FailingCommits(try SQLiteStatsStore(path: folder.appendingPathComponent("stats.sqlite").path))
        var logger = Logger(label: "test.ingest")
        logger.logLevel = .error
        let window = 20
        let ingest = IngestService(
            configuration: AggregatorConfiguration(
                fleets: [], broker: BrokerConfiguration(host: "127.0.0.1", port: broker.port), clientID: "agg-outage",
                databasePath: "", httpHost: "127.0.0.1", httpPort: 0, publishIntervalSeconds: 3600),
            store: store, metrics: IngestMetrics(), logger: logger, now: { testNow }, settleWindow: window)
        let group = ServiceGroup(configuration: .init(services: [ingest], logger: logger))
        let running = Task { try await group.run() }
        #expect(await eventually(timeout: 10) { ingest.isConnected })
        try await Task.sleep(for: .milliseconds(500))  // the SUBACK

        let publisher = try await broker.client("gw-feed")
        var feed = GatewayFeed("gw-0001")
        let total = 100
        for index in 0..<total { try await publisher.publish(feed.telemetry(at: at(today, hour: 1 + Double(index) / 3600))) }

        // The window is delivered, the commits fail, reading stops.
        #expect(await eventually(timeout: 10) { ingest.receivedMessages >= window })
        try await Task.sleep(for: .milliseconds(300))
        #expect(ingest.receivedMessages == window, "reading stops at the window while nothing commits")
        // Every reconnect resends the unacknowledged window; what waited from the connection
        // before is dropped, so what waits stays within one window.
        for cycle in 1...3 {
            ingest.dropConnection()
            #expect(await eventually(timeout: 10) { ingest.receivedMessages >= window * (cycle + 1) }, "cycle \(cycle)")
            try await Task.sleep(for: .milliseconds(300))
            let waiting = ingest.waitingMessages
            #expect(waiting <= window, "cycle \(cycle): \(waiting) waiting")
        }

        // The disk has room again: everything arrives, each message counted once.
        store.failing.store(false, ordering: .relaxed)
        let complete = await eventually(timeout: 20) {
            (try? await store.summary(fleet: "demo", now: testNow))?.completeness.received == total
        }
        #expect(complete, "all \(total) envelopes committed")
        try await Task.sleep(for: .milliseconds(500))
        let completeness = try await store.summary(fleet: "demo", now: testNow).completeness
        #expect(completeness.received == total && completeness.expected == total)
        await group.triggerGracefulShutdown()
        try await running.value
    }
}
