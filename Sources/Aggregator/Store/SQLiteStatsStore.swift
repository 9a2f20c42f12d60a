import CSQLiteSettings
import Foundation
import GRDB
import SpectraProtocol
import Synchronization

/// The statistics store on SQLite (WAL): ingest writes in batches on GRDB's writer, the HTTP
/// API reads concurrently from the pool.
///
/// Exactly-once counting: every envelope's `(gw, epoch, seq)` goes into `received` in the same
/// transaction that counts it, so a redelivery, a replayed backlog or a restart never counts
/// twice. A stream's keys up to its contiguous watermark are implied by the watermark, which
/// is kept in the same transaction; only keys that arrive above a gap are stored, and they
/// are folded into the watermark as the gap fills (or by ``compact(now:)``).
public final class SQLiteStatsStore: StatsStore {
    let pool: DatabasePool
    private let caches = Mutex(Caches())
    /// How long a seq gap may stay open before compaction stops waiting for it (the missing
    /// messages stay counted as missing; one arriving later than this would count twice).
    let gapHorizonSeconds: Double
    /// How long an online gateway may go unheard before the summary counts it as silent.
    let silentAfterSeconds: Double
    /// New outbox epochs one gateway may start per UTC day (by receive time); envelopes of
    /// further new epochs are refused (`epoch_limit`).
    let newEpochsPerGatewayPerDay: Int
    /// Unsynced clock offsets kept per gateway (its latest boots).
    static let bootsPerGateway = 4

    struct StreamKey: Hashable {
        var fleet: String
        var gateway: String
        var epoch: UUID
    }

    struct Stream {
        /// The epoch as stored (its wire form), made once per stream rather than per envelope.
        var epochText: String
        var minSeq: UInt64
        var maxSeq: UInt64
        var count: Int
        var evicted: Int
        var contiguous: UInt64
        var gapSince: Double?
        /// Keys stored in `received` above `contiguous`.
        var pendingAbove = 0
        /// When the stream's first and latest envelopes arrived (receive time, seconds).
        var createdAt = 0.0
        var lastAt = 0.0
    }

    /// A gateway's new epochs on one UTC day (receive time).
    struct EpochCount {
        var day: Int
        var count: Int
    }

    struct Caches {
        var streams: [StreamKey: Stream] = [:]
        /// Observed wall-clock offset (receive time minus `ts`) of unsynced gateways, per boot:
        /// each gateway's latest ``bootsPerGateway`` boots, newest first.
        var clockOffsets: [GatewayKey: [(boot: UUID, offset: Double)]] = [:]
        /// New epochs each gateway started today (for ``newEpochsPerGatewayPerDay``).
        var newEpochs: [GatewayKey: EpochCount] = [:]
        /// Each gateway's committed `regimenStart` (day number): an event implying the same
        /// or a later start changes nothing and needs no write.
        var regimenStarts: [GatewayKey: Int] = [:]
    }

