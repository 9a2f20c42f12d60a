import Foundation

/// A session or system event, the body of an envelope with `kind: "event"`.
public enum Event: Sendable, Equatable {
    case sessionStarted(SessionStarted)
    case sessionLevelChanged(LevelChanged)
    case sessionPaused(PauseChange)
    case sessionResumed(PauseChange)
    case sessionCompleted(SessionSummary)
    case sessionAborted(SessionSummary)
    case safetyTrip(SafetyTrip)
    case configApplied(ConfigOutcome)
    case configRejected(ConfigOutcome)
    case firmwareProgress(FirmwareProgress)
    case outboxEvicted(OutboxEvicted)
    case outboxReset(OutboxReset)

    /// The event's `type` on the wire.
    public enum EventType: String, Sendable, CaseIterable, Codable {
        case sessionStarted = "session.started"
        case sessionLevelChanged = "session.level_changed"
        case sessionPaused = "session.paused"
        case sessionResumed = "session.resumed"
        case sessionCompleted = "session.completed"
        case sessionAborted = "session.aborted"
        case safetyTrip = "safety.trip"
        case configApplied = "config.applied"
        case configRejected = "config.rejected"
        case firmwareProgress = "firmware.progress"
        case outboxEvicted = "outbox.evicted"
        case outboxReset = "outbox.reset"
    }

    /// The event's `type`.
    public var type: EventType {
        switch self {
        case .sessionStarted: .sessionStarted
        case .sessionLevelChanged: .sessionLevelChanged
        case .sessionPaused: .sessionPaused
        case .sessionResumed: .sessionResumed
        case .sessionCompleted: .sessionCompleted
        case .sessionAborted: .sessionAborted
        case .safetyTrip: .safetyTrip
        case .configApplied: .configApplied
        case .configRejected: .configRejected
        case .firmwareProgress: .firmwareProgress
        case .outboxEvicted: .outboxEvicted
        case .outboxReset: .outboxReset
        }
    }

    /// Decodes the body for a `type` read from the envelope.
    init(type text: String, bodyFrom decoder: any Decoder) throws {
        guard let type = EventType(rawValue: text) else {
            throw ProtocolError(
                .unknownEventType, path: "type", "\(Identifier.describe(text)) is not an event type of the contract")
        }
        switch type {
        case .sessionStarted: self = .sessionStarted(try SessionStarted(from: decoder))
        case .sessionLevelChanged: self = .sessionLevelChanged(try LevelChanged(from: decoder))
        case .sessionPaused: self = .sessionPaused(try PauseChange(from: decoder))
        case .sessionResumed: self = .sessionResumed(try PauseChange(from: decoder))
        case .sessionCompleted: self = .sessionCompleted(try SessionSummary(from: decoder))
        case .sessionAborted:
            let summary = try SessionSummary(from: decoder)
            guard summary.reason != nil else {
                throw ProtocolError(.missingField, path: "body.reason", "session.aborted needs a 'reason'")
            }
            self = .sessionAborted(summary)
        case .safetyTrip: self = .safetyTrip(try SafetyTrip(from: decoder))
        case .configApplied: self = .configApplied(try ConfigOutcome(from: decoder))
        case .configRejected: self = .configRejected(try ConfigOutcome(from: decoder))
        case .firmwareProgress: self = .firmwareProgress(try FirmwareProgress(from: decoder))
        case .outboxEvicted: self = .outboxEvicted(try OutboxEvicted(from: decoder))
        case .outboxReset: self = .outboxReset(try OutboxReset(from: decoder))
        }
    }

    func encodeBody(to encoder: any Encoder) throws {
        switch self {
        case .sessionStarted(let body): try body.encode(to: encoder)
        case .sessionLevelChanged(let body): try body.encode(to: encoder)
        case .sessionPaused(let body), .sessionResumed(let body): try body.encode(to: encoder)
        case .sessionCompleted(let body), .sessionAborted(let body): try body.encode(to: encoder)
        case .safetyTrip(let body): try body.encode(to: encoder)
        case .configApplied(let body), .configRejected(let body): try body.encode(to: encoder)
        case .firmwareProgress(let body): try body.encode(to: encoder)
        case .outboxEvicted(let body): try body.encode(to: encoder)
        case .outboxReset(let body): try body.encode(to: encoder)
        }
    }
}

/// Where a wearer is in the regimen: daily for the first 8 weeks, then 1-3 times a week.
public enum RegimenPhase: String, Sendable, Codable, CaseIterable {
    case loading
    case maintenance
}

