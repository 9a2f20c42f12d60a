/// Something the engine did that the session controller reports (as a `session.*` or
/// `safety.trip` event).
public enum EngineEvent: Sendable, Hashable {
    case levelChanged(from: Int, to: Int)
    case paused(reason: String)
    case resumed(reason: String)
    case trip(SafetyViolation)
    case ended(SessionOutcome)
}

/// How a session ended.
public enum SessionOutcome: Sendable, Hashable {
    case completed
    /// Ended early: `user_stop`, `remote_stop`, `safety_trip`, `headband_lost`, `battery_low`,
    /// `agent_shutdown`, `agent_restart`.
    case aborted(reason: String)

    public var isCompleted: Bool { self == .completed }
}

/// A hard-rule violation: which rule, on which channel, the value and the limit it crossed.
public struct SafetyViolation: Sendable, Hashable, CustomStringConvertible {
    public var rule: SafetyRule
    public var channelID: String?
    public var value: Double
    public var limit: Double

    public init(rule: SafetyRule, channelID: String? = nil, value: Double, limit: Double) {
        self.rule = rule
        self.channelID = channelID
        self.value = value
        self.limit = limit
    }

    public var description: String {
        "\(rule.rawValue)\(channelID.map { " on \($0)" } ?? ""): \(value) against limit \(limit)"
    }
}

/// What a session has delivered so far.
public struct SessionTotals: Sendable, Hashable {
    /// Seconds with current flowing, ramps included.
    public var stimulatingS: Double = 0
    /// Stimulating seconds per level.
    public var levelSeconds: [Int: Double] = [:]
    public var pauses: Int = 0
    /// Absolute charge per channel id, microcoulombs.
    public var chargeMicroCoulombs: [String: Double] = [:]

    public init() {}
}