    /// Opens or creates the store at `path` (its folder is created).
    /// - Parameter silentAfterSeconds: how long an online gateway may go unheard before
    ///   ``FleetSummary/silent`` counts it.
    /// - Throws: GRDB's `DatabaseError` when the file cannot be opened or migrated.
    /// - Parameter newEpochsPerGatewayPerDay: new outbox epochs one gateway may start per UTC day.
    public init(
        path: String, gapHorizonSeconds: Double = 7 * 86_400, silentAfterSeconds: Double = 600, newEpochsPerGatewayPerDay: Int = 16
    ) throws {
        _ = spectra_sqlite_configure()
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        pool = try DatabasePool(path: path, configuration: config)
        self.gapHorizonSeconds = gapHorizonSeconds
        self.silentAfterSeconds = silentAfterSeconds
        self.newEpochsPerGatewayPerDay = newEpochsPerGatewayPerDay
        try Self.migrator.migrate(pool)
        let loaded = try pool.read { db in
            var pending: [[String]: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT fleet, gw, epoch, COUNT(*) AS n FROM received GROUP BY fleet, gw, epoch") {
                pending[[row["fleet"], row["gw"], row["epoch"]]] = row["n"]
            }
            var streams: [StreamKey: Stream] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT * FROM stream") {
                let fleet: String = row["fleet"], gateway: String = row["gw"], epochText: String = row["epoch"]
                // Every epoch here was written from a UUID's wire form.
                guard let epoch = UUID(uuidString: epochText) else {
                    throw DatabaseError(message: "table stream: epoch \(epochText) of \(fleet)/\(gateway) is not a UUID; the file is damaged")
                }
                // Rows written before the contract's ranges may hold anything: read them clamped.
                streams[StreamKey(fleet: fleet, gateway: gateway, epoch: epoch)] = Stream(
                    epochText: epochText, minSeq: row.counter("minSeq"), maxSeq: row.counter("maxSeq"), count: row.count("count"),
                    evicted: row.count("evicted"), contiguous: row.counter("contiguous"), gapSince: row["gapSince"],
                    pendingAbove: pending[[fleet, gateway, epochText]] ?? 0,
                    createdAt: row["createdAt"] ?? 0, lastAt: row["lastAt"] ?? 0)
            }
            var starts: [GatewayKey: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT fleet, gw, regimenStart FROM gateway WHERE regimenStart IS NOT NULL") {
                if let start = row.int("regimenStart") { starts[GatewayKey(fleet: row["fleet"], gateway: row["gw"])] = start }
            }
            return (streams, starts)
        }
        let today = Day(Date()).number
        var newEpochs: [GatewayKey: EpochCount] = [:]
        for (key, stream) in loaded.0 where Day(Date(timeIntervalSince1970: stream.createdAt)).number == today {
            newEpochs[GatewayKey(fleet: key.fleet, gateway: key.gateway), default: EpochCount(day: today, count: 0)].count += 1
        }
        caches.withLock { $0.streams = loaded.0; $0.regimenStarts = loaded.1; $0.newEpochs = newEpochs }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE received (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
                    PRIMARY KEY (fleet, gw, epoch, seq)) WITHOUT ROWID;
                CREATE TABLE stream (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL,
                    minSeq INTEGER NOT NULL, maxSeq INTEGER NOT NULL, count INTEGER NOT NULL, evicted INTEGER NOT NULL,
                    contiguous INTEGER NOT NULL, gapSince REAL, PRIMARY KEY (fleet, gw, epoch));
                CREATE TABLE gateway (fleet TEXT NOT NULL, gw TEXT NOT NULL, online INTEGER NOT NULL DEFAULT 0,
                    lastSeen REAL, statusAt REAL, boot TEXT, agentVersion TEXT, firmware TEXT, maxLevel INTEGER,
                    unlockedLevel INTEGER, configVersions TEXT, groups TEXT, regimenStart INTEGER,
                    outboxDepth INTEGER, outboxBytes INTEGER, batteryPct REAL, rssKiB INTEGER, reconnects INTEGER,
                    telemetryAt REAL, PRIMARY KEY (fleet, gw));
                CREATE TABLE session (fleet TEXT NOT NULL, gw TEXT NOT NULL, sessionId TEXT NOT NULL,
                    day INTEGER NOT NULL, endDay INTEGER, startedAt REAL, endedAt REAL,
                    outcome TEXT NOT NULL DEFAULT 'running', reason TEXT, level INTEGER, durationS REAL, stimulatingS REAL,
                    l1 REAL NOT NULL DEFAULT 0, l2 REAL NOT NULL DEFAULT 0, l3 REAL NOT NULL DEFAULT 0,
                    pauses INTEGER NOT NULL DEFAULT 0, levelChanges INTEGER NOT NULL DEFAULT 0, trips INTEGER NOT NULL DEFAULT 0,
                    phase TEXT, regimenDay INTEGER, PRIMARY KEY (fleet, gw, sessionId));
                CREATE INDEX session_by_day ON session (fleet, gw, day);
                CREATE TABLE daily (fleet TEXT NOT NULL, gw TEXT NOT NULL, day INTEGER NOT NULL,
                    started INTEGER NOT NULL DEFAULT 0, completed INTEGER NOT NULL DEFAULT 0, aborted INTEGER NOT NULL DEFAULT 0,
                    l1 REAL NOT NULL DEFAULT 0, l2 REAL NOT NULL DEFAULT 0, l3 REAL NOT NULL DEFAULT 0,
                    pauses INTEGER NOT NULL DEFAULT 0, trips INTEGER NOT NULL DEFAULT 0,
                    PRIMARY KEY (fleet, gw, day));
                CREATE INDEX daily_by_day ON daily (day);
                CREATE TABLE abort (fleet TEXT NOT NULL, gw TEXT NOT NULL, day INTEGER NOT NULL, reason TEXT NOT NULL,
                    count INTEGER NOT NULL, PRIMARY KEY (fleet, gw, day, reason));
                CREATE TABLE event (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
                    day INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL, receivedAt REAL NOT NULL,
                    PRIMARY KEY (fleet, gw, epoch, seq));
                CREATE INDEX event_by_day ON event (day);
                """)
        }
        // The raw event log is kept in arrival order, without a key of (fleet, gw, epoch, seq):
        // dedupe happens before an event is written (the stream watermarks and `received`), and
        // that key put each batch's events at a thousand places of an index, one page each, so
        // a commit wrote more pages the longer the log grew.
        migrator.registerMigration("v2-event-log-in-arrival-order") { db in
            try db.execute(sql: """
                CREATE TABLE event_log (fleet TEXT NOT NULL, gw TEXT NOT NULL, epoch TEXT NOT NULL, seq INTEGER NOT NULL,
                    day INTEGER NOT NULL, ts REAL NOT NULL, type TEXT NOT NULL, body BLOB NOT NULL, receivedAt REAL NOT NULL);
                INSERT INTO event_log SELECT fleet, gw, epoch, seq, day, ts, type, body, receivedAt FROM event ORDER BY rowid;
                DROP TABLE event;
                ALTER TABLE event_log RENAME TO event;
                CREATE INDEX event_by_day ON event (day);
                """)
        }
        // Per-gateway bounds: when each stream started and was last heard from (for the epoch
        // limit and retention), and what was refused from each gateway, by reason.
        migrator.registerMigration("v3-bounds") { db in
            let now = Date().timeIntervalSince1970
            try db.execute(sql: """
                ALTER TABLE stream ADD COLUMN createdAt REAL NOT NULL DEFAULT 0;
                ALTER TABLE stream ADD COLUMN lastAt REAL NOT NULL DEFAULT 0;
                UPDATE stream SET createdAt = \(now), lastAt = \(now);
                CREATE TABLE refusal (fleet TEXT NOT NULL, gw TEXT NOT NULL, reason TEXT NOT NULL, count INTEGER NOT NULL,
                    lastAt REAL NOT NULL, lastDetail TEXT NOT NULL, lastPayload BLOB, PRIMARY KEY (fleet, gw, reason));
                CREATE INDEX session_by_end ON session (COALESCE(endDay, day));
                """)
        }
        // Gateways whose records were removed (`forget`): their old retained presence is ignored.
        migrator.registerMigration("v4-forgotten") { db in
            try db.execute(sql: "CREATE TABLE forgotten (fleet TEXT NOT NULL, gw TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (fleet, gw))")
        }
        // Who may read the API and dashboard (see AccessStore): no secret in clear.
        migrator.registerMigration("v5-access") { db in
            try db.execute(sql: """
                CREATE TABLE account (name TEXT PRIMARY KEY, role TEXT NOT NULL, passwordHash TEXT NOT NULL,
                    createdAt REAL NOT NULL, passwordSetAt REAL NOT NULL, lastLoginAt REAL);
                CREATE TABLE api_token (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, role TEXT NOT NULL, secretHash TEXT NOT NULL,
                    createdAt REAL NOT NULL, expiresAt REAL, lastUsedAt REAL);
                CREATE TABLE web_session (idHash TEXT PRIMARY KEY, account TEXT NOT NULL, createdAt REAL NOT NULL, expiresAt REAL NOT NULL);
                CREATE INDEX web_session_by_account ON web_session (account);
                """)
        }
        return migrator
    }

    public func fleets() async throws -> [String] {
        try await pool.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT fleet FROM gateway ORDER BY fleet") }
    }

    /// Deletes what is older than `day`: raw events, session rows (their days' statistics stay
    /// in `daily`), streams not heard from since (with their dedupe keys) and refusal records.
    public func prune(before day: Day) async throws -> Int {
        let cutoff = day.start.timeIntervalSince1970
        return try await pool.writeWithoutTransaction { db in
            var removed = 0
            var stale: [StreamKey] = []
            try db.inTransaction {
                try db.execute(sql: "DELETE FROM event WHERE day < ?", arguments: [day.number])
                removed = db.changesCount
                try db.execute(sql: "DELETE FROM session WHERE COALESCE(endDay, day) < ?", arguments: [day.number])
                try db.execute(sql: "DELETE FROM refusal WHERE lastAt < ?", arguments: [cutoff])
                stale = self.withCaches { caches in caches.streams.filter { $0.value.lastAt < cutoff }.map(\.key) }
                for key in stale {
                    let epoch = key.epoch.wireString
                    try db.execute(
                        sql: "DELETE FROM stream WHERE fleet = ? AND gw = ? AND epoch = ?", arguments: [key.fleet, key.gateway, epoch])
                    try db.execute(
                        sql: "DELETE FROM received WHERE fleet = ? AND gw = ? AND epoch = ?", arguments: [key.fleet, key.gateway, epoch])
                }
                return .commit
            }
            self.withCaches { caches in
                for key in stale { caches.streams[key] = nil }
            }
            return removed
        }
    }

    /// Advances each stream's contiguous watermark over the keys that arrived and deletes the
    /// keys it covers. A gap still open after ``gapHorizonSeconds`` is stepped over.
    public func compact(now: Date) async throws {
        let horizon = gapHorizonSeconds
        try await pool.writeWithoutTransaction { db in
            let waiting = self.withCaches { caches in caches.streams.filter { $0.value.pendingAbove > 0 } }
            var streams: [StreamKey: Stream] = [:]
            try db.inTransaction {
                streams = try Self.compact(waiting, now: now, horizon: horizon, db)
                return .commit
            }
            // As in `apply`: the caches follow only what committed.
            self.withCaches { caches in caches.streams.merge(streams) { _, committed in committed } }
        }
    }

    /// Advances the watermarks of `waiting` in `db`'s open transaction; returns them moved.
    private static func compact(_ waiting: [StreamKey: Stream], now: Date, horizon: Double, _ db: Database) throws -> [StreamKey: Stream] {
        var streams = waiting
        for (key, var stream) in waiting {
            let seqs = try Int64.fetchAll(
                db, sql: "SELECT seq FROM received WHERE fleet = ? AND gw = ? AND epoch = ? AND seq > ? ORDER BY seq",
                arguments: [key.fleet, key.gateway, stream.epochText, Int64(stream.contiguous)]).map { UInt64($0) }
            let advanced = StreamWatermark.advance(
                contiguous: stream.contiguous, gapSince: stream.gapSince, above: seqs, now: now, horizon: horizon)
            if advanced.contiguous != stream.contiguous {
                try db.execute(
                    sql: "DELETE FROM received WHERE fleet = ? AND gw = ? AND epoch = ? AND seq <= ?",
                    arguments: [key.fleet, key.gateway, stream.epochText, Int64(advanced.contiguous)])
                stream.contiguous = advanced.contiguous
                stream.pendingAbove = seqs.filter { $0 > advanced.contiguous }.count
            }
            stream.gapSince = advanced.gapSince
            streams[key] = stream
            try save(stream, key, db)
        }
        return streams
    }

    static func save(_ stream: Stream, _ key: StreamKey, _ db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO stream (fleet, gw, epoch, minSeq, maxSeq, count, evicted, contiguous, gapSince, createdAt, lastAt)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (fleet, gw, epoch) DO UPDATE SET minSeq = excluded.minSeq, maxSeq = excluded.maxSeq,
                count = excluded.count, evicted = excluded.evicted, contiguous = excluded.contiguous, gapSince = excluded.gapSince,
                lastAt = excluded.lastAt
            """).run(
                key.fleet, key.gateway, stream.epochText, Int64(clamping: stream.minSeq), Int64(clamping: stream.maxSeq), stream.count,
                stream.evicted, Int64(clamping: stream.contiguous), stream.gapSince, stream.createdAt, stream.lastAt)
    }

    func withCaches<T>(_ body: (inout Caches) throws -> T) rethrows -> T {
        try caches.withLock { try body(&$0) }
    }
}

