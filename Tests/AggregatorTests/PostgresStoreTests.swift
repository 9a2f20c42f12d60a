@_spi(Testing) import Aggregator
import Foundation
import SpectraConfig
import SpectraProtocol
import SpectraTesting
import Testing
import Waveform

/// The PostgreSQL store: the same answers as SQLite's for the same messages, and exactly-once
/// counting when several instances write one database at the same moment.
@Suite("PostgreSQL store")
struct PostgresStoreTests {
    static let fleet = try! Identifier("demo")

    static func database(_ server: PostgresServer) throws -> PostgresDatabase {
        try PostgresDatabase(url: server.url + "?sslmode=disable", password: nil)
    }

    /// A fleet's worth of what the aggregator ingests: sessions completed and aborted, level
    /// changes, trips, telemetry, an outbox eviction, presence and state, a gateway with an
    /// unsynced clock over two boots, a gateway restarting its outbox (a new epoch), and gaps.
    static func traffic(gateways: Int = 6, sessionsEach: Int = 4) -> [IngestRecord] {
        var records: [IngestRecord] = []
        for g in 0..<gateways {
            let name = "gw-\(g)"
            var feed = GatewayFeed(name)
            if g == 1 {
                feed.synced = false
                feed.clockErrorSeconds = -7_200
            }
            let online = testNow.addingTimeInterval(-86_400 * 3)
            records.append(
                .status(fleet: fleet, gateway: feed.gateway, GatewayStatus(online: true, boot: feed.boot, ts: online, agentVersion: "0.2.0"),
                        receivedAt: online))
            records.append(
                .state(fleet: fleet, gateway: feed.gateway,
                       ReportedState(
                        boot: feed.boot, ts: online, agentVersion: "0.2.0", firmware: g % 2 == 0 ? "1.4.0" : "1.5.0",
                        configVersions: ["level": 3], levelLimits: .init(maxLevel: 3, unlockedLevel: 2, completedSessions: 0),
                        groups: ["beta"]),
                       receivedAt: online))
            for s in 0..<sessionsEach {
                let start = at(today.adding(-(s % 3)), hour: 8 + Double(g))
                if g == 1, s == 2 { feed.boot = UUID() }
                if g == 2, s == 3 {
                    feed.epoch = UUID()
                    feed.seq = 0
                }
                let truth = SessionTruth(
                    gateway: name, id: "s-\(g)-\(s)", start: start, levelSeconds: [300, Double(60 * s), s == 3 ? 120 : 0],
                    pauses: s % 2, trips: s == 1 ? 1 : 0, abortReason: s == 2 ? "user_stopped" : nil, regimenDay: 10 + s)
                for envelope in feed.session(truth) {
                    records.append(.envelope(envelope, receivedAt: envelope.timestamp.addingTimeInterval(-feed.clockErrorSeconds + 2), historical: false))
                }
                let telemetry = feed.telemetry(at: start.addingTimeInterval(1_000), depth: s)
                records.append(.envelope(telemetry, receivedAt: start.addingTimeInterval(1_001), historical: false))
                if s == 1 { feed.skip() }
            }
            if g == 3 {
                let eviction = feed.next(.event(.outboxEvicted(OutboxEvicted(class: "telemetry", count: 5, bytes: 1_500))), at: testNow)
                records.append(.envelope(eviction, receivedAt: testNow, historical: false))
            }
        }
        records.append(.refused(GatewayKey(fleet: "demo", gateway: "gw-0"), .init(reason: "bad_json", detail: "not JSON"), receivedAt: testNow))
        return records
    }

    /// Every answer the API gives, as JSON, for comparing two stores.
    static func answers(_ store: some StatsStore) async throws -> [String: String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        func text(_ value: some Encodable) throws -> String { String(decoding: try encoder.encode(value), as: UTF8.self) }
        var result: [String: String] = [:]
        result["summary"] = try text(try await store.summary(fleet: "demo", now: testNow))
        result["summary-all"] = try text(try await store.summary(fleet: nil, now: testNow))
        result["daily"] = try text(try await store.daily(fleet: "demo", from: today.adding(-5), to: today))
        result["gateways"] = try text(try await store.gateways(fleet: "demo", search: nil, now: testNow))
        result["search"] = try text(try await store.gateways(fleet: nil, search: "W-1", now: testNow))
        for g in 0..<6 {
            result["gateway-\(g)"] = try text(try await store.gateway(fleet: "demo", id: "gw-\(g)", now: testNow, from: today.adding(-5), to: today))
            result["sessions-\(g)"] = try text(try await store.sessions(fleet: nil, gateway: "gw-\(g)", from: today.adding(-5), to: today, limit: 3))
        }
        result["fleets"] = try text(try await store.fleets())
        return result
    }

