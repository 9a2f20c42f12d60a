import CSQLiteSettings
import Foundation
import GRDB

/// A stored row.
struct StoredMessage: Sendable, Hashable {
    var seq: UInt64
    var messageClass: MessageClass
    var topic: String
    var payload: [UInt8]
    var qos: Int32
    var retain: Bool
    var createdAt: Double
}

/// The SQLite side of the outbox: schema, batched writes, ordered reads, eviction.
/// Every method runs inside a GRDB transaction on the caller's `Database`.
enum OutboxStore {
    static let schemaVersion = 1

    /// Opens (or creates) the database, checking its integrity.
    /// - Returns: the queue, the epoch and the next seq.
    /// - Returns: the queue, the epoch, the next seq and how many refused messages were put
    ///   back in the queue.
    static func open(_ configuration: OutboxConfiguration) throws -> (DatabaseQueue, UUID, UInt64, Int) {
        _ = spectra_sqlite_configure()
        var config = Configuration()
        config.busyMode = .timeout(5)
        config.targetQueue = configuration.targetQueue
        let durability = configuration.durability
        let maxPageCount = configuration.maxPageCount
        // WAL is set here rather than with GRDB's `journalMode = .wal`, which sets synchronous
        // NORMAL after this runs and so would quietly turn `full` durability into `normal`.
        config.prepareDatabase { db in
            // Takes effect for a new database (before its first table): space can then be given back.
            try db.execute(sql: "PRAGMA auto_vacuum = INCREMENTAL")
            let journal = try String.fetchOne(db, sql: "PRAGMA journal_mode = WAL")
            guard journal == "wal" else {
                throw DatabaseError(message: "the outbox needs WAL journaling, and SQLite gave \(journal ?? "nothing")")
            }
            try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
            // One process owns an outbox: its locks are taken once and held, not taken and given
            // back with every transaction (seven `fcntl` calls per message in a trickle). A second
            // agent on the same data directory then cannot open it. ``release(_:)`` gives them up:
            // the read before keeps the WAL index in shared memory, without which SQLite holds
            // the locks until the connection closes.
            _ = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sqlite_master")
            _ = try String.fetchOne(db, sql: "PRAGMA locking_mode = EXCLUSIVE")
            if let maxPageCount { try db.execute(sql: "PRAGMA max_page_count = \(maxPageCount)") }
        }
        let queue = try DatabaseQueue(path: configuration.path, configuration: config)
        let (epoch, next, requeued) = try queue.write { db -> (UUID, UInt64, Int) in
            let check = try String.fetchOne(db, sql: "PRAGMA quick_check") ?? "?"
            guard check == "ok" else { throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "quick_check: \(check)") }
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS message (
                    seq INTEGER PRIMARY KEY NOT NULL,
                    class INTEGER NOT NULL,
                    topic TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    qos INTEGER NOT NULL,
                    retain INTEGER NOT NULL,
                    createdAt REAL NOT NULL);
                """)
            // Messages the broker refused, set aside (never deleted as if delivered).
            try db.execute(sql: """
                CREATE TABLE IF NOT EXISTS refused (
                    seq INTEGER PRIMARY KEY NOT NULL,
                    class INTEGER NOT NULL,
                    topic TEXT NOT NULL,
                    payload BLOB NOT NULL,
                    qos INTEGER NOT NULL,
                    retain INTEGER NOT NULL,
                    createdAt REAL NOT NULL,
                    reason INTEGER NOT NULL,
                    refusedAt REAL NOT NULL);
                """)
            let epoch: UUID
            if let text = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'epoch'"), let stored = UUID(uuidString: text) {
                epoch = stored
            } else {
                epoch = UUID()
                try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?)", arguments: [epoch.uuidString.lowercased()])
                try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", arguments: ["\(schemaVersion)"])
            }
            let requeued = try requeueRefused(db: db)
            let storedNext = try String.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'nextSeq'").flatMap { UInt64($0) } ?? 1
            let maxSeq = try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM message").map { UInt64($0) + 1 } ?? 1
            let next = max(storedNext, maxSeq)
            // The row `insert` updates in place (an UPDATE leaves the key's index alone: one page
            // written per commit instead of two).
            try db.execute(sql: "INSERT OR REPLACE INTO meta (key, value) VALUES ('nextSeq', ?)", arguments: ["\(next)"])
            return (epoch, next, requeued)
        }
        return (queue, epoch, next, requeued)
    }

    /// Runs `body` in one transaction, begun and committed with cached statements (GRDB's
    /// `write` prepares `BEGIN` and `COMMIT` anew every time: in a trickle, with a transaction
    /// per message, that parsing cost about as much as the insert). Rolls back on any error.
    static func transaction<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        do {
            let result = try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
            return result
        } catch {
            if db.isInsideTransaction { try? db.rollback() }
            throw error
        }
    }

    /// Inserts rows. The next seq is kept in `meta` only by ``saveNextSeq(_:db:)``: while the
    /// newest row is stored, `MAX(seq)` says it.
    static func insert(_ rows: [StoredMessage], db: Database) throws {
        let statement = try db.cachedStatement(
            sql: "INSERT INTO message (seq, class, topic, payload, qos, retain, createdAt) VALUES (?, ?, ?, ?, ?, ?, ?)")
        for row in rows {
            try statement.execute(arguments: [
                Int64(row.seq), row.messageClass.rawValue, row.topic, Data(row.payload), row.qos, row.retain, row.createdAt,
            ])
        }
    }

    /// Keeps the next seq for when the newest row is gone (deleted or evicted), so that a seq is
    /// never given twice, even after the queue empties and the agent restarts.
    static func saveNextSeq(_ nextSeq: UInt64, db: Database) throws {
        try db.cachedStatement(sql: "UPDATE meta SET value = ? WHERE key = 'nextSeq'").execute(arguments: ["\(nextSeq)"])
    }

    /// Refused messages kept at most; past it the oldest go (counted).
    static let refusedLimit = 10_000

    /// Copies refused rows (seq and the broker's reason code) into the `refused` table, before
    /// their delete from `message`, and keeps that table within ``refusedLimit``.
    /// - Returns: the rows set aside now, and how many old ones went to make room.
    static func setAside(_ refusals: [(seq: UInt64, reason: Int32)], at now: Double, db: Database) throws -> (stored: Int, dropped: Int) {
        guard !refusals.isEmpty else { return (0, 0) }
        let copy = try db.cachedStatement(sql: """
            INSERT OR IGNORE INTO refused (seq, class, topic, payload, qos, retain, createdAt, reason, refusedAt)
            SELECT seq, class, topic, payload, qos, retain, createdAt, ?, ? FROM message WHERE seq = ?
            """)
        for refusal in refusals { try copy.execute(arguments: [Int64(refusal.reason), now, Int64(refusal.seq)]) }
        let stored = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM refused") ?? 0
        guard stored > refusedLimit else { return (stored, 0) }
        try db.execute(
            sql: "DELETE FROM refused WHERE seq IN (SELECT seq FROM refused ORDER BY seq LIMIT ?)", arguments: [stored - refusedLimit])
        return (refusedLimit, stored - refusedLimit)
    }

    /// Puts every set-aside refused message back in the queue (at the start: the cause, an
    /// ACL or a configuration, may have been fixed). Returns how many.
    static func requeueRefused(db: Database) throws -> Int {
        try db.execute(sql: """
            INSERT OR IGNORE INTO message (seq, class, topic, payload, qos, retain, createdAt)
            SELECT seq, class, topic, payload, qos, retain, createdAt FROM refused
            """)
        let count = db.changesCount
        try db.execute(sql: "DELETE FROM refused")
        return count
    }

    /// Deletes rows by seq, one statement per run of consecutive seqs (acknowledgements mostly
    /// come in order, so a drained batch is usually one run).
    /// - Returns: how many rows and payload bytes went.
    @discardableResult
    static func delete(_ seqs: [UInt64], db: Database) throws -> (rows: Int, bytes: Int) {
        guard !seqs.isEmpty else { return (0, 0) }
        // What goes is counted first, then deleted: a `RETURNING` clause would build an
        // ephemeral table (a pager of its own) for every run, and a trickle deletes a run per message.
        let measure = try db.cachedStatement(sql: "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM message WHERE seq BETWEEN ? AND ?")
        let delete = try db.cachedStatement(sql: "DELETE FROM message WHERE seq BETWEEN ? AND ?")
        var rows = 0
        var bytes = 0
        let sorted = seqs.sorted()
        var start = sorted[0]
        var end = start
        func flush() throws {
            let arguments: StatementArguments = [Int64(start), Int64(end)]
            guard let row = try Row.fetchOne(measure, arguments: arguments), let count = row[0] as Int?, count > 0 else { return }
            try delete.execute(arguments: arguments)
            rows += count
            bytes += row[1] as Int
        }
        for seq in sorted.dropFirst() where seq != end {
            if seq == end + 1 {
                end = seq
            } else {
                try flush()
                (start, end) = (seq, seq)
            }
        }
        try flush()
        return (rows, bytes)
    }

    /// Rows with `seq` in `range`, in order, at most `limit`.
    static func fetch(from: UInt64, through: UInt64, limit: Int, db: Database) throws -> [StoredMessage] {
        try messages(
            db.cachedStatement(
                sql: "SELECT seq, class, topic, payload, qos, retain, createdAt FROM message WHERE seq >= ? AND seq <= ? ORDER BY seq LIMIT ?"),
            arguments: [Int64(from), Int64(min(through, UInt64(Int64.max))), limit])
    }

    /// The rows a `SELECT seq, class, topic, payload, qos, retain, createdAt` gives, read by
    /// position (a drain reads every row once: looking columns up by name cost more than
    /// SQLite's own work).
    private static func messages(_ statement: Statement, arguments: StatementArguments) throws -> [StoredMessage] {
        let rows = try Row.fetchCursor(statement, arguments: arguments)
        var result: [StoredMessage] = []
        while let row = try rows.next() {
            let payload = try row.withUnsafeData(atIndex: 3) { data in data.map { [UInt8]($0) } ?? [] }
            result.append(StoredMessage(
                seq: UInt64(row[0] as Int64), messageClass: MessageClass(rawValue: row[1]) ?? .event, topic: row[2],
                payload: payload, qos: row[4], retain: row[5], createdAt: row[6]))
        }
        return result
    }

    /// Depth, payload bytes and the oldest row's creation time.
    static func totals(db: Database) throws -> (depth: Int, bytes: Int, oldest: Double?) {
        let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)), 0) FROM message"))
        return (row?[0] ?? 0, row?[1] ?? 0, try oldestCreatedAt(db: db))
    }

    /// When the oldest row was enqueued.
    static func oldestCreatedAt(db: Database) throws -> Double? {
        try Double.fetchOne(db.cachedStatement(sql: "SELECT createdAt FROM message ORDER BY seq LIMIT 1"))
    }

    /// The oldest rows of `messageClass` older than `before`, at most `limit`.
    static func oldest(_ messageClass: MessageClass, limit: Int, db: Database) throws -> [StoredMessage] {
        try messages(
            db.cachedStatement(sql: "SELECT seq, class, topic, payload, qos, retain, createdAt FROM message WHERE class = ? ORDER BY seq LIMIT ?"),
            arguments: [messageClass.rawValue, limit])
    }

    /// Gives up the locks an open outbox holds, so that other connections can read and write
    /// the file; the next transaction takes them again, each time.
    static func release(_ queue: DatabaseQueue) throws {
        try queue.writeWithoutTransaction { db in
            _ = try String.fetchOne(db, sql: "PRAGMA locking_mode = NORMAL")
            // The locks go at the end of the next transaction.
            _ = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM meta")
        }
    }

    /// Gives space back to the file system after a drain.
    static func compact(_ queue: DatabaseQueue) throws {
        try queue.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA incremental_vacuum")
            try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }
}
