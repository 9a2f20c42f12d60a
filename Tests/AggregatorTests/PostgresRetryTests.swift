@_spi(Testing) import Aggregator
import Foundation
import Logging
import PostgresNIO
import SpectraTesting
import Testing

/// Serialisation failures and deadlocks roll a batch's transaction back; the store runs it
/// again from the start, so it counts once.
@Suite("PostgreSQL store retries")
struct PostgresRetryTests {
    @Test("a deadlock with another writer rolls the batch back; it runs again and counts once, and the retry is counted")
    func deadlockIsRetried() async throws {
        let server = try await PostgresServer()
        let database = try PostgresStoreTests.database(server)
        // Another writer: an operator's session, say, that holds a gateway's row and then asks for
        // that gateway's lock. The store's sessions look for a deadlock after 10 s (set before
        // they connect); this one after 100 s, so the store's transaction is the one rolled back.
        let other = PostgresClient(
            configuration: .init(host: "127.0.0.1", port: server.port, username: "postgres", password: nil, database: "postgres", tls: .disable),
            backgroundLogger: Logger(label: "other"))
        let running = Task { await other.run() }
        defer { running.cancel() }
        try await other.query("ALTER DATABASE postgres SET deadlock_timeout = '10s'")

        let store = try await PostgresStatsStore(database)
        defer { store.shutdown() }
        var feed = GatewayFeed("gw-1")
        _ = try await store.apply([.envelope(feed.telemetry(at: testNow), receivedAt: testNow, historical: false)])
        let batch: [IngestRecord] = (feed.session(SessionTruth(gateway: "gw-1", id: "s-1", start: testNow)) + [feed.telemetry(at: testNow)]).map {
            .envelope($0, receivedAt: testNow, historical: false)
        }

        let key = PostgresStatsStore.lockKey(GatewayKey(fleet: "demo", gateway: "gw-1"))
        let applying = try await other.withTransaction(logger: Logger(label: "other")) { connection in
            try await connection.query("SET LOCAL deadlock_timeout = '100s'", logger: connection.logger)
            try await connection.query("SELECT 1 FROM gateway WHERE fleet = 'demo' AND gw = 'gw-1' FOR UPDATE", logger: connection.logger)
            let applying = Task { try await store.apply(batch) }
            // The store holds the gateway's lock and waits for the row: ask for its lock.
            let blocked = try await eventually(timeout: 8) {
                let rows = try await connection.query("SELECT COUNT(*)::int8 FROM pg_locks WHERE NOT granted", logger: connection.logger)
                var waiting: Int64 = 0
                for try await count in rows.decode(Int64.self) { waiting = count }
                return waiting > 0
            }
            #expect(blocked, "the store's transaction waits for the row this session holds")
            try await connection.query("SELECT pg_advisory_xact_lock(\(key))", logger: connection.logger)
            return applying
        }

        let outcome = try await applying.value
        #expect(outcome.retries >= 1, "the store's transaction was rolled back as the deadlock's victim and run again")
        #expect(outcome.accepted == batch.count && outcome.duplicates == 0)
        let detail = try #require(try await store.gateway(fleet: "demo", id: "gw-1", now: testNow, from: today, to: today))
        #expect(detail.gateway.sessions.started == 1 && detail.gateway.sessions.completed == 1, "the rolled-back attempt left nothing behind")
        #expect(detail.gateway.completeness.received == batch.count + 1)
        #expect(try await store.apply(batch).duplicates == batch.count)
    }
}
