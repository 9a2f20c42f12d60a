import Foundation
import GRDB
import Logging
import Metrics
import MQTT

/// A durable store-and-forward queue: every message an agent sends goes through it, connected
/// or not.
///
/// - Enqueue stores the message and gives it the next 64-bit `seq` of this database in the
///   same transaction; concurrent enqueues are group-committed into one transaction.
/// - While connected, rows are sent in `seq` order with at most `window` unacknowledged; a row
///   is deleted only after its PUBACK, with a later write (see ``deleteBatch``). After every
///   (re)connect the drain starts by itself from the oldest row. Live messages go first, with
///   a fixed share of the window kept for the backlog; backlog rows carry the MQTT 5 user
///   property `historical=true`.
/// - Past the byte cap or the free-disk floor, old telemetry is rolled up, then evicted; events
///   only past the hard cap. Every eviction is counted and announced.
/// - A disk that refuses writes never loses what was accepted: messages wait in a bounded
///   memory buffer and are written when the disk works again.
public actor Outbox {
    /// A report of messages evicted under storage pressure.
    public struct Eviction: Sendable, Hashable {
        public var messageClass: MessageClass
        public var count: Int
        public var bytes: Int
    }

    public let configuration: OutboxConfiguration
    /// Made when this database was created; `(gateway, epoch, seq)` is unique forever.
    public private(set) var epoch: UUID
    /// Set when the database was unreadable and was moved aside (a new epoch began).
    public private(set) var reset: (reason: String, movedTo: String)?

    /// Merges one minute of telemetry payloads (oldest first) into one; nil keeps them as they are.
    let rollup: (@Sendable ([[UInt8]]) -> [UInt8]?)?
    /// Builds the `outbox.evicted` event for an eviction, given its seq and the epoch.
    let evictionNotice: (@Sendable (Eviction, UInt64, UUID) -> OutboxMessage)?
    let logger: Logger
    let metrics: OutboxMetrics
    var lastRecorded = OutboxStats()

    var queue: DatabaseQueue
    var nextSeq: UInt64
    /// Every seq below this one is committed (or was given up); at or above, still to commit.
    var committedNext: UInt64
    var pending: [(row: StoredMessage, waiter: CheckedContinuation<UInt64, Never>?)] = []
    var memoryBuffer: [StoredMessage] = []
    var pendingDeletes: [UInt64] = []
    /// Refused rows to set aside (with the broker's reason) before their delete.
    var pendingRefusals: [(seq: UInt64, reason: Int32)] = []
    /// Refusals logged, by reason and topic, with when and how many since: a lasting refusal
    /// is logged once, then at most every ``refusalReminderSeconds`` with a count.
    var refusalLog: [String: (at: Date, since: Int)] = [:]
    static let refusalReminderSeconds: Double = 300
    var sendErrorSaid: Date?
    /// Acknowledged rows not yet deleted, with their payload bytes: they no longer count in
    /// ``stats()`` and are never sent again by this process.
    var ackedNotDeleted: [UInt64: Int] = [:]
    var ackedNotDeletedBytes = 0
    /// Set when acknowledged rows must be deleted now, without waiting for a batch or a write.
    var deletesDue = false
    var writing = false
    var retryScheduled = false
    var counters = OutboxStats()
    var storedBytes = 0
    var storedRows = 0
    /// When the oldest stored row was enqueued (nil: none stored), kept up to date by every
    /// write so that ``stats()`` does not read the database.
    var oldestCreatedAt: Double?
    var lastCompact = Date.distantPast
    /// Payload bytes deleted, rolled up or evicted since the last compaction.
    var releasedSinceCompact = 0
    /// Payload bytes the disk can hold, counting what is stored and leaving the free-disk
    /// floor, when the file system was last asked.
    var diskRoom: (bytes: Int, checkedAt: ContinuousClock.Instant)?

    // Dispatch state.
    var client: (any PublishTransport)?
    /// Transports handed to ``attach(_:)``, for ``run()`` to follow; finished by ``close()``.
    let attachments: AsyncStream<Attachment>
    let attachmentSink: AsyncStream<Attachment>.Continuation
    /// Requests to send what the window has room for, for ``run()``'s pump.
    let pumpRequests: AsyncStream<Void>
    let pumpSink: AsyncStream<Void>.Continuation
    var running = false
    var closed = false
    var connected = false
    var boundary: UInt64 = 0
    var liveCursor: UInt64 = 1
    /// Rows committed lately and not yet sent live, in seq order: every committed row from
    /// `recentFrom` on is here, so live rows are sent without reading them back.
    var recent: [StoredMessage] = []
    var recentFrom: UInt64 = 1
    var backlogCursor: UInt64 = 0
    var hasBacklog = false
    var inflight: [UInt64: (sentAt: Double, backlog: Bool, bytes: Int, topic: String)] = [:]
    var maxSentSeq: UInt64 = 0

    /// Opens or creates the outbox. An unreadable (corrupt) file is moved aside and a new one
    /// started with a new epoch; ``reset`` says so.
    /// - Throws: ``OutboxError`` `unavailable` when no database can be opened at all (a folder
    ///   that does not exist or cannot be written).
    public init(
        _ configuration: OutboxConfiguration, logger: Logger = Logger(label: "spectra.outbox"),
        rollup: (@Sendable ([[UInt8]]) -> [UInt8]?)? = nil,
        evictionNotice: (@Sendable (Eviction, UInt64, UUID) -> OutboxMessage)? = nil,
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(OutboxError) {
        self.configuration = configuration
        self.logger = logger
        (attachments, attachmentSink) = AsyncStream.makeStream(of: Attachment.self, bufferingPolicy: .bufferingNewest(1))
        (pumpRequests, pumpSink) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        self.rollup = rollup
        self.evictionNotice = evictionNotice
        self.metrics = OutboxMetrics(
            database: (configuration.path as NSString).lastPathComponent, factory: metricsFactory ?? MetricsSystem.factory)
        var resetInfo: (String, String)?
        let opened: (DatabaseQueue, UUID, UInt64, Int)
        do {
            opened = try OutboxStore.open(configuration)
        } catch {
            guard FileManager.default.fileExists(atPath: configuration.path) else {
                throw OutboxError(.unavailable, "cannot create the outbox at \(configuration.path): \(error); check the folder exists and is writable")
            }
            // Only a file SQLite calls damaged is moved aside: one that is locked or cannot be
            // read for another reason holds messages that a new epoch would strand.
            switch (error as? DatabaseError)?.resultCode {
            case .SQLITE_CORRUPT?, .SQLITE_NOTADB?, .SQLITE_FORMAT?:
                break
            case .SQLITE_BUSY?, .SQLITE_LOCKED?:
                throw OutboxError(.unavailable, "the outbox at \(configuration.path) is locked by another process (another agent with the same data directory?): \(error)")
            default:
                throw OutboxError(.unavailable, "cannot open the outbox at \(configuration.path): \(error); check its owner, permissions and the disk")
            }
            let movedTo = "\(configuration.path).corrupt-\(Int(Date().timeIntervalSince1970))"
            for suffix in ["", "-wal", "-shm"] {
                try? FileManager.default.moveItem(atPath: configuration.path + suffix, toPath: movedTo + suffix)
            }
            logger.error("outbox database unreadable; moved aside", metadata: ["path": "\(configuration.path)", "movedTo": "\(movedTo)", "error": "\(error)"])
            resetInfo = ("\(error)", movedTo)
            do {
                opened = try OutboxStore.open(configuration)
            } catch {
                throw OutboxError(.unavailable, "cannot create a new outbox at \(configuration.path): \(error)")
            }
        }
        (queue, epoch, nextSeq, _) = opened
        reset = resetInfo
        if opened.3 > 0 {
            logger.notice("outbox: messages the broker had refused are queued again", metadata: ["count": "\(opened.3)"])
        }
        let totals = try? queue.read { db in try OutboxStore.totals(db: db) }
        storedRows = totals?.depth ?? 0
        storedBytes = totals?.bytes ?? 0
        oldestCreatedAt = totals?.oldest
        committedNext = nextSeq
        liveCursor = nextSeq
        recentFrom = nextSeq
    }

    // MARK: Enqueue

    /// Stores a message built for its `seq` and this database's epoch.
    ///
    /// Returns once the message is committed (group-committed with concurrent enqueues), or,
    /// when the disk refuses writes, once it is held in the memory buffer (``OutboxStats/memoryBuffered``).
    /// - Returns: the message's seq.
    @discardableResult
    public func enqueue(_ build: (UInt64, UUID) -> OutboxMessage) async -> UInt64 {
        let seq = nextSeq
        nextSeq += 1
        let message = build(seq, epoch)
        let row = StoredMessage(
            seq: seq, messageClass: message.messageClass, topic: message.topic, payload: message.payload, qos: message.qos,
            retain: message.retain, createdAt: Date().timeIntervalSince1970)
        return await withCheckedContinuation { continuation in
            pending.append((row, continuation))
            startWriter()
        }
    }

    func startWriter() {
        guard !writing else { return }
        writing = true
        Task { await self.writeLoop() }
    }

    /// Acknowledged rows are deleted with the next write (an enqueue), or once this many have
    /// gathered, or at the next housekeeping tick. In a trickle every message then costs one
    /// transaction (its insert, with the delete of the one before) instead of two. A process
    /// killed in between sends those rows again after its restart: duplicates only ever for
    /// acknowledgements it had not recorded, as with a lost PUBACK.
    static let deleteBatch = 256

    var deletesWaiting: Bool {
        !pendingDeletes.isEmpty && (deletesDue || pendingDeletes.count >= Self.deleteBatch)
    }

    func writeLoop() async {
        defer { writing = false }
        while !pending.isEmpty || deletesWaiting || (!memoryBuffer.isEmpty && !retryScheduled) {
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            let deletes = pendingDeletes
            pendingDeletes.removeAll(keepingCapacity: true)
            let refusals = pendingRefusals
            pendingRefusals.removeAll()
            deletesDue = false
            let rows = memoryBuffer + batch.map(\.row)
            let next = nextSeq
            let added = rows.reduce(0) { $0 + $1.payload.count }
            let limits = currentLimits()
            let rollup = self.rollup
            let before = storedBytes
            // Inserts only add newer rows: the oldest changes when rows go, or when there was none.
            // A steady trickle empties the queue at every acknowledgement and refills it with
            // the next message, so those two cases are known without asking the database.
            let knownOldest = oldestCreatedAt
            let rowsBefore = storedRows
            do {
                let (outcome, deletedRows, oldest, setAside) = try await queue.writeWithoutTransaction { db in
                    try OutboxStore.transaction(db) {
                        let setAside = try OutboxStore.setAside(refusals, at: Date().timeIntervalSince1970, db: db)
                        let deleted = try OutboxStore.delete(deletes, db: db)
                        try OutboxStore.insert(rows, db: db)
                        let bounds = try OutboxBounds.enforce(bytes: before - deleted.bytes + added, limits: limits, rollup: rollup, db: db)
                        // Rows just inserted are the newest: `MAX(seq)` stays right unless nothing was
                        // inserted and rows went, or eviction ran. (A trickle inserts with every
                        // delete: one page less written per commit.)
                        if bounds.removedRows > 0 || (rows.isEmpty && deleted.rows > 0) {
                            try OutboxStore.saveNextSeq(next, db: db)
                        }
                        let removed = deleted.rows > 0 || bounds.removedRows > 0
                        let oldest: Double?
                        if !removed && knownOldest != nil {
                            oldest = knownOldest
                        } else if bounds.removedRows == 0 && rowsBefore == deleted.rows {
                            // Every older row went: the oldest is one of those just inserted.
                            oldest = rows.lazy.map(\.createdAt).min()
                        } else if rowsBefore + rows.count - deleted.rows - bounds.removedRows == 0 {
                            oldest = nil
                        } else {
                            oldest = try OutboxStore.oldestCreatedAt(db: db)
                        }
                        return (bounds, deleted.rows, oldest, setAside)
                    }
                }
                oldestCreatedAt = oldest
                if !refusals.isEmpty {
                    counters.refusedStored = setAside.stored
                    counters.refusedDropped += setAside.dropped
                }
                memoryBuffer.removeAll()
                for seq in deletes { ackedNotDeletedBytes -= ackedNotDeleted.removeValue(forKey: seq) ?? 0 }
                committedNext = next
                remember(committed: rows, reshaped: outcome.removedRows > 0)
                storedRows += rows.count - deletedRows - outcome.removedRows
                storedBytes = outcome.bytes
                releasedSinceCompact += before + added - outcome.bytes
                counters.rolledUp += outcome.rolledUp
                for eviction in outcome.evictions where eviction.count > 0 {
                    counters.evicted += eviction.count
                    logger.warning("outbox evicted messages under storage pressure", metadata: [
                        "class": "\(eviction.messageClass)", "count": "\(eviction.count)", "bytes": "\(eviction.bytes)",
                    ])
                    if let notice = evictionNotice {
                        let seq = nextSeq
                        nextSeq += 1
                        let message = notice(eviction, seq, epoch)
                        pending.append((StoredMessage(
                            seq: seq, messageClass: message.messageClass, topic: message.topic, payload: message.payload,
                            qos: message.qos, retain: message.retain, createdAt: Date().timeIntervalSince1970), nil))
                    }
                }
                for item in batch { item.waiter?.resume(returning: item.row.seq) }
                if storedRows <= Self.drainedRows && !deletes.isEmpty { compactIfDue() }
                if hasUnsent { requestPump() }
            } catch {
                counters.storageErrors += 1
                logger.error("outbox write failed; holding messages in memory", metadata: ["error": "\(error)"])
                pendingDeletes.insert(contentsOf: deletes, at: 0)
                pendingRefusals.insert(contentsOf: refusals, at: 0)
                memoryBuffer = rows
                trimMemoryBuffer()
                for item in batch { item.waiter?.resume(returning: item.row.seq) }
                scheduleRetry()
                return
            }
        }
    }

    /// Keeps what was just committed for the live sender; rows rolled up or evicted in the same
    /// commit (`reshaped`) make it read from the database again.
    func remember(committed rows: [StoredMessage], reshaped: Bool) {
        // Offline there is no live sender; a connect starts afresh from what is committed.
        guard connected else { return }
        if reshaped {
            recent.removeAll()
            recentFrom = committedNext
            return
        }
        recent.append(contentsOf: rows.lazy.filter { $0.seq >= self.liveCursor }.sorted { $0.seq < $1.seq })
        if recent.count > Self.recentLimit {
            recent.removeFirst(recent.count - Self.recentLimit)
            recentFrom = recent[0].seq
        }
    }

    static let recentLimit = 64
    /// At most this many rows left after a delete: a drain is over (live messages may remain).
    static let drainedRows = 64

    /// Keeps the memory buffer bounded: telemetry goes first, then the oldest of the rest.
    func trimMemoryBuffer() {
        var excess = memoryBuffer.count - configuration.memoryBufferLimit
        guard excess > 0 else { return }
        var dropped = 0
        memoryBuffer.removeAll { row in
            guard excess > 0, row.messageClass == .telemetry else { return false }
            excess -= 1
            dropped += 1
            return true
        }
        if excess > 0 {
            memoryBuffer.removeFirst(excess)
            dropped += excess
        }
        counters.evicted += dropped
    }

    func scheduleRetry() {
        guard !retryScheduled else { return }
        retryScheduled = true
        Task {
            try? await Task.sleep(for: .seconds(1))
            self.retryDue()
        }
    }

    func retryDue() {
        retryScheduled = false
        startWriter()
    }

    func currentLimits() -> OutboxBounds.Limits {
        var budget = configuration.maxBytes
        var hard = configuration.hardCapBytes
        // The file system is asked at most once a second, and every 10 s while the free space
        // above the floor is more than four byte caps (a simulator's thousands of outboxes
        // asked it thousands of times a second).
        let now = ContinuousClock.now
        let recheck: (Int) -> Duration = { [storedBytes, configuration] room in
            room - storedBytes > 4 * configuration.maxBytes ? .seconds(10) : .seconds(1)
        }
        if diskRoom.map({ now - $0.checkedAt > recheck($0.bytes) }) ?? true {
            diskRoom = Self.freeBytes(near: configuration.path).map { (bytes: storedBytes + $0 - configuration.minFreeBytes, checkedAt: now) }
        }
        if let diskRoom {
            budget = min(budget, diskRoom.bytes)
            hard = min(hard, diskRoom.bytes)
        }
        return OutboxBounds.Limits(softBytes: max(0, budget), hardBytes: max(0, hard))
    }

    static func freeBytes(near path: String) -> Int? {
        var info = statvfs()
        let folder = (path as NSString).deletingLastPathComponent
        guard statvfs(folder.isEmpty ? "." : folder, &info) == 0 else { return nil }
        return Int(info.f_bavail) * Int(info.f_frsize)
    }

    /// Gives space back once the queue is down to a few rows after a drain that released at
    /// least a MiB, at most every 30 s. (A steady trickle releases a message at every write;
    /// compacting for it checkpointed, fsynced and truncated every 30 s for nothing.)
    func compactIfDue() {
        guard releasedSinceCompact >= 1 << 20, Date().timeIntervalSince(lastCompact) > 30 else { return }
        lastCompact = Date()
        releasedSinceCompact = 0
        do {
            try OutboxStore.compact(queue)
        } catch {
            logger.warning("outbox compaction failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: Observability

    /// Depth, bytes, oldest unacknowledged age and counters.
    public func stats() -> OutboxStats {
        var stats = counters
        let unacknowledged = storedRows - ackedNotDeleted.count
        stats.depth = max(0, unacknowledged) + memoryBuffer.count
        stats.bytes = max(0, storedBytes - ackedNotDeletedBytes)
        stats.memoryBuffered = memoryBuffer.count
        // The oldest stored row may be acknowledged and not yet deleted; the age then errs old,
        // until the next write.
        if unacknowledged > 0, let oldest = oldestCreatedAt {
            stats.oldestUnackedSeconds = max(0, Date().timeIntervalSince1970 - oldest)
        } else if let first = memoryBuffer.first {
            stats.oldestUnackedSeconds = max(0, Date().timeIntervalSince1970 - first.createdAt)
        }
        return stats
    }

    /// Updates the swift-metrics gauges and counters (called every 5 s while attached, more
    /// often when ``OutboxConfiguration/stallSeconds`` is under 20 s).
    public func recordMetrics() {
        let now = stats()
        metrics.record(now, since: lastRecorded)
        lastRecorded = now
    }

    /// Waits until every enqueue so far is committed and every acknowledged row deleted.
    public func flush() async {
        await flush(until: nil)
    }

    /// ``flush()``, giving up at `deadline` (a disk that refuses writes never settles).
    /// Without a deadline, a cancelled caller stops waiting; with one (``close()``), the wait
    /// is kept even in a cancelled task, whose own sleeps would return at once and spin.
    func flush(until deadline: ContinuousClock.Instant?) async {
        while writing || !pending.isEmpty || !pendingDeletes.isEmpty {
            if let deadline, ContinuousClock.now >= deadline { return }
            if deadline == nil && Task.isCancelled { return }
            deletesDue = true
            startWriter()
            await Task { try? await Task.sleep(for: .milliseconds(5)) }.value
        }
    }

    /// Deletes the acknowledged rows now rather than with the next write.
    func deleteAcknowledged() {
        guard !pendingDeletes.isEmpty else { return }
        deletesDue = true
        startWriter()
    }

    /// Stops dispatching (``run()`` returns), and commits what is waiting, the deletes of the
    /// rows acknowledged so far included (up to two seconds for the disk), so that the next
    /// start does not send them again. Then gives up the file's locks, which an open outbox
    /// holds. Closing again does nothing.
    public func close() async {
        guard !closed else { return }
        closed = true
        attachmentSink.finish()
        pumpSink.finish()
        client = nil
        connected = false
        await flush(until: .now + .seconds(2))
        do {
            try OutboxStore.release(queue)
        } catch {
            logger.warning("outbox could not give up its database locks", metadata: ["error": "\(error)"])
        }
    }
}

extension Outbox {
    /// Reads the database through the outbox's own connection: while the outbox is open, it
    /// holds the file's locks and no other connection can. For tests.
    func readDatabase<T: Sendable>(_ body: @Sendable (Database) throws -> T) throws -> T {
        try queue.read(body)
    }

    /// Changes the database's page limit, to simulate a disk filling up and freeing again. For tests.
    @_spi(Testing)
    public func setMaxPageCount(_ pages: Int) throws {
        try queue.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA max_page_count = \(pages)") }
    }
}
