@_spi(Testing) import Aggregator
import Foundation
import SpectraProtocol
import SpectraTesting
import Testing

/// Per-gateway state is bounded: new outbox epochs per day are capped, and what is past
/// retention (streams not heard from, session rows, refusals) is pruned, while the daily
/// statistics and the adherence they give are kept.
@Suite("Per-gateway bounds and retention")
struct RetentionTests {
    @Test(
        "a gateway starting an epoch per message is capped per day; streams, sessions and refusals past retention are pruned, statistics kept",
        arguments: StoreKind.allCases)
    func boundedAndPruned(_ kind: StoreKind) async throws {
        let place = try await StoreUnderTest(kind)
        let store = try await place.open(newEpochsPerGatewayPerDay: 5)

        // 100 days ago: a session, and 40 messages each on a new epoch.
        let old = testNow.addingTimeInterval(-100 * 86_400)
        var feed = GatewayFeed("gw-1")
        var records: [IngestRecord] = feed.session(SessionTruth(gateway: "gw-1", id: "old", start: old, regimenDay: 1))
            .map { .envelope($0, receivedAt: old.addingTimeInterval(1000), historical: false, payload: nil) }
        for _ in 0..<40 {
            feed.epoch = UUID()
            feed.seq = 0
            records.append(.envelope(feed.telemetry(at: old), receivedAt: old, historical: false, payload: nil))
        }
        let outcome = try await store.apply(records)
        #expect(outcome.refused == ["epoch_limit": 36], "the session's epoch and 4 more, then refused")
        #expect(try await store.streamCount() == 5)

        // Today: one more session on a fresh epoch (a new day: the cap starts over).
        var today = GatewayFeed("gw-1")
        let fresh = today.session(SessionTruth(gateway: "gw-1", id: "new", start: at(Day(testNow), hour: 8), regimenDay: 101))
        #expect(try await store.apply(fresh.map { .envelope($0, receivedAt: testNow, historical: false, payload: nil) }).refused.isEmpty)
        #expect(try await store.apply([.refused(
            GatewayKey(fleet: "demo", gateway: "gw-1"), IngestRecord.Refusal(reason: "outOfRange", detail: "old"), receivedAt: old, payload: nil)]).accepted == 0)
        let before = try await store.summary(fleet: nil, now: testNow)

        let removed = try await store.prune(before: Day(testNow).adding(-90))
        #expect(removed == 2, "the old session's two events")
        #expect(try await store.streamCount() == 1, "only today's stream is left")
        #expect(try await store.sessionRows() == 1)
        let after = try await store.summary(fleet: nil, now: testNow)
        #expect(after.sessions == before.sessions, "daily statistics are kept")
        #expect(after.adherence == before.adherence, "adherence comes from the daily statistics")
        let gateway = try #require(try await store.gateways(fleet: nil, search: nil, now: testNow).first)
        #expect(gateway.refusals == nil, "refusals past retention are pruned")
    }
}
