import Foundation
import Logging
import NIOSSL
import PostgresNIO
import SpectraProtocol

/// The statistics store on PostgreSQL, shared by any number of aggregator instances.
///
/// Exactly once across instances: a shared subscription spreads a gateway's messages over the
/// instances, so two of them can hold messages of one stream at the same moment. Each batch's
/// transaction first takes a transaction-scoped advisory lock on every gateway it touches, in
/// one sorted order (two instances never wait on each other in a cycle), then reads those
/// gateways' stream watermarks, dedupe keys, new-epoch counts and clock offsets from the
/// database, applies the batch exactly as ``SQLiteStatsStore`` does, and writes it all back
/// before committing. Nothing a later batch dedupes against lives in one process's memory, so
/// an instance that dies takes nothing with it. Serialisation failures and deadlocks (store
/// maintenance meeting a batch on row locks) roll the transaction back, and it runs again.
/// Why advisory locks: docs/decisions/postgres-exactly-once.md.
public final class PostgresStatsStore: StatsStore {
    let client: PostgresClient
    let logger: Logger
    private let running: Task<Void, Never>
    let gapHorizonSeconds: Double
    let silentAfterSeconds: Double
    let newEpochsPerGatewayPerDay: Int
    /// Where the database is, for messages (never its password).
    public let location: String
    /// How long a transaction may take, waiting for a connection included.
    let transactionTimeout: Duration
    /// Attempts at a batch that keeps meeting serialisation failures or deadlocks.
    static let attempts = 8

    /// Connects to the database and brings its schema up to date (safe when several instances
    /// start at once: the migrations run under an advisory lock).
    /// - Throws: ``StoreFailure`` saying why the database cannot be used.
    public init(
        _ database: PostgresDatabase, gapHorizonSeconds: Double = 7 * 86_400, silentAfterSeconds: Double = 600,
        newEpochsPerGatewayPerDay: Int = 16, transactionTimeout: Duration = .seconds(20),
        logger: Logger = Logger(label: "spectra.aggregator.postgres")
    ) async throws {
        self.transactionTimeout = transactionTimeout
        // The pool logs every failed connection attempt; the store reports the failure once, in
        // its own words, where ingest and /healthz show it.
        var background = logger
        background.logLevel = .error
        client = PostgresClient(configuration: database.clientConfiguration, backgroundLogger: background)
        let client = client
        running = Task { await client.run() }
        self.logger = logger
        self.gapHorizonSeconds = gapHorizonSeconds
        self.silentAfterSeconds = silentAfterSeconds
        self.newEpochsPerGatewayPerDay = newEpochsPerGatewayPerDay
        location = database.description
        do {
            // One connection first: a refused connection or a wrong password is said at once,
            // in the server's words, rather than after the pool's retries.
            let probe = try await PostgresConnection.connect(configuration: try database.connectionConfiguration(), id: 0, logger: background)
            try? await probe.close()
            try await withTimeout { [self] in try await migrate() }
        } catch {
            running.cancel()
            if let failure = Self.unwrap(error) as? StoreFailure { throw failure }
            throw StoreFailure(.unavailable, "PostgreSQL at \(location): \(Self.describe(error))")
        }
    }

    deinit { running.cancel() }

    /// Closes the connections.
    public func shutdown() {
        running.cancel()
    }

    // MARK: Schema

    /// The advisory lock key the migrations run under ("spectra-schema").
    static let schemaLock: Int64 = 0x5350_4543_5452_4101

