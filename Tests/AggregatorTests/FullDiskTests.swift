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

/// The store on a real filesystem that fills up (a size-limited tmpfs), and a store that
/// refuses one poison message: ingest says why on `/healthz`, loses nothing it had committed,
/// and resumes by itself.
@Suite("Ingest when the disk is full or a message is poison", .serialized)
struct FullDiskTests {
    /// Mounts a tmpfs of `megabytes` at a new folder; the caller unmounts it.
    static func smallFilesystem(megabytes: Int) throws -> URL {
        let folder = try TestEnvironment.temporaryDirectory("full-disk")
        let status = try Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", folder.path])
        guard status == 0 else { throw TestEnvironmentError("mount -t tmpfs failed (exit \(status)); the test needs root") }
        return folder
    }

    static func unmount(_ folder: URL) {
        _ = try? Self.run("/bin/umount", ["-l", folder.path])
        try? FileManager.default.removeItem(at: folder)
    }

    static func run(_ path: String, _ arguments: [String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Writes a file that takes every free byte of `folder`'s filesystem.
    static func fill(_ folder: URL) throws -> URL {
        let filler = folder.appendingPathComponent("filler")
        FileManager.default.createFile(atPath: filler.path, contents: nil)
        let handle = try FileHandle(forWritingTo: filler)
        defer { try? handle.close() }
        let chunk = Data(count: 64 * 1024)
        while (try? handle.write(contentsOf: chunk)) != nil {}
        let small = Data(count: 512)
        while (try? handle.write(contentsOf: small)) != nil {}
        return filler
    }

    static func health(_ aggregator: RunningAggregator) async throws -> (Int, [String: Any]) {
        let (status, data) = try await aggregator.get("/healthz")
        return (status, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:])
    }

    @Test("a full disk turns /healthz 503 with the reason; nothing committed is lost; ingest resumes when space returns",
          .enabled(if: getuid() == 0, "mounting a size-limited tmpfs needs root"))
    func fullDisk() async throws {
        let broker = try await MosquittoBroker()
        let disk = try Self.smallFilesystem(megabytes: 4)
        defer { Self.unmount(disk) }
        let aggregator = try await RunningAggregator(broker: broker, database: disk.appendingPathComponent("stats.sqlite").path)
        let publisher = try await broker.client("gw-feed")
        var feed = GatewayFeed("gw-0001")

        func received() async -> Int? {
            try? await aggregator.json(GatewayDetail.self, "/api/v1/gateways/gw-0001").gateway.completeness.received
        }
        let before = 200
        for index in 0..<before { try await publisher.publish(feed.telemetry(at: at(today, hour: 1 + Double(index) / 3600))) }
        #expect(await eventually(timeout: 20) { await received() == before })
        // (Under a loaded machine a stats round can overrun its 1 s test interval for a moment.)
        #expect(await eventually(timeout: 20) { (try? await Self.health(aggregator).0) == 200 })

        // The disk fills up; what arrives now cannot be committed.
        let filler = try Self.fill(disk)
        let during = 2_000
        for index in 0..<during { try await publisher.publish(feed.telemetry(at: at(today, hour: 2 + Double(index) / 3600))) }
        let unhealthy = await eventually(timeout: 20) { (try? await Self.health(aggregator).0) == 503 }
        let (status, body) = try await Self.health(aggregator)
        #expect(unhealthy && status == 503, "\(body)")
        let reasons = (body["reasons"] as? [String] ?? []).joined(separator: " | ")
        #expect(reasons.contains("full"), "the reason names the full disk: \(reasons)")
        #expect(body["status"] as? String == "unhealthy")
        let metrics = String(decoding: try await aggregator.get("/metrics").1, as: UTF8.self)
        #expect(metrics.contains("spectra_aggregator_healthy 0"))
        #expect(metrics.contains("spectra_aggregator_last_commit_age_seconds"))
        // What was committed before is still there, read from the full disk.
        let kept = await received() ?? 0
        #expect(kept >= before)

        // Space returns: ingest resumes by itself, every message counted once.
        try FileManager.default.removeItem(at: filler)
        let resumed = await eventually(timeout: 30) { await received() == before + during }
        let count = await received() ?? -1
        #expect(resumed, "\(count) of \(before + during) received")
        #expect(await eventually(timeout: 10) { (try? await Self.health(aggregator).0) == 200 })
        let completeness = try await aggregator.json(GatewayDetail.self, "/api/v1/gateways/gw-0001").gateway.completeness
        #expect(completeness.received == before + during && completeness.expected == before + during)

        // The broker goes away: 503, saying so.
        await broker.stop()
        #expect(await eventually(timeout: 20) { (try? await Self.health(aggregator).0) == 503 })
        let brokerReasons = (try await Self.health(aggregator).1["reasons"] as? [String] ?? []).joined(separator: " | ")
        #expect(brokerReasons.contains("broker"), "\(brokerReasons)")
        await aggregator.stop()
    }

    @Test("a stats round that overruns its interval, running or finished, makes the aggregator unhealthy until one keeps up")
    func statsRoundOverrun() {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let health = IngestHealth(statsIntervalSeconds: 10, now: start)
        #expect(health.report(brokerConnected: true, now: start).healthy)
        health.roundStarted(at: start)
        #expect(health.report(brokerConnected: true, now: start.addingTimeInterval(9)).healthy)
        let running = health.report(brokerConnected: true, now: start.addingTimeInterval(12))
        #expect(!running.healthy && running.reasons.first?.contains("has run for 12 s") == true, "\(running.reasons)")
        health.roundFinished(at: start.addingTimeInterval(15))
        let finished = health.report(brokerConnected: true, now: start.addingTimeInterval(16))
        #expect(!finished.healthy && finished.reasons.first?.contains("took 15 s") == true, "\(finished.reasons)")
        health.roundStarted(at: start.addingTimeInterval(30))
        health.roundFinished(at: start.addingTimeInterval(31))
        let caughtUp = health.report(brokerConnected: true, now: start.addingTimeInterval(32))
        #expect(caughtUp.healthy && caughtUp.statsRoundAgeSeconds == 1 && caughtUp.lastStatsRoundSeconds == 1)
        #expect(!health.report(brokerConnected: false, now: start.addingTimeInterval(32)).healthy)
    }

    @Test("a message the store refuses is set aside, recorded against its gateway, and the batch around it commits")
    func poisonMessage() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("poison")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = PoisonRefusingStore(try SQLiteStatsStore(path: folder.appendingPathComponent("stats.sqlite").path))
        var logger = Logger(label: "test.ingest")
        logger.logLevel = .critical
        let ingest = IngestService(
            configuration: AggregatorConfiguration(
                fleets: [], broker: BrokerConfiguration(host: "127.0.0.1", port: broker.port), clientID: "agg-poison",
                databasePath: "", httpHost: "127.0.0.1", httpPort: 0, publishIntervalSeconds: 3600),
            store: store, metrics: IngestMetrics(), logger: logger, now: { testNow })
        let group = ServiceGroup(configuration: .init(services: [ingest], logger: logger))
        let running = Task { try await group.run() }
        #expect(await eventually(timeout: 10) { ingest.isConnected })
        try await Task.sleep(for: .milliseconds(500))

        // One batch: honest telemetry around a poison message (seq 50 of gw-0002).
        let publisher = try await broker.client("gw-feed")
        var honest = GatewayFeed("gw-0001"), poisoned = GatewayFeed("gw-0002")
        for index in 0..<100 {
            try await publisher.publish(honest.telemetry(at: at(today, hour: 1 + Double(index) / 3600)))
            try await publisher.publish(poisoned.telemetry(at: at(today, hour: 1 + Double(index) / 3600)))
        }
        #expect(await eventually(timeout: 20) {
            (try? await store.store.gateway(fleet: nil, id: "gw-0002", now: testNow, from: today, to: today))?.gateway.completeness.received == 99
        })
        let honestDetail = try #require(try await store.store.gateway(fleet: nil, id: "gw-0001", now: testNow, from: today, to: today))
        #expect(honestDetail.gateway.completeness.received == 100)
        #expect(honestDetail.gateway.refusals == nil)
        let poisonedDetail = try #require(try await store.store.gateway(fleet: nil, id: "gw-0002", now: testNow, from: today, to: today))
        #expect(poisonedDetail.gateway.refusals?.byReason == ["store_refused": 1])
        #expect(poisonedDetail.gateway.refusals?.lastDetail.contains("poison") == true)
        #expect(store.refusals.load(ordering: .relaxed) >= 1)
        #expect(ingest.health.report(brokerConnected: true).healthy)

        await group.triggerGracefulShutdown()
        try await running.value
        await broker.stop()
    }
}

/// The real SQLite store, refusing (for good) any batch that holds seq 50 of gw-0002.
final class PoisonRefusingStore: ForwardingStore, @unchecked Sendable {
    let refusals = Atomic<Int>(0)

    override func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome {
        let poisoned = records.contains { record in
            if case .envelope(let envelope, _, _, _) = record { return envelope.gateway.rawValue == "gw-0002" && envelope.seq == 50 }
            return false
        }
        if poisoned {
            refusals.add(1, ordering: .relaxed)
            throw StoreFailure(.refused, "poison: the store will never take this record")
        }
        return try await store.apply(records)
    }
}