extension Row {
    /// A stored count, read without trapping whatever the column holds: an integer as it is, a
    /// float (SQLite turns an overflowing sum into one) held to `Int`'s range, anything else 0.
    func count(_ column: String) -> Int {
        switch (self[column] as DatabaseValue).storage {
        case .int64(let value): Int(value)
        case .double(let value): value.isFinite ? Int(clampingFinite: value) : (value > 0 ? .max : 0)
        default: 0
        }
    }

    /// A stored integer that may be NULL, read like ``count(_:)``.
    func int(_ column: String) -> Int? {
        (self[column] as DatabaseValue).isNull ? nil : count(column)
    }

    /// A stored seq, never below 0.
    func counter(_ column: String) -> UInt64 {
        UInt64(Swift.max(0, count(column)))
    }

    /// A stored real (a sum of seconds), finite and not negative.
    func seconds(_ column: String) -> Double {
        switch (self[column] as DatabaseValue).storage {
        case .int64(let value): Swift.max(0, Double(value))
        case .double(let value): value.isFinite ? Swift.max(0, value) : (value > 0 ? Double.greatestFiniteMagnitude : 0)
        default: 0
        }
    }
}

extension Int {
    /// A finite double held to `Int`'s range, rounded toward zero.
    init(clampingFinite value: Double) {
        if value >= 9.2e18 {
            self = .max
        } else if value <= -9.2e18 {
            self = .min
        } else {
            self = Int(value)
        }
    }
}

