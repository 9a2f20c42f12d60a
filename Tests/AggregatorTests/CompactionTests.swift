@_spi(Testing) import Aggregator
import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

@Suite("Dedupe key compaction")
struct CompactionTests {
    func record(_ envelope: Envelope, historical: Bool = false) -> IngestRecord {
        .envelope(envelope, receivedAt: testNow, historical: historical)
    }

    @Test("keys above a gap are stored until it fills or times out; every duplicate is recognised, across a reopen")
    func compaction() async throws {
        let folder = try TestEnvironment.temporaryDirectory("compaction")
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("agg.sqlite").path
        var feed = GatewayFeed("gw-1")
        var envelopes = (0..<100).map { i in feed.telemetry(at: testNow.addingTimeInterval(Double(i))) }
        feed.skip()  // seq 101 is missing
        envelopes += (0..<20).map { i in feed.telemetry(at: testNow.addingTimeInterval(200 + Double(i))) }

        let store = try SQLiteStatsStore(path: path, gapHorizonSeconds: 3600)
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
        let reopened = try SQLiteStatsStore(path: path, gapHorizonSeconds: 3600)
        let third = try await reopened.apply(envelopes.map { record($0, historical: true) })
        #expect(third.accepted == 0)
        #expect(third.duplicates == 120)
        let summary = try await reopened.summary(fleet: "demo", now: testNow)
        #expect(summary.completeness == Completeness(received: 120, expected: 121))
    }
}

extension CompactionTests {
    @Test("a gap that fills folds the waiting keys into the watermark")
    func gapFills() async throws {
        let folder = try TestEnvironment.temporaryDirectory("compaction")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try SQLiteStatsStore(path: folder.appendingPathComponent("agg.sqlite").path)
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