    @Test("PostgreSQL gives every answer SQLite gives for the same messages, redelivered and out of order")
    func sameAnswersAsSQLite() async throws {
        let server = try await PostgresServer()
        let folder = try TestEnvironment.temporaryDirectory("pg-same")
        defer { try? FileManager.default.removeItem(at: folder) }
        let sqlite = try SQLiteStatsStore(path: folder.appendingPathComponent("stats.sqlite").path)
        let postgres = try await PostgresStatsStore(try Self.database(server))
        defer { postgres.shutdown() }

        var generator = SeededRandom(seed: 7)
        let records = Self.traffic()
        // Each record once or twice, in shuffled batches of up to 25.
        var sent = records.flatMap { record in Bool.random(using: &generator) ? [record, record] : [record] }
        sent.shuffle(using: &generator)
        var outcomes: [(ApplyOutcome, ApplyOutcome)] = []
        var index = 0
        while index < sent.count {
            let batch = Array(sent[index..<min(sent.count, index + Int.random(in: 1...25, using: &generator))])
            index += batch.count
            outcomes.append((try await sqlite.apply(batch), try await postgres.apply(batch)))
        }
        for (lite, pg) in outcomes {
            #expect(lite.accepted == pg.accepted && lite.duplicates == pg.duplicates && lite.presence == pg.presence)
            #expect(lite.refused == pg.refused && lite.changedGateways == pg.changedGateways)
        }
        try await sqlite.compact(now: testNow)
        try await postgres.compact(now: testNow)

        let expected = try await Self.answers(sqlite)
        let actual = try await Self.answers(postgres)
        #expect(expected["summary"]?.contains("\"started\":24") == true, "the traffic's 24 sessions are counted")
        for key in expected.keys.sorted() {
            #expect(actual[key] == expected[key], "\(key) differs")
        }

        // Retention prunes the same.
        #expect(try await postgres.prune(before: today.adding(-1)) == (try await sqlite.prune(before: today.adding(-1))))
        #expect(try await Self.answers(postgres)["daily"] == (try await Self.answers(sqlite))["daily"])
    }

    /// Random changes to a few sessions and gateways, several to one row in a batch in any
    /// order: starts, level changes, trips, ends with and without a phase, regimen day or
    /// reason, live and retained statuses with and without a version, states.
    static func rowChanges(_ generator: inout SeededRandom) -> [IngestRecord] {
        var records: [IngestRecord] = []
        // gw-3 sends only statuses and states: nothing else moves its `lastSeen`.
        for g in 0..<4 {
            var feed = GatewayFeed("gw-\(g)")
            for _ in 0..<40 {
                let time = testNow.addingTimeInterval(-Double(Int.random(in: 0..<172_800, using: &generator)))
                let id = try! Identifier("s-\(g)-\(Int.random(in: 0..<3, using: &generator))")
                let phase = [nil, RegimenPhase.loading, .maintenance].randomElement(using: &generator)!
                let regimenDay = [nil, 3, 70].randomElement(using: &generator)!
                let summary = SessionSummary(
                    sessionId: id, durationS: 900, stimulatingS: Double.random(in: 0...900, using: &generator),
                    levelSeconds: ["1": 300, "2": Double.random(in: 0...600, using: &generator), "3": 0], pauses: Int.random(in: 0...3, using: &generator),
                    chargeMicroCoulombs: [:], reason: [nil, "", "user_stop"].randomElement(using: &generator)!.map(AbortReason.init(rawValue:)),
                    regimenPhase: phase, regimenDay: regimenDay)
                let message: Message? = switch g == 3 ? 5 : Int.random(in: 0..<8, using: &generator) {
                case 0: .event(.sessionStarted(SessionStarted(
                    sessionId: id, level: Int.random(in: 1...3, using: &generator), profileVersion: "default-1", channels: ["c"],
                    regimenPhase: phase, regimenDay: regimenDay)))
                case 1: .event(.sessionLevelChanged(LevelChanged(sessionId: id, from: 1, to: 2)))
                case 2: .event(.safetyTrip(SafetyTrip(sessionId: id, rule: "peak", channel: "c", value: 1100, limit: 1000)))
                case 3: .event(.sessionCompleted(summary))
                case 4: .event(.sessionAborted(summary))
                default: nil
                }
                if let message {
                    records.append(.envelope(feed.next(message, at: time), receivedAt: time, historical: false))
                } else if Bool.random(using: &generator) {
                    let status = GatewayStatus(
                        online: Bool.random(using: &generator), boot: feed.boot, ts: time,
                        agentVersion: [nil, "0.2.0", "0.3.0"].randomElement(using: &generator)!, reason: [nil, "lost"].randomElement(using: &generator)!)
                    records.append(.status(fleet: fleet, gateway: feed.gateway, status, receivedAt: time, retained: Bool.random(using: &generator)))
                } else {
                    records.append(
                        .state(fleet: fleet, gateway: feed.gateway,
                               ReportedState(
                                boot: feed.boot, ts: time, agentVersion: ["0.2.0", "0.4.0"].randomElement(using: &generator)!,
                                firmware: ["1.4.0", "1.5.0"].randomElement(using: &generator)!, configVersions: ["level": Int.random(in: 1...9, using: &generator)],
                                levelLimits: .init(maxLevel: 3, unlockedLevel: Int.random(in: 1...3, using: &generator), completedSessions: 0),
                                groups: [["beta"], [], ["a", "b"]].randomElement(using: &generator)!),
                               receivedAt: time))
                }
            }
        }
        return records.shuffled(using: &generator)
    }