/// `session.started`.
public struct SessionStarted: Sendable, Equatable, Codable {
    public var sessionId: Identifier
    /// Strength level, 1-3.
    public var level: Int
    /// The calibration profile's version.
    public var profileVersion: String
    /// The channel ids the session will stimulate, in dwell order.
    public var channels: [String]
    /// The regimen phase on the day of the session.
    public var regimenPhase: RegimenPhase?
    /// The day of use, counted from the wearer's first session (day 1).
    public var regimenDay: Int?
    /// Who asked: `button`, or `local:uid=N` for the control socket (absent from older agents).
    public var requestedBy: String?

    public init(
        sessionId: Identifier, level: Int, profileVersion: String, channels: [String],
        regimenPhase: RegimenPhase? = nil, regimenDay: Int? = nil, requestedBy: String? = nil
    ) {
        self.requestedBy = requestedBy
        self.sessionId = sessionId
        self.level = level
        self.profileVersion = profileVersion
        self.channels = channels
        self.regimenPhase = regimenPhase
        self.regimenDay = regimenDay
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sessionId = try c.decode(Identifier.self, forKey: .sessionId)
        level = try c.decodeLevel(forKey: .level)
        profileVersion = try c.decode(String.self, forKey: .profileVersion)
        channels = try c.decode([String].self, forKey: .channels)
        regimenPhase = try c.decodeIfPresent(RegimenPhase.self, forKey: .regimenPhase)
        regimenDay = try c.decodeIfPresent(Int.self, forKey: .regimenDay)
        requestedBy = try c.decodeIfPresent(String.self, forKey: .requestedBy)
    }
}

/// `session.level_changed`.
public struct LevelChanged: Sendable, Equatable, Codable {
    public var sessionId: Identifier
    public var from: Int
    public var to: Int
    /// Who asked (`local:uid=N`); absent when the engine changed it itself.
    public var requestedBy: String?

    public init(sessionId: Identifier, from: Int, to: Int, requestedBy: String? = nil) {
        self.sessionId = sessionId
        self.from = from
        self.to = to
        self.requestedBy = requestedBy
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sessionId = try c.decode(Identifier.self, forKey: .sessionId)
        from = try c.decodeLevel(forKey: .from)
        to = try c.decodeLevel(forKey: .to)
        requestedBy = try c.decodeIfPresent(String.self, forKey: .requestedBy)
    }
}

/// `session.paused` and `session.resumed`.
public struct PauseChange: Sendable, Equatable, Codable {
    public var sessionId: Identifier
    /// Why: `contact_lost`, `user`, `short`, ...
    public var reason: String

    public init(sessionId: Identifier, reason: String) {
        self.sessionId = sessionId
        self.reason = reason
    }
}

/// Why a session ended early.
public struct AbortReason: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    public static let userStop = AbortReason(rawValue: "user_stop")
    public static let remoteStop = AbortReason(rawValue: "remote_stop")
    public static let safetyTrip = AbortReason(rawValue: "safety_trip")
    public static let headbandLost = AbortReason(rawValue: "headband_lost")
    public static let batteryLow = AbortReason(rawValue: "battery_low")
    public static let agentShutdown = AbortReason(rawValue: "agent_shutdown")
    public static let agentRestart = AbortReason(rawValue: "agent_restart")

    /// The reasons the contract names.
    public static let known: [AbortReason] = [
        .userStop, .remoteStop, .safetyTrip, .headbandLost, .batteryLow, .agentShutdown, .agentRestart,
    ]

    public var description: String { rawValue }
}

/// `session.completed` and `session.aborted` (which adds `reason`).
public struct SessionSummary: Sendable, Equatable, Codable {
    public var sessionId: Identifier
    /// Wall time from start to end, seconds, pauses included.
    public var durationS: Double
    /// Seconds with current flowing (ramps included, pauses excluded).
    public var stimulatingS: Double
    /// Stimulating seconds per level: keys "1", "2", "3".
    public var levelSeconds: [String: Double]
    /// How many times the session paused.
    public var pauses: Int
    /// Absolute charge delivered per channel id, microcoulombs.
    public var chargeMicroCoulombs: [String: Double]
    /// Why the session ended early; nil for `session.completed`.
    public var reason: AbortReason?
    public var regimenPhase: RegimenPhase?
    public var regimenDay: Int?
    /// Who asked for the stop, for `user_stop` (`button`, `local:uid=N`) and `remote_stop`
    /// (`remote`).
    public var requestedBy: String?