    /// Each step of the schema, in order; a database records how many it has run.
    static let migrations: [String] = [
        """
        CREATE TABLE received (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL,
            PRIMARY KEY (fleet, gw, epoch, seq));
        CREATE TABLE stream (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL,
            minSeq BIGINT NOT NULL, maxSeq BIGINT NOT NULL, count BIGINT NOT NULL, evicted BIGINT NOT NULL,
            contiguous BIGINT NOT NULL, gapSince DOUBLE PRECISION, createdAt DOUBLE PRECISION NOT NULL,
            lastAt DOUBLE PRECISION NOT NULL, PRIMARY KEY (fleet, gw, epoch));
        CREATE INDEX stream_by_last ON stream (lastAt);
        CREATE TABLE gateway (fleet TEXT NOT NULL, gw TEXT NOT NULL, online BOOLEAN NOT NULL DEFAULT false,
            lastSeen DOUBLE PRECISION, statusAt DOUBLE PRECISION, boot TEXT, agentVersion TEXT, firmware TEXT, maxLevel BIGINT,
            unlockedLevel BIGINT, configVersions TEXT, groupList TEXT, regimenStart BIGINT,
            outboxDepth BIGINT, outboxBytes BIGINT, batteryPct DOUBLE PRECISION, rssKiB BIGINT, reconnects BIGINT,
            telemetryAt DOUBLE PRECISION, PRIMARY KEY (fleet, gw));
        CREATE TABLE session (fleet TEXT NOT NULL, gw TEXT NOT NULL, sessionId TEXT NOT NULL,
            day BIGINT NOT NULL, endDay BIGINT, startedAt DOUBLE PRECISION, endedAt DOUBLE PRECISION,
            outcome TEXT NOT NULL DEFAULT 'running', reason TEXT, level BIGINT, durationS DOUBLE PRECISION,
            stimulatingS DOUBLE PRECISION, l1 DOUBLE PRECISION NOT NULL DEFAULT 0, l2 DOUBLE PRECISION NOT NULL DEFAULT 0,
            l3 DOUBLE PRECISION NOT NULL DEFAULT 0, pauses BIGINT NOT NULL DEFAULT 0, levelChanges BIGINT NOT NULL DEFAULT 0,
            trips BIGINT NOT NULL DEFAULT 0, phase TEXT, regimenDay BIGINT, PRIMARY KEY (fleet, gw, sessionId));
        CREATE INDEX session_by_day ON session (fleet, gw, day);
        CREATE INDEX session_by_end ON session ((COALESCE(endDay, day)));
        CREATE TABLE daily (fleet TEXT NOT NULL, gw TEXT NOT NULL, day BIGINT NOT NULL,
            started BIGINT NOT NULL DEFAULT 0, completed BIGINT NOT NULL DEFAULT 0, aborted BIGINT NOT NULL DEFAULT 0,
            l1 DOUBLE PRECISION NOT NULL DEFAULT 0, l2 DOUBLE PRECISION NOT NULL DEFAULT 0, l3 DOUBLE PRECISION NOT NULL DEFAULT 0,
            pauses BIGINT NOT NULL DEFAULT 0, trips BIGINT NOT NULL DEFAULT 0, PRIMARY KEY (fleet, gw, day));
        CREATE INDEX daily_by_day ON daily (day);
        CREATE TABLE abort_reason (fleet TEXT NOT NULL, gw TEXT NOT NULL, day BIGINT NOT NULL, reason TEXT NOT NULL,
            count BIGINT NOT NULL, PRIMARY KEY (fleet, gw, day, reason));
        CREATE TABLE event (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, seq BIGINT NOT NULL,
            day BIGINT NOT NULL, ts DOUBLE PRECISION NOT NULL, type TEXT NOT NULL, body BYTEA NOT NULL,
            receivedAt DOUBLE PRECISION NOT NULL, id BIGSERIAL PRIMARY KEY);
        CREATE INDEX event_by_day ON event (day);
        CREATE TABLE refusal (fleet TEXT NOT NULL, gw TEXT NOT NULL, reason TEXT NOT NULL, count BIGINT NOT NULL,
            lastAt DOUBLE PRECISION NOT NULL, lastDetail TEXT NOT NULL, lastPayload BYTEA, PRIMARY KEY (fleet, gw, reason));
        CREATE TABLE forgotten (fleet TEXT NOT NULL, gw TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, PRIMARY KEY (fleet, gw));
        CREATE TABLE clock_offset (fleet TEXT NOT NULL, gw TEXT NOT NULL, rank BIGINT NOT NULL, boot TEXT NOT NULL,
            offsetSeconds DOUBLE PRECISION NOT NULL, PRIMARY KEY (fleet, gw, rank));
        CREATE TABLE account (name TEXT PRIMARY KEY, role TEXT NOT NULL, passwordHash TEXT NOT NULL,
            createdAt DOUBLE PRECISION NOT NULL, passwordSetAt DOUBLE PRECISION NOT NULL, lastLoginAt DOUBLE PRECISION);
        CREATE TABLE api_token (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, secretHash TEXT NOT NULL,
            createdAt DOUBLE PRECISION NOT NULL, expiresAt DOUBLE PRECISION, lastUsedAt DOUBLE PRECISION);
        CREATE TABLE web_session (idHash TEXT PRIMARY KEY, account TEXT NOT NULL, createdAt DOUBLE PRECISION NOT NULL,
            expiresAt DOUBLE PRECISION NOT NULL);
        CREATE INDEX web_session_by_account ON web_session (account);
        """
    ]