    static func rounded(_ detail: GatewayDetail?) -> GatewayDetail? {
        guard var detail else { return nil }
        func round(_ totals: inout Aggregator.SessionTotals) { totals.levelMinutes = totals.levelMinutes.mapValues { ($0 * 1e6).rounded() / 1e6 } }
        round(&detail.gateway.sessions)
        for index in detail.daily.indices { round(&detail.daily[index].sessions) }
        return detail
    }

    @Test("several changes to one session or gateway in one batch, written as one row each, leave it as SQLite does change by change")
    func foldedRowsMatchSQLite() async throws {
        let server = try await PostgresServer()
        let folder = try TestEnvironment.temporaryDirectory("pg-rows")
        defer { try? FileManager.default.removeItem(at: folder) }
        for seed in UInt64(1)...8 {
            var generator = SeededRandom(seed: seed)
            let records = Self.rowChanges(&generator)
            let sqlite = try SQLiteStatsStore(path: folder.appendingPathComponent("stats-\(seed).sqlite").path)
            try await PostgresStatsStore.dropSchema(try Self.database(server))
            let fresh = try await PostgresStatsStore(try Self.database(server))
            defer { fresh.shutdown() }
            // All at once, then the rest in batches of 1 to 40 (a copy of each is a duplicate).
            let first = Int.random(in: 0...records.count, using: &generator)
            var batches = [Array(records[..<first])]
            var index = first
            while index < records.count {
                let size = Int.random(in: 1...40, using: &generator)
                batches.append(Array(records[index..<min(records.count, index + size)]))
                index += size
            }
            for record in records { _ = try await sqlite.apply([record]) }
            for batch in batches { _ = try await fresh.apply(batch) }

            for g in 0..<4 {
                let lite = try await sqlite.gateway(fleet: "demo", id: "gw-\(g)", now: testNow, from: today.adding(-3), to: today)
                let pg = try await fresh.gateway(fleet: "demo", id: "gw-\(g)", now: testNow, from: today.adding(-3), to: today)
                // Minutes per level are sums of doubles, added in another order per batch.
                #expect(Self.rounded(pg) == Self.rounded(lite), "seed \(seed) gw-\(g)")
                let liteSessions = try await sqlite.sessions(fleet: "demo", gateway: "gw-\(g)", from: today.adding(-3), to: today, limit: 50)
                let pgSessions = try await fresh.sessions(fleet: "demo", gateway: "gw-\(g)", from: today.adding(-3), to: today, limit: 50)
                #expect(pgSessions == liteSessions, "seed \(seed) sessions of gw-\(g)")
                #expect((liteSessions?.count ?? 0) > 0 || g == 3)
            }
        }
    }

