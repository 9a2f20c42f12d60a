import Foundation

/// Session counts and time at each level, summed over a set of gateways and days.
public struct SessionTotals: Sendable, Equatable, Codable {
    public var started = 0
    public var completed = 0
    public var aborted = 0
    public var pauses = 0
    public var safetyTrips = 0
    /// Minutes of stimulation at levels 1, 2 and 3 (keys "1", "2", "3").
    public var levelMinutes: [String: Double] = ["1": 0, "2": 0, "3": 0]

    public init() {}

    /// Completed over ended (completed + aborted) sessions; nil when none ended.
    public var completionRate: Double? {
        completed + aborted == 0 ? nil : Double(completed) / Double(completed + aborted)
    }

    /// Each level's share of stimulation time; nil before any.
    public var levelMix: [String: Double]? {
        let total = levelMinutes.values.reduce(0, +)
        return total > 0 ? levelMinutes.mapValues { $0 / total } : nil
    }

    enum CodingKeys: String, CodingKey {
        case started, completed, aborted, pauses, safetyTrips, levelMinutes, completionRate, levelMix
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        started = try c.decode(Int.self, forKey: .started)
        completed = try c.decode(Int.self, forKey: .completed)
        aborted = try c.decode(Int.self, forKey: .aborted)
        pauses = try c.decode(Int.self, forKey: .pauses)
        safetyTrips = try c.decode(Int.self, forKey: .safetyTrips)
        levelMinutes = try c.decode([String: Double].self, forKey: .levelMinutes)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(started, forKey: .started)
        try c.encode(completed, forKey: .completed)
        try c.encode(aborted, forKey: .aborted)
        try c.encode(pauses, forKey: .pauses)
        try c.encode(safetyTrips, forKey: .safetyTrips)
        try c.encode(levelMinutes, forKey: .levelMinutes)
        try c.encode(completionRate, forKey: .completionRate)
        try c.encode(levelMix, forKey: .levelMix)
    }
}

/// Data completeness from `seq` gaps: of the sequence numbers a gateway has used (lowest to
/// highest seen, per outbox epoch), how many arrived; rows the gateway announced as evicted
/// (`outbox.evicted`) are accounted for separately.
public struct Completeness: Sendable, Equatable, Codable {
    public var received = 0
    public var expected = 0
    public var evicted = 0
    /// (received + evicted) / expected, at most 1; nil before anything arrived.
    public var ratio: Double?

    /// - Parameters: counts as stored; negative ones read as 0, and `evicted` counts only up to
    ///   the seqs that are actually missing (`expected - received`), so a gateway announcing
    ///   more evictions than it has gaps cannot make its data look more complete than it is.
    public init(received: Int = 0, expected: Int = 0, evicted: Int = 0) {
        self.received = max(0, received)
        self.expected = max(0, expected, self.received)
        self.evicted = min(max(0, evicted), self.expected - self.received)
        ratio = self.expected == 0 ? nil : min(1, (Double(self.received) + Double(self.evicted)) / Double(self.expected))
    }

    /// Pools two sets of gateways (saturating: sums never trap).
    public static func + (lhs: Completeness, rhs: Completeness) -> Completeness {
        Completeness(
            received: lhs.received.saturatingAdd(rhs.received), expected: lhs.expected.saturatingAdd(rhs.expected),
            evicted: lhs.evicted.saturatingAdd(rhs.evicted))
    }
}

/// Messages waiting in gateways' outboxes, from their latest telemetry.
public struct Backlog: Sendable, Equatable, Codable {
    public var messages = 0
    public var bytes = 0
    public var gatewaysWithBacklog = 0
    public init(messages: Int = 0, bytes: Int = 0, gatewaysWithBacklog: Int = 0) {
        self.messages = messages
        self.bytes = bytes
        self.gatewaysWithBacklog = gatewaysWithBacklog
    }
}