extension SQLiteStatsStore {
    /// How many streams (gateway, outbox epoch) the store keeps state for, on disk and in
    /// memory (for tests).
    @_spi(Testing) public func streamCounts() async throws -> (stored: Int, cached: Int) {
        let stored = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM stream") ?? 0 }
        return (stored, withCaches { $0.streams.count })
    }

    /// How many session rows the store keeps (for tests).
    @_spi(Testing) public func sessionRows() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM session") ?? 0 }
    }

    /// How many dedupe keys are stored above the streams' watermarks (for tests).
    @_spi(Testing) public func storedDedupeKeys() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM received") ?? 0 }
    }
}

extension SQLiteStatsStore {
    /// The raw event log, oldest first: gateway, seq, day and stored body (for tests).
    @_spi(Testing) public func storedEvents() async throws -> [(gateway: String, seq: Int, day: Int, body: Data)] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT gw, seq, day, body FROM event ORDER BY rowid").map { ($0["gw"], $0["seq"], $0["day"], $0["body"]) }
        }
    }

    /// Creates the schema of an earlier version at `path` (for tests of the migrations).
    @_spi(Testing) public static func createSchema(at path: String, upTo migration: String) throws {
        try migrator.migrate(DatabaseQueue(path: path), upTo: migration)
    }
}

extension SQLiteStatsStore {
    /// The database's size in pages (for tests).
    @_spi(Testing) public func pageCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "PRAGMA page_count") ?? 0 }
    }

    /// Limits the database's size in pages on the writer's connection, as a full disk would (for tests).
    @_spi(Testing) public func setMaxPageCount(_ pages: Int) async throws {
        try await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA max_page_count = \(pages)") }
    }
}
