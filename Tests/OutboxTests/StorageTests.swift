import Foundation
import GRDB
@testable @_spi(Testing) import Outbox
import SpectraTesting
import Testing

@Suite("Outbox storage")
struct StorageTests {
    @Test("seq increases in one database and is never reused after a reopen; the epoch stays")
    func seqAndEpoch() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("outbox.sqlite")
        var epoch: UUID
        do {
            let outbox = try Outbox(OutboxConfiguration(path: path))
            epoch = await outbox.epoch
            let seqs = await withTaskGroup(of: UInt64.self) { group in
                for _ in 0..<200 { group.addTask { await outbox.enqueue { numbered($0, $1) } } }
                return await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(seqs).count == 200)
            #expect(seqs.min() == 1 && seqs.max() == 200)
            #expect(await outbox.stats().depth == 200)
        }
        let reopened = try Outbox(OutboxConfiguration(path: path))
        #expect(await reopened.epoch == epoch)
        #expect(await reopened.stats().depth == 200)
        #expect(await reopened.enqueue { numbered($0, $1) } == 201)
    }

    @Test("durability full commits with synchronous FULL, normal with NORMAL, both in WAL")
    func durability() throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        for (durability, expected) in [(OutboxConfiguration.Durability.full, 2), (.normal, 1)] {
            let (queue, _, _, _) = try OutboxStore.open(OutboxConfiguration(path: folder.path("\(durability).sqlite"), durability: durability))
            let (journal, synchronous) = try queue.inDatabase { db in
                (try String.fetchOne(db, sql: "PRAGMA journal_mode"), try Int.fetchOne(db, sql: "PRAGMA synchronous"))
            }
            #expect(journal == "wal")
            #expect(synchronous == expected, "durability \(durability)")
        }
    }

    @Test("a corrupt database is moved aside and a new one (new epoch) started")
    func corrupt() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("outbox.sqlite")
        try Data(repeating: 0x42, count: 64 * 1024).write(to: URL(fileURLWithPath: path))
        let outbox = try Outbox(OutboxConfiguration(path: path))
        let reset = try #require(await outbox.reset)
        #expect(FileManager.default.fileExists(atPath: reset.movedTo))
        #expect(await outbox.enqueue { numbered($0, $1) } == 1)
        #expect(await outbox.stats().depth == 1)
    }

    @Test("acknowledged rows are deleted exactly, whatever their order, gaps and repeats")
    func deleteRuns() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let (queue, epoch, _, _) = try OutboxStore.open(OutboxConfiguration(path: folder.path("o.sqlite")))
        let rows = (1...10).map { seq in
            let message = numbered(UInt64(seq), epoch, size: seq * 10)
            return StoredMessage(
                seq: UInt64(seq), messageClass: message.messageClass, topic: message.topic, payload: message.payload, qos: 1,
                retain: false, createdAt: 0)
        }
        try await queue.write { db in try OutboxStore.insert(rows, db: db) }
        let deleted = try await queue.write { db in try OutboxStore.delete([10, 3, 2, 9, 4, 7, 3, 12], db: db) }
        #expect(deleted.rows == 6)
        #expect(deleted.bytes == [2, 3, 4, 7, 9, 10].reduce(0) { $0 + $1 * 10 })
        let left = try await queue.read { db in try Int64.fetchAll(db, sql: "SELECT seq FROM message ORDER BY seq") }
        #expect(left == [1, 5, 6, 8])
    }

    @Test("an open outbox holds its file: a second one on the same path (another agent on the same data directory) is one clear error, nothing is moved aside, and after a close the file opens again")
    func locked() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        do {
            let first = try Outbox(OutboxConfiguration(path: path))
            await first.enqueue { numbered($0, $1) }
            // Refused after the 5 s busy timeout.
            do {
                _ = try Outbox(OutboxConfiguration(path: path))
                Issue.record("a second outbox opened a file the first one holds")
            } catch {
                #expect(error.code == .unavailable)
                #expect(error.message.contains("locked by another process"), "\(error)")
            }
            let files = try FileManager.default.contentsOfDirectory(atPath: folder.url.path)
            #expect(!files.contains { $0.contains("corrupt") }, "moved aside: \(files)")
            #expect(await first.enqueue { numbered($0, $1) } == 2)
            // Closed, it lets other connections read.
            await first.close()
            let stored = try await DatabaseQueue(path: path).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message") }
            #expect(stored == 2)
        }
        let next = try Outbox(OutboxConfiguration(path: path))
        #expect(await next.stats().depth == 2)
        #expect(await next.enqueue { numbered($0, $1) } == 3)
    }

    @Test("a folder that cannot hold a database is one clear error")
    func unavailable() {
        #expect(throws: OutboxError.self) { try Outbox(OutboxConfiguration(path: "/nonexistent/folder/outbox.sqlite")) }
    }

    @Test("the byte cap: telemetry is rolled up first, then evicted; events are kept; evictions are announced",
          arguments: [true, false])
    func byteCap(withRollup: Bool) async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let notices = NoticeLog()
        let merge: @Sendable ([[UInt8]]) -> [UInt8]? = { payloads in Array("rollup:\(payloads.count)".utf8) }
        let outbox = try Outbox(
            OutboxConfiguration(path: folder.path("o.sqlite"), maxBytes: 60_000, hardCapBytes: 400_000, minFreeBytes: 0),
            rollup: withRollup ? merge : nil,
            evictionNotice: { eviction, seq, epoch in
                notices.add(eviction)
                return numbered(seq, epoch, .event)
            })
        var events: [UInt64] = []
        for index in 0..<600 {
            if index % 10 == 0 { events.append(await outbox.enqueue { numbered($0, $1, .event, size: 300) }) }
            await outbox.enqueue { numbered($0, $1, .telemetry, size: 300) }
        }
        await outbox.flush()
        let stats = await outbox.stats()
        #expect(stats.bytes <= 60_000 + 300 * 2)
        let stored = try await outbox.readDatabase { db in
            try Int64.fetchAll(db, sql: "SELECT seq FROM message WHERE class = 0").map(UInt64.init)
        }
        #expect(Set(events).isSubset(of: Set(stored)), "an event was evicted below the hard cap")
        if withRollup {
            #expect(stats.rolledUp > 0)
        } else {
            #expect(stats.evicted > 0)
            #expect(stats.evicted == notices.total)
        }
    }

    @Test("a disk that refuses writes: enqueue still returns, messages wait in memory, then go to disk")
    func diskFull() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), minFreeBytes: 0))
        await outbox.enqueue { numbered($0, $1) }
        try await outbox.setMaxPageCount(1)
        var seqs: [UInt64] = []
        for _ in 0..<50 { seqs.append(await outbox.enqueue { numbered($0, $1, size: 2000) }) }
        let failing = await outbox.stats()
        #expect(failing.storageErrors > 0)
        #expect(failing.memoryBuffered >= 45)
        #expect(failing.depth == 51)
        try await outbox.setMaxPageCount(1_000_000)
        try await Task.sleep(for: .seconds(2))
        await outbox.flush()
        let healed = await outbox.stats()
        #expect(healed.memoryBuffered == 0)
        #expect(healed.depth == 51)
        await outbox.close()
        let stored = try await DatabaseQueue(path: folder.path("o.sqlite")).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message") }
        #expect(stored == 51)
    }
}