/// `GET /api/v1/fleet/summary` and the retained `stats/summary`.
public struct FleetSummary: Sendable, Equatable, Codable {
    public var fleet: String?
    public var generatedAt: Date
    public var today: Day
    public var gateways: Int
    public var online: Int
    /// Of the `online` gateways, those heard from (any message but the status the broker kept)
    /// longer ago than the store's `silentAfterSeconds`: online by their last word, which the
    /// broker did not correct (mosquitto sends no Wills when it stops itself, so a gateway that
    /// died while the broker was down stays online for good).
    public var silent: Int
    public var activeToday: Int
    /// Every session ever counted.
    public var sessions: SessionTotals
    public var abortReasons: [String: Int]
    public var adherence: Adherence
    public var adherenceRatio: Double?
    public var firmware: [String: Int]
    public var backlog: Backlog
    public var completeness: Completeness
}

/// One row of `GET /api/v1/fleet/daily`.
public struct DailyStats: Sendable, Equatable, Codable {
    public var day: Day
    public var activeGateways: Int
    public var sessions: SessionTotals
    public var abortReasons: [String: Int]
}

/// One gateway in `GET /api/v1/gateways`, and `stats/gw/{gw}`.
public struct GatewaySummary: Sendable, Equatable, Codable {
    public var fleet: String
    public var gateway: String
    public var online: Bool
    public var lastSeen: Date?
    public var agentVersion: String?
    public var firmware: String?
    public var maxLevel: Int?
    public var unlockedLevel: Int?
    public var configVersions: [String: Int]
    public var groups: [String]
    public var sessions: SessionTotals
    public var lastSessionAt: Date?
    public var regimenStart: Day?
    public var phase: String?
    public var adherence: Adherence
    public var adherenceRatio: Double?
    public var backlog: Backlog
    public var completeness: Completeness
    public var batteryPct: Double?
    public var rssKiB: Int?
    public var reconnects: Int?
    /// Messages from this gateway's topics that were refused, by reason; nil when none ever were.
    public var refusals: GatewayRefusals?
    /// Since when `online` holds: the time of the gateway's birth or clean stop, or when the
    /// aggregator received the Will of a lost connection (nil before any status).
    public var statusSince: Date? = nil
}

/// What was refused from one gateway (bad input, a per-gateway limit, or something the store
/// could not apply). Each refused message was acknowledged to the broker and counted here.
public struct GatewayRefusals: Sendable, Equatable, Codable {
    /// How long after its last refusal a gateway still counts as ``refusing``, seconds.
    public static let recentSeconds: Double = 600

    /// Refused messages, all reasons.
    public var total: Int
    /// Refused messages by reason (the same labels as `/metrics`).
    public var byReason: [String: Int]
    public var lastReason: String
    /// What was wrong with the latest refused message, in one line.
    public var lastDetail: String
    public var lastAt: Date
    /// Whether input was refused in the last ``recentSeconds``: the dashboard marks the gateway.
    public var refusing: Bool

    public init(total: Int, byReason: [String: Int], lastReason: String, lastDetail: String, lastAt: Date, refusing: Bool) {
        self.total = total
        self.byReason = byReason
        self.lastReason = lastReason
        self.lastDetail = lastDetail
        self.lastAt = lastAt
        self.refusing = refusing
    }
}

extension Int {
    /// `self + other`, held at `Int.max` / `Int.min` instead of trapping.
    func saturatingAdd(_ other: Int) -> Int {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}

/// `GET /api/v1/gateways/{gw}`: the summary, its days and its latest sessions.
public struct GatewayDetail: Sendable, Equatable, Codable {
    public var gateway: GatewaySummary
    public var daily: [DailyStats]
    public var recentSessions: [SessionRecord]
}

/// One session, as `GET /api/v1/gateways/{gw}/sessions` lists it.
public struct SessionRecord: Sendable, Equatable, Codable {
    public var sessionId: String
    public var day: Day
    public var startedAt: Date?
    public var endedAt: Date?
    /// `running`, `completed` or `aborted`.
    public var outcome: String
    public var reason: String?
    public var level: Int?
    public var durationS: Double?
    public var stimulatingS: Double?
    public var levelSeconds: [String: Double]
    public var pauses: Int
    public var levelChanges: Int
    public var safetyTrips: Int
    public var regimenPhase: String?
    public var regimenDay: Int?
}
