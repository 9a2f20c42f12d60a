@_spi(Testing) import Aggregator
import Foundation
import GRDB
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

@Suite("Dedupe key compaction")
struct CompactionTests {
    func record(_ envelope: Envelope, historical: Bool = false) -> IngestRecord {
        .envelope(envelope, receivedAt: testNow, historical: historical)
    }

    @Test("keys above a gap are stored until it fills or times out; every duplicate is recognised, across a reopen", arguments: StoreKind.allCases)
    func compaction(_ kind: StoreKind) async throws {
        let place = try await StoreUnderTest(kind)
        var feed = GatewayFeed("gw-1")
        var envelopes = (0..<100).map { i in feed.telemetry(at: testNow.addingTimeInterval(Double(i))) }
        feed.skip()  // seq 101 is missing
        envelopes += (0..<20).map { i in feed.telemetry(at: testNow.addingTimeInterval(200 + Double(i))) }

        let store = try await place.open(gapHorizonSeconds: 3600)
        let first = try await store.apply(envelopes.map { record($0) })
        #expect(first.accepted == 120)
        // 1...100 arrived in order: the watermark records them; 102...121 wait above the gap.
        #expect(try await store.storedDedupeKeys() == 20)
        try await store.compact(now: testNow)
        #expect(try await store.storedDedupeKeys() == 20)
        let again = try await store.apply(envelopes.map { record($0, historical: true) })
        #expect(again.accepted == 0)
        #expect(again.duplicates == 120)

        // After the gap horizon, compaction steps over the gap; duplicates are still recognised
        // after the database is reopened.
        try await store.compact(now: testNow.addingTimeInterval(7200))
        #expect(try await store.storedDedupeKeys() == 0)
        let reopened = try await place.open(gapHorizonSeconds: 3600)
        let third = try await reopened.apply(envelopes.map { record($0, historical: true) })
        #expect(third.accepted == 0)
        #expect(third.duplicates == 120)
        let summary = try await reopened.summary(fleet: "demo", now: testNow)
        #expect(summary.completeness == Completeness(received: 120, expected: 121))
    }
}

extension CompactionTests {
    @Test("a gap that fills folds the waiting keys into the watermark", arguments: StoreKind.allCases)
    func gapFills(_ kind: StoreKind) async throws {
        let place = try await StoreUnderTest(kind)
        let store = try await place.open()
        var feed = GatewayFeed("gw-2")
        let envelopes = (0..<50).map { i in feed.telemetry(at: testNow.addingTimeInterval(Double(i))) }
        // Live first (26...50), then the backlog (1...25), as an agent replays after an outage.
        let live = try await store.apply(envelopes[25...].map { record($0) })
        #expect(live.accepted == 25)
        #expect(try await store.storedDedupeKeys() == 25)
        let backlog = try await store.apply(envelopes[..<25].map { record($0, historical: true) })
        #expect(backlog.accepted == 25)
        #expect(try await store.storedDedupeKeys() == 0)
        let again = try await store.apply(envelopes.map { record($0) })
        #expect(again.duplicates == 50)
    }
}

extension CompactionTests {
    @Test("a batch whose commit fails counts nothing, and counts in full when it is written again")
    func failedCommit() async throws {
        let folder = try TestEnvironment.temporaryDirectory("failed-commit")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try SQLiteStatsStore(path: folder.appendingPathComponent("agg.sqlite").path)
        var feed = GatewayFeed("gw-3")
        let first = (0..<10).map { i in feed.telemetry(at: testNow.addingTimeInterval(Double(i))) }
        #expect(try await store.apply(first.map { record($0) }).accepted == 10)

        // The next batch (in order, above a gap, and sessions with their raw events) needs
        // pages the full disk does not have: its commit fails and rolls back.
        var batch = (0..<200).map { i in feed.telemetry(at: testNow.addingTimeInterval(10 + Double(i))) }
        feed.skip()
        batch += (0..<5).map { i in feed.telemetry(at: testNow.addingTimeInterval(300 + Double(i))) }
        for index in 0..<40 {
            batch += feed.session(SessionTruth(gateway: "gw-3", id: "s-\(index)", start: testNow.addingTimeInterval(400 + Double(index) * 1000), regimenDay: 2))
        }
        try await store.setMaxPageCount(try await store.pageCount())
        await #expect(throws: (any Error).self) { try await store.apply(batch.map { record($0) }) }

        // Room again: the same batch counts in full, once.
        try await store.setMaxPageCount(1 << 30)
        let retried = try await store.apply(batch.map { record($0) })
        #expect(retried.accepted == batch.count)
        #expect(retried.duplicates == 0)
        let summary = try await store.summary(fleet: "demo", now: testNow)
        #expect(summary.completeness == Completeness(received: 10 + batch.count, expected: 11 + batch.count))
        #expect(summary.sessions.started == 40)
        #expect(summary.sessions.completed == 40)
        let again = try await store.apply((first + batch).map { record($0, historical: true) })
        #expect(again.accepted == 0)
        #expect(again.duplicates == 10 + batch.count)
    }
}

extension CompactionTests {
    @Test("the raw event log takes each accepted event once, and keeps what a file from before its migration held")
    func eventLog() async throws {
        let folder = try TestEnvironment.temporaryDirectory("event-log")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("agg.sqlite").path

        // A file written before the log lost its (fleet, gw, epoch, seq) key: two events of
        // an old day and one of today.
        try SQLiteStatsStore.createSchema(at: path, upTo: "v1")
        let epoch = UUID().uuidString
        let earlier: [(seq: Int, day: Int)] = [(1, today.number - 40), (2, today.number - 40), (3, today.number)]
        try await DatabaseQueue(path: path).write { db in
            for event in earlier {
                try db.execute(
                    sql: """
                        INSERT INTO event (fleet, gw, epoch, seq, day, ts, type, body, receivedAt)
                        VALUES ('demo', 'gw-old', ?, ?, ?, 0, 'session.started', ?, 0)
                        """,
                    arguments: [epoch, event.seq, event.day, Data("body-\(event.seq)".utf8)])
            }
        }

        let store = try SQLiteStatsStore(path: path)
        let migrated = try await store.storedEvents()
        #expect(migrated.map(\.gateway) == ["gw-old", "gw-old", "gw-old"])
        #expect(migrated.map(\.seq) == [1, 2, 3])
        #expect(migrated.map { String(decoding: $0.body, as: UTF8.self) } == ["body-1", "body-2", "body-3"])

        // New events: each once, however often the broker delivers it; telemetry is not logged.
        var feed = GatewayFeed("gw-new")
        var envelopes: [Envelope] = []
        for index in 0..<3 {
            envelopes.append(feed.telemetry(at: testNow.addingTimeInterval(Double(index) * 2000)))
            envelopes += feed.session(SessionTruth(gateway: "gw-new", id: "s-\(index)", start: testNow.addingTimeInterval(Double(index) * 2000 + 10), trips: 1))
        }
        let events = envelopes.filter { $0.kind == .event }
        #expect(try await store.apply(envelopes.map { record($0) }).acceptedEvents == events.count)
        #expect(try await store.apply(envelopes.map { record($0, historical: true) }).duplicates == envelopes.count)
        #expect(try await store.apply(events.reversed().map { record($0) }).duplicates == events.count)
        let logged = try await store.storedEvents().filter { $0.gateway == "gw-new" }
        #expect(logged.map(\.seq) == events.map { Int($0.seq) })

        // Retention still goes by day.
        #expect(try await store.prune(before: today.adding(-30)) == 2)
        #expect(try await store.storedEvents().count == 1 + events.count)
    }
}