extension StorageTests {
    @Test("a file-size limit the kernel enforces: writes fail with EFBIG, nothing accepted is lost, all of it reaches the disk once lifted")
    func fileSizeLimit() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        // The limit is set by the child on itself (RLIMIT_FSIZE), so it touches no other test.
        let (status, stdout, stderr) = try await ChildProcess.run(
            TestEnvironment.product("spectra-bench"), ["outbox-disk-full", "--path", path, "--limit-bytes", "262144"], timeout: 120)
        #expect(status == 0, "\(stderr)")
        struct Report: Decodable {
            var phase: String
            var stats: [String: Int]
            var seqs: [UInt64]
        }
        let reports = stdout.split(separator: "\n").compactMap { try? JSONDecoder().decode(Report.self, from: Data($0.utf8)) }
        let full = try #require(reports.first { $0.phase == "full" }, "\(stdout)")
        let healed = try #require(reports.first { $0.phase == "healed" }, "\(stdout)")
        // While the disk was full, enqueue kept returning and the messages waited in memory.
        #expect(full.stats["storageErrors", default: 0] > 0)
        #expect(full.stats["memoryBuffered", default: 0] >= 50)
        #expect(full.stats["depth"] == full.seqs.count)
        // Every seq enqueue returned is distinct, and all of them are in the database afterwards.
        #expect(Set(healed.seqs).count == healed.seqs.count)
        #expect(healed.stats["memoryBuffered"] == 0)
        #expect(healed.stats["depth"] == healed.seqs.count)
        let queue = try DatabaseQueue(path: path)
        let (check, stored) = try await queue.read { db in
            (try String.fetchOne(db, sql: "PRAGMA integrity_check"),
             try Int64.fetchAll(db, sql: "SELECT seq FROM message ORDER BY seq").map(UInt64.init))
        }
        #expect(check == "ok")
        #expect(stored == healed.seqs.sorted(), "the database does not hold exactly what enqueue returned")
    }
}

final class NoticeLog: Sendable {
    private let items = Mutex<[Outbox.Eviction]>([])
    func add(_ eviction: Outbox.Eviction) { items.withLock { $0.append(eviction) } }
    var total: Int { items.withLock { $0.reduce(0) { $0 + $1.count } } }
}

import Synchronization

import Metrics
import MetricsTestKit

@Suite("Outbox metrics")
struct MetricsTests {
    @Test("depth, bytes and counters reach swift-metrics")
    func metrics() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let testMetrics = TestMetrics()
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("metrics.sqlite")), metricsFactory: testMetrics)
        for _ in 0..<7 { await outbox.enqueue { numbered($0, $1) } }
        await outbox.recordMetrics()
        let depth = try testMetrics.expectGauge("spectra_outbox_depth", [("db", "metrics.sqlite")])
        #expect(depth.lastValue == 7)
    }
}
