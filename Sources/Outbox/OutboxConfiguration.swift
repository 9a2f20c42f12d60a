import Dispatch

/// How an outbox stores and sends. Every parameter has a documented default.
public struct OutboxConfiguration: Sendable {
    /// How commits trade speed for durability.
    public enum Durability: String, Sendable, CaseIterable {
        /// WAL, synchronous NORMAL: survives a process crash; a power cut may lose the last commits.
        case normal
        /// WAL, synchronous FULL: every commit is on disk before enqueue returns.
        case full
    }

    /// The database file.
    public var path: String
    public var durability: Durability
    /// Bytes of stored payload past which old telemetry is rolled up, then evicted.
    public var maxBytes: Int
    /// Bytes past which events are evicted too (the hard cap); at least `maxBytes`.
    public var hardCapBytes: Int
    /// Free disk space always left on the file system, bytes.
    public var minFreeBytes: Int
    /// Messages sent and not yet acknowledged, at most.
    public var window: Int
    /// Share of the window kept for the backlog while live messages flow (0...1).
    public var backlogShare: Double
    /// Messages held in memory while the disk refuses writes; past it telemetry is dropped.
    public var memoryBufferLimit: Int
    /// Oldest unacknowledged age that counts as a stalled drain while connected, seconds;
    /// checked every quarter of it, at most every 5 s.
    public var stallSeconds: Double
    /// The largest database in pages, to simulate a small disk in tests (nil: no limit).
    public var maxPageCount: Int?
    /// The serial dispatch queue the database work runs on (nil: a queue of its own). Many
    /// outboxes in one process (the fleet simulator's) share a few, so that they do not each
    /// take a thread while they write. Work on it must never wait for another outbox on the
    /// same queue.
    public var targetQueue: DispatchQueue?

    public init(
        path: String, durability: Durability = .normal, maxBytes: Int = 64 << 20, hardCapBytes: Int? = nil,
        minFreeBytes: Int = 32 << 20, window: Int = 1000, backlogShare: Double = 0.25, memoryBufferLimit: Int = 10_000,
        stallSeconds: Double = 60, maxPageCount: Int? = nil, targetQueue: DispatchQueue? = nil
    ) {
        self.path = path
        self.durability = durability
        self.maxBytes = maxBytes
        self.hardCapBytes = max(hardCapBytes ?? maxBytes + maxBytes / 4, maxBytes)
        self.minFreeBytes = minFreeBytes
        self.window = max(1, window)
        self.backlogShare = min(1, max(0, backlogShare))
        self.memoryBufferLimit = memoryBufferLimit
        self.stallSeconds = stallSeconds
        self.maxPageCount = maxPageCount
        self.targetQueue = targetQueue
    }
}

/// What kind of message a row holds; eviction takes telemetry first and events last.
public enum MessageClass: Int, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case event = 0
    case telemetry = 1
    case state = 2

    public var description: String {
        switch self {
        case .event: "event"
        case .telemetry: "telemetry"
        case .state: "state"
        }
    }
}

/// A message to store and forward.
public struct OutboxMessage: Sendable, Hashable {
    public var messageClass: MessageClass
    public var topic: String
    public var payload: [UInt8]
    public var qos: Int32
    public var retain: Bool

    public init(messageClass: MessageClass, topic: String, payload: [UInt8], qos: Int32 = 1, retain: Bool = false) {
        self.messageClass = messageClass
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
    }
}

/// What the outbox holds and has done, for telemetry and metrics.
public struct OutboxStats: Sendable, Hashable {
    public var depth = 0
    public var bytes = 0
    /// Age of the oldest message not yet acknowledged, seconds (0 when empty).
    public var oldestUnackedSeconds = 0.0
    public var sent = 0
    public var resent = 0
    public var acknowledged = 0
    public var evicted = 0
    public var rolledUp = 0
    /// Messages waiting in memory because the disk refused them.
    public var memoryBuffered = 0
    /// Writes the disk refused.
    public var storageErrors = 0
    /// Connections recycled because the drain stalled.
    public var stallRecycles = 0
    /// Messages the broker refused (not authorised, quota, too large) since the start: each
    /// is set aside, not deleted, and sent again at the next start.
    public var refused = 0
    /// Refused messages set aside now (at most ``OutboxStore/refusedLimit``).
    public var refusedStored = 0
    /// Refused messages given up because the set-aside store was full (the oldest go).
    public var refusedDropped = 0
    /// Why sending fails while the link is up (a QoS or packet size the broker does not take),
    /// nil while it works.
    public var sendError: String?
    /// The broker's last refusal, in words ("Not authorized on spectra/v1/..."), nil if none.
    public var lastRefusal: String?

    public init() {}
}

/// The outbox's own failures, with what to do.
public struct OutboxError: Error, Sendable, CustomStringConvertible {
    public enum Code: String, Sendable {
        /// The disk refused the write and the memory buffer is full.
        case full
        /// The database could not be opened or created.
        case unavailable
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}