    @Test("two instances on one database count every message once, whichever of them gets each copy")
    func twoInstancesExactlyOnce() async throws {
        let server = try await PostgresServer()
        let database = try Self.database(server)
        // Started together: the migrations run once, under their lock.
        async let first = PostgresStatsStore(database)
        async let second = PostgresStatsStore(database)
        let stores = try await [first, second]
        defer { stores.forEach { $0.shutdown() } }

        var generator = SeededRandom(seed: 11)
        let records = Self.traffic(gateways: 12, sessionsEach: 6).filter {
            if case .envelope = $0 { return true } else { return false }
        }
        // Every message reaches both instances (a redelivery after a lost acknowledgement, or a
        // copy to each), in a different order, in batches written at the same moment.
        var streams: [[IngestRecord]] = [records.shuffled(using: &generator), records.shuffled(using: &generator)]
        streams[1] += records.prefix(40)
        let batches = streams.map { stream in stride(from: 0, to: stream.count, by: 17).map { Array(stream[$0..<min(stream.count, $0 + 17)]) } }
        let outcomes = try await withThrowingTaskGroup(of: [ApplyOutcome].self) { group in
            for (store, batches) in zip(stores, batches) {
                group.addTask {
                    var outcomes: [ApplyOutcome] = []
                    for batch in batches { outcomes.append(try await store.apply(batch)) }
                    return outcomes
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let accepted = outcomes.map(\.accepted).reduce(0, +)
        let duplicates = outcomes.map(\.duplicates).reduce(0, +)
        #expect(accepted == records.count, "each message is counted by exactly one instance")
        #expect(duplicates == records.count + 40, "and every other copy is a duplicate")

        let summary = try await stores[1].summary(fleet: "demo", now: testNow)
        #expect(summary.sessions.started == 72 && summary.sessions.completed == 60 && summary.sessions.aborted == 12)
        #expect(summary.abortReasons == ["user_stopped": 12])
        #expect(try await stores[0].summary(fleet: "demo", now: testNow) == summary, "both instances give the same figures")
    }

    @Test("accounts, sessions and tokens kept in PostgreSQL: none at first, then signed in and authenticated; wrong, expired and revoked ones refused")
    func accountsOnPostgres() async throws {
        let server = try await PostgresServer()
        let store = try await PostgresStatsStore(try Self.database(server))
        defer { store.shutdown() }
        let access = AccessStore(store)
        #expect(try await access.hasCredentials() == false, "a first run: the login page says how to add a user")

        try await access.addUser("alice", role: .operator, password: "correct horse battery")
        #expect(try await access.hasCredentials())
        #expect(try await access.users().map(\.name) == ["alice"])
        #expect(try await access.signIn("alice", password: "wrong horse battery") == nil)
        let (session, principal) = try #require(try await access.signIn("alice", password: "correct horse battery"))
        #expect(principal.role == .operator)
        #expect(try await access.session(session)?.name == "alice")
        try await access.signOut(session)
        #expect(try await access.session(session) == nil)

        let (token, secret) = try await access.createToken("prometheus", role: .metrics, expiresAt: testNow.addingTimeInterval(3_600))
        let authenticated = try await access.authenticate(bearer: secret, now: testNow).get()
        #expect(authenticated.name == "prometheus" && authenticated.role == .metrics && authenticated.credential == .token)
        #expect(try await access.authenticate(bearer: secret, now: testNow.addingTimeInterval(7_200)) == .failure(.expired))
        _ = try await access.revokeToken(token.name)
        #expect(try await access.authenticate(bearer: secret, now: testNow) == .failure(.unknown))
    }

    @Test("hostile text (NUL bytes in versions and abort reasons) and extreme seqs are stored, and change no other gateway's figures")
    func hostileValues() async throws {
        let server = try await PostgresServer()
        let store = try await PostgresStatsStore(try Self.database(server))
        defer { store.shutdown() }
        var good = GatewayFeed("gw-good")
        var bad = GatewayFeed("gw-bad")
        let time = testNow
        var records: [IngestRecord] = good.session(SessionTruth(gateway: "gw-good", id: "s-good", start: time)).map {
            .envelope($0, receivedAt: time, historical: false)
        }
        records += bad.session(SessionTruth(gateway: "gw-bad", id: "s-bad", start: time, abortReason: "stop\u{0}ped")).map {
            .envelope($0, receivedAt: time, historical: false)
        }
        records.append(
            .state(fleet: Self.fleet, gateway: bad.gateway,
                   ReportedState(
                    boot: bad.boot, ts: time, agentVersion: "0.\u{0}2", firmware: "\u{0}\u{0}", configVersions: ["a\u{0}b": 1],
                    levelLimits: .init(maxLevel: 3, unlockedLevel: 3, completedSessions: 0), groups: ["\u{0}"]),
                   receivedAt: time))
        records.append(.refused(GatewayKey(fleet: "demo", gateway: "gw-bad"), .init(reason: "bad\u{0}", detail: "x\u{0}y"), receivedAt: time))
        // The highest seq the contract allows, then one below it (a gap of the whole range).
        bad.seq = UInt64(WireRanges.seq.upperBound) - 1
        records.append(.envelope(bad.telemetry(at: time), receivedAt: time, historical: false))
        bad.seq -= 2
        records.append(.envelope(bad.telemetry(at: time), receivedAt: time, historical: false))
        let outcome = try await store.apply(records + records)
        #expect(outcome.accepted == records.count - 2 && outcome.duplicates == records.count - 2)
        try await store.compact(now: time)

        let good1 = try await store.gateway(fleet: "demo", id: "gw-good", now: time, from: today, to: today)
        #expect(good1?.gateway.sessions.completed == 1 && good1?.gateway.completeness.received == 2)
        let bad1 = try #require(try await store.gateway(fleet: "demo", id: "gw-bad", now: time, from: today, to: today))
        #expect(bad1.gateway.firmware == "\u{FFFD}\u{FFFD}" && bad1.gateway.sessions.aborted == 1)
        #expect(bad1.gateway.refusals?.byReason["bad\u{FFFD}"] == 2, "each refused copy is counted")
        #expect(try await store.summary(fleet: "demo", now: time).abortReasons == ["stop\u{FFFD}ped": 1])
    }

    @Test("a database whose tables were dropped by hand fails batches as unavailable, so ingest keeps them rather than set them aside")
    func schemaGone() async throws {
        let server = try await PostgresServer()
        let database = try Self.database(server)
        let store = try await PostgresStatsStore(database)
        defer { store.shutdown() }
        try await PostgresStatsStore.dropSchema(database)
        var feed = GatewayFeed("gw-1")
        do {
            _ = try await store.apply([.envelope(feed.telemetry(at: testNow), receivedAt: testNow, historical: false)])
            Issue.record("a batch was accepted without tables")
        } catch let failure as StoreFailure {
            #expect(failure.kind == .unavailable && failure.reason.contains("42P01"), "\(failure.reason)")
        }
    }

    @Test("a database that is down is reported as unavailable, its return is used at once, and a URL's mistakes are one clear error")
    func unavailableAndBadURLs() async throws {
        let server = try await PostgresServer()
        let store = try await PostgresStatsStore(try Self.database(server), transactionTimeout: .seconds(3))
        defer { store.shutdown() }
        var feed = GatewayFeed("gw-down")
        await server.stop()
        do {
            _ = try await store.apply([.envelope(feed.telemetry(at: testNow), receivedAt: testNow, historical: false)])
            Issue.record("a batch was accepted by a stopped database")
        } catch let failure as StoreFailure {
            #expect(failure.kind == .unavailable, "\(failure.reason)")
            #expect(failure.reason.contains("postgres://postgres@127.0.0.1:\(server.port)/postgres"), "says which database: \(failure.reason)")
        }

        // The server comes back: the same batch, written again, counts once, on the same store.
        try await server.start()
        let batch: [IngestRecord] = (0..<3).map { _ in .envelope(feed.telemetry(at: testNow), receivedAt: testNow, historical: false) }
        let written = await eventually(timeout: 30) { (try? await store.apply(batch))?.accepted == 3 }
        #expect(written, "the store reconnects to a restarted server")
        #expect(try await store.apply(batch).duplicates == 3)

        let port = try TestEnvironment.freePort()
        await #expect(throws: StoreFailure.self) { 
            try await PostgresStatsStore(
                PostgresDatabase(host: "127.0.0.1", port: port, user: "x", database: "y", tls: .disable), transactionTimeout: .seconds(3))
        }

        for (url, problem) in [
            ("postgres://spectra:s3cret@db.example/stats", "carries a password"),
            ("postgres://db.example/stats", "names no user"),
            ("postgres://spectra@db.example/", "names no database"),
            ("postgres://spectra@db.example/stats?sslmode=maybe", "sslmode=maybe"),
            ("postgres://spectra@db.example/stats?timeout=3", "timeout"),
        ] {
            var text = ""
            do {
                _ = try PostgresDatabase(url: url, password: nil)
                Issue.record("\(url) was accepted")
            } catch {
                text = error.description
            }
            #expect(text.contains(problem), "\(url): \(text)")
            #expect(!text.contains("s3cret"))
        }
        let parsed = try PostgresDatabase(url: "postgresql://spectra@db.example:6432/stats?sslmode=verify-full&sslrootcert=/etc/ca.pem", password: "pw")
        #expect(parsed == PostgresDatabase(
            host: "db.example", port: 6432, user: "spectra", database: "stats", password: "pw", tls: .verifyFull,
            rootCertificatePath: "/etc/ca.pem"))
        #expect(parsed.description == "postgres://spectra@db.example:6432/stats")
    }
}