    private func migrate() async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.schemaLock))", logger: logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS spectra_schema (version BIGINT NOT NULL)", logger: logger)
            var version = 0
            for try await value in try await connection.query("SELECT version FROM spectra_schema", logger: logger).decode(Int64.self) {
                version = Int(value)
            }
            guard version <= Self.migrations.count else {
                throw StoreFailure(
                    .refused,
                    "the database's schema is version \(version), newer than this aggregator knows (\(Self.migrations.count)); upgrade the aggregator")
            }
            guard version < Self.migrations.count else { return }
            for step in Self.migrations[version...] {
                for statement in step.split(separator: ";") where !statement.allSatisfy(\.isWhitespace) {
                    try await connection.query(PostgresQuery(unsafeSQL: String(statement)), logger: logger)
                }
            }
            let current = Int64(Self.migrations.count)
            try await connection.query("DELETE FROM spectra_schema", logger: logger)
            try await connection.query("INSERT INTO spectra_schema (version) VALUES (\(current))", logger: logger)
        }
    }

    // MARK: Transactions

    /// Runs `body` in a transaction, again from the start after a serialisation failure or a
    /// deadlock; anything else is a ``StoreFailure``. A transaction that has not committed
    /// within ``transactionTimeout`` (no connection to be had, most often) is `unavailable`: the
    /// caller writes the batch again, and a commit that did land makes it a duplicate, never a
    /// second count.
    func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await countedTransaction(body).value
    }

    /// ``transaction(_:)``, with how many times it ran again before it committed.
    func countedTransaction<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> (value: T, retries: Int) {
        var attempt = 1
        while true {
            do {
                let value = try await withTimeout { [client, logger] in
                    try await client.withTransaction(logger: logger) { connection in try await body(connection) }
                }
                return (value, attempt - 1)
            } catch {
                if let failure = Self.unwrap(error) as? StoreFailure { throw failure }
                if Self.isRetryable(error), attempt < Self.attempts {
                    attempt += 1
                    try await Task.sleep(for: .milliseconds(5 * attempt))
                    continue
                }
                throw StoreFailure(Self.isRefusal(error) ? .refused : .unavailable, "PostgreSQL at \(location): \(Self.describe(error))")
            }
        }
    }

    /// `body`'s result, or ``StoreFailure/Kind/unavailable`` once ``transactionTimeout`` passes.
    func withTimeout<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: T.self) { group in
            group.addTask { try await body() }
            group.addTask { [transactionTimeout, location] in
                try await Task.sleep(for: transactionTimeout)
                throw StoreFailure(
                    .unavailable,
                    "PostgreSQL at \(location): no answer within \(transactionTimeout.components.seconds) s (is the server up and reachable?)")
            }
            defer { group.cancelAll() }
            guard let result = try await group.next() else { throw CancellationError() }
            return result
        }
    }

    /// The error inside a transaction's wrapper.
    static func unwrap(_ error: any Error) -> any Error {
        (error as? PostgresTransactionError).flatMap { $0.closureError ?? $0.commitError ?? $0.beginError } ?? error
    }

    /// The SQLSTATE of a server's error, or nil.
    static func sqlState(_ error: any Error) -> String? {
        (unwrap(error) as? PSQLError)?.serverInfo?[.sqlState]
    }

    /// Serialisation failure, deadlock: the transaction rolled back and may simply run again.
    static func isRetryable(_ error: any Error) -> Bool {
        guard let state = sqlState(error) else { return false }
        return state == "40001" || state == "40P01"
    }

    /// Errors in the batch's data (a value PostgreSQL cannot hold, a constraint, a row past a
    /// limit): writing it again cannot help, and ingest sets the records it refuses aside.
    /// Everything else, the schema's errors (42, a table dropped by hand) included, is "not
    /// now": the batch is written again until an operator has fixed it, and nothing is lost.
    static func isRefusal(_ error: any Error) -> Bool {
        guard let state = sqlState(error) else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23") || state.hasPrefix("54")
    }

    /// One line for an operator.
    static func describe(_ error: any Error) -> String {
        let underlying = unwrap(error)
        if let failure = underlying as? StoreFailure { return failure.reason }
        if let psql = underlying as? PSQLError {
            if let message = psql.serverInfo?[.message] {
                let state = psql.serverInfo?[.sqlState] ?? "?"
                return "PostgreSQL said: \(message) (SQLSTATE \(state))"
            }
            let detail = psql.underlying.map { ": \(String(describing: $0).prefix(300))" } ?? ""
            return "cannot reach the database (\(psql.code))\(detail)"
        }
        return "\(underlying)"
    }

    // MARK: Maintenance

    /// Deletes what is older than `day`: raw events, session rows (their days' statistics stay
    /// in `daily`), streams not heard from since (with their dedupe keys) and refusal records.
    public func prune(before day: Day) async throws -> Int {
        let cutoff = day.start.timeIntervalSince1970
        let number = Int64(day.number)
        return try await transaction { [logger] connection in
            var removed = 0
            for try await count in try await connection.query(
                "WITH gone AS (DELETE FROM event WHERE day < \(number) RETURNING 1) SELECT COUNT(*)::int8 FROM gone", logger: logger
            ).decode(Int64.self) {
                removed = Int(count)
            }
            try await connection.query("DELETE FROM session WHERE COALESCE(endDay, day) < \(number)", logger: logger)
            try await connection.query("DELETE FROM refusal WHERE lastAt < \(cutoff)", logger: logger)
            try await connection.query(
                """
                DELETE FROM received r USING stream s
                WHERE s.lastAt < \(cutoff) AND r.fleet = s.fleet AND r.gw = s.gw AND r.epoch = s.epoch
                """, logger: logger)
            try await connection.query("DELETE FROM stream WHERE lastAt < \(cutoff)", logger: logger)
            return removed
        }
    }

    /// Advances each waiting stream's contiguous watermark over the keys that arrived, under its
    /// gateway's lock, one gateway per transaction.
    public func compact(now: Date) async throws {
        var waiting: [GatewayKey] = []
        let rows = try await client.query("SELECT DISTINCT fleet, gw FROM received ORDER BY fleet, gw", logger: logger)
        for try await (fleet, gateway) in rows.decode((String, String).self) {
            waiting.append(GatewayKey(fleet: fleet, gateway: gateway))
        }
        for gateway in waiting {
            try await transaction { [logger, gapHorizonSeconds] connection in
                try await Self.lock([gateway], connection, logger)
                var state = try await StreamState.load(for: [gateway], streams: nil, connection, logger)
                for (key, stream) in state.streams where !(state.pending[key] ?? []).isEmpty {
                    var moved = stream
                    let pending = state.pending[key] ?? []
                    let advanced = StreamWatermark.advance(
                        contiguous: stream.contiguous, gapSince: stream.gapSince, above: pending.sorted(), now: now, horizon: gapHorizonSeconds)
                    moved.contiguous = advanced.contiguous
                    moved.gapSince = advanced.gapSince
                    state.streams[key] = moved
                    state.pending[key] = pending.filter { $0 > advanced.contiguous }
                    state.changed.insert(key)
                }
                try await state.save(connection, logger)
            }
        }
    }

    // MARK: Gateway locks

    /// A gateway's advisory lock key: 64 bits of FNV-1a over `fleet`, a zero byte and `gw`.
    @_spi(Testing) public static func lockKey(_ gateway: GatewayKey) -> Int64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in Array(gateway.fleet.utf8) + [0] + Array(gateway.gateway.utf8) {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int64(bitPattern: hash)
    }

    /// Takes each gateway's transaction lock, in ascending key order.
    static func lock(_ gateways: some Collection<GatewayKey>, _ connection: PostgresConnection, _ logger: Logger) async throws {
        let keys = Array(Set(gateways.map(lockKey))).sorted()
        guard !keys.isEmpty else { return }
        try await connection.query(
            "SELECT COUNT(pg_advisory_xact_lock(k)) FROM unnest(\(keys)::int8[]) WITH ORDINALITY AS t(k, i)", logger: logger)
    }
}