    public init(
        sessionId: Identifier, durationS: Double, stimulatingS: Double, levelSeconds: [String: Double],
        pauses: Int, chargeMicroCoulombs: [String: Double], reason: AbortReason? = nil,
        regimenPhase: RegimenPhase? = nil, regimenDay: Int? = nil, requestedBy: String? = nil
    ) {
        self.requestedBy = requestedBy
        self.sessionId = sessionId
        self.durationS = durationS
        self.stimulatingS = stimulatingS
        self.levelSeconds = levelSeconds
        self.pauses = pauses
        self.chargeMicroCoulombs = chargeMicroCoulombs
        self.reason = reason
        self.regimenPhase = regimenPhase
        self.regimenDay = regimenDay
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sessionId = try c.decode(Identifier.self, forKey: .sessionId)
        durationS = try c.decodeNonNegative(forKey: .durationS)
        stimulatingS = try c.decodeNonNegative(forKey: .stimulatingS)
        levelSeconds = try c.decodeMap(of: Double.self, forKey: .levelSeconds)
        for key in levelSeconds.keys.sorted() where !["1", "2", "3"].contains(key) {
            throw ProtocolError(
                .invalidValue, path: "body.levelSeconds", "level key \(Identifier.describe(key)) is not 1, 2 or 3")
        }
        pauses = try c.decode(Int.self, forKey: .pauses)
        chargeMicroCoulombs = try c.decodeMap(of: Double.self, forKey: .chargeMicroCoulombs)
        reason = try c.decodeIfPresent(AbortReason.self, forKey: .reason)
        regimenPhase = try c.decodeIfPresent(RegimenPhase.self, forKey: .regimenPhase)
        regimenDay = try c.decodeIfPresent(Int.self, forKey: .regimenDay)
        requestedBy = try c.decodeIfPresent(String.self, forKey: .requestedBy)
    }
}

/// `safety.trip`: the safety monitor stopped output.
public struct SafetyTrip: Sendable, Equatable, Codable {
    public var sessionId: Identifier?
    /// The rule that tripped, e.g. `peak_current`, `charge_balance`, `vibration_speed`.
    public var rule: String
    /// The channel id, when the rule is about one channel.
    public var channel: String?
    /// The measured value, in the rule's unit.
    public var value: Double
    /// The limit it crossed, in the same unit.
    public var limit: Double

    public init(sessionId: Identifier?, rule: String, channel: String?, value: Double, limit: Double) {
        self.sessionId = sessionId
        self.rule = rule
        self.channel = channel
        self.value = value
        self.limit = limit
    }
}

/// `config.applied` and `config.rejected`.
public struct ConfigOutcome: Sendable, Equatable, Codable {
    /// `gateway`, `group:NAME` or `all`.
    public var layer: String
    public var version: Int
    /// Why it was rejected (nil when applied).
    public var reason: String?

    public init(layer: String, version: Int, reason: String? = nil) {
        self.layer = layer
        self.version = version
        self.reason = reason
    }
}

/// `firmware.progress`.
public struct FirmwareProgress: Sendable, Equatable, Codable {
    /// The stages of a firmware install, in order (`rejected`, `failed` and `rolled_back` end it).
    public enum Stage: String, Sendable, Codable, CaseIterable {
        case received, rejected, downloading, verified, installing, installed, failed
        case rolledBack = "rolled_back"
    }

    public var version: String
    public var stage: Stage
    public var detail: String?

    public init(version: String, stage: Stage, detail: String? = nil) {
        self.version = version
        self.stage = stage
        self.detail = detail
    }
}

/// `outbox.evicted`: messages dropped under storage pressure.
public struct OutboxEvicted: Sendable, Equatable, Codable {
    /// `telemetry`, `event` or `state`.
    public var `class`: String
    public var count: Int
    public var bytes: Int

    public init(class: String, count: Int, bytes: Int) {
        self.class = `class`
        self.count = count
        self.bytes = bytes
    }
}

/// `outbox.reset`: the outbox database was unreadable, moved aside and started anew (new epoch).
public struct OutboxReset: Sendable, Equatable, Codable {
    public var reason: String
    /// The epoch of the database that was moved aside, when it could be read.
    public var previousEpoch: String?
    /// Where the old file was moved.
    public var movedTo: String?

    public init(reason: String, previousEpoch: String? = nil, movedTo: String? = nil) {
        self.reason = reason
        self.previousEpoch = previousEpoch
        self.movedTo = movedTo
    }
}

extension KeyedDecodingContainer {
    func decodeLevel(forKey key: Key) throws -> Int {
        // Read as a number first so that 2.5 is "not a level" rather than "not JSON".
        let number = try decode(Double.self, forKey: key)
        guard number.rounded() == number, (1...3).contains(number) else {
            throw ProtocolError(
                .invalidValue, path: (codingPath + [key]).dottedPath, "level \(Self.format(number)) is not 1, 2 or 3")
        }
        return Int(number)
    }

    static func format(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }

    func decodeNonNegative(forKey key: Key) throws -> Double {
        let value = try decode(Double.self, forKey: key)
        guard value.isFinite, value >= 0 else {
            throw ProtocolError(
                .invalidValue, path: (codingPath + [key]).dottedPath, "\(value) must be a finite number >= 0")
        }
        return value
    }
}