extension PostgresStatsStore {
    /// How many dedupe keys are stored above the streams' watermarks (for tests).
    @_spi(Testing) public func storedDedupeKeys() async throws -> Int {
        var count = 0
        for try await value in try await client.query("SELECT COUNT(*)::int8 FROM received", logger: logger).decode(Int64.self) {
            count = Int(value)
        }
        return count
    }

    /// How many streams (gateway, outbox epoch) the store keeps (for tests).
    @_spi(Testing) public func streamCount() async throws -> Int {
        try await first("SELECT COUNT(*)::int8 FROM stream", as: Int64.self).map { Int($0) } ?? 0
    }

    /// How many session rows the store keeps (for tests).
    @_spi(Testing) public func sessionRows() async throws -> Int {
        try await first("SELECT COUNT(*)::int8 FROM session", as: Int64.self).map { Int($0) } ?? 0
    }

    /// Removes every table (for tests that share one server).
    @_spi(Testing) public static func dropSchema(_ database: PostgresDatabase) async throws {
        let client = PostgresClient(configuration: database.clientConfiguration, backgroundLogger: Logger(label: "drop"))
        let running = Task { await client.run() }
        defer { running.cancel() }
        try await client.query("DROP SCHEMA public CASCADE")
        try await client.query("CREATE SCHEMA public")
    }
}
