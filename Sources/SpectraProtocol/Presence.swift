import Foundation

/// The retained `status` payload: the birth published on every connect, and the MQTT Will
/// (`online: false`) the broker publishes when the agent vanishes.
public struct GatewayStatus: Sendable, Equatable, Codable {
    public var online: Bool
    /// The agent start this status belongs to; a Will carries the boot it was set for.
    public var boot: UUID
    public var ts: Date
    /// The agent's version, when known.
    public var agentVersion: String?
    /// Why the gateway went offline (`shutdown`, `lost`), for offline statuses.
    public var reason: String?

    public init(online: Bool, boot: UUID, ts: Date, agentVersion: String? = nil, reason: String? = nil) {
        self.online = online
        self.boot = boot
        self.ts = ts
        self.agentVersion = agentVersion
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey { case online, boot, ts, agentVersion, reason }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        online = try c.decode(Bool.self, forKey: .online)
        boot = try c.decodeUUID(forKey: .boot)
        ts = try c.decode(Date.self, forKey: .ts)
        agentVersion = try c.decodeIfPresent(String.self, forKey: .agentVersion)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        try WireRanges.check(self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(online, forKey: .online)
        try c.encode(boot.wireString, forKey: .boot)
        try c.encode(ts, forKey: .ts)
        try c.encodeIfPresent(agentVersion, forKey: .agentVersion)
        try c.encodeIfPresent(reason, forKey: .reason)
    }
}

/// The retained `state` payload: what the gateway has applied.
public struct ReportedState: Sendable, Equatable, Codable {
    /// The level limits in force for the wearer.
    public struct LevelLimits: Sendable, Equatable, Codable {
        /// The remote cap (`maxLevel` of the merged config).
        public var maxLevel: Int
        /// The highest level the wearer has unlocked by completed sessions.
        public var unlockedLevel: Int
        /// Completed sessions so far.
        public var completedSessions: Int

        public init(maxLevel: Int, unlockedLevel: Int, completedSessions: Int) {
            self.maxLevel = maxLevel
            self.unlockedLevel = unlockedLevel
            self.completedSessions = completedSessions
        }
    }

    public var boot: UUID
    public var ts: Date
    public var agentVersion: String
    /// The headband firmware version running now.
    public var firmware: String
    /// Applied config version per layer: keys `all`, `group:NAME`, `gateway`.
    public var configVersions: [String: Int]
    public var levelLimits: LevelLimits
    /// The group names this gateway listens to.
    public var groups: [String]
    /// Messages the broker refused that the outbox holds set aside (absent when none).
    public var outboxRefused: Int?
    /// The broker's last refusal, in words (absent when none since the agent started).
    public var lastRefusal: String?

    public init(
        boot: UUID, ts: Date, agentVersion: String, firmware: String, configVersions: [String: Int],
        levelLimits: LevelLimits, groups: [String], outboxRefused: Int? = nil, lastRefusal: String? = nil
    ) {
        self.outboxRefused = outboxRefused
        self.lastRefusal = lastRefusal
        self.boot = boot
        self.ts = ts
        self.agentVersion = agentVersion
        self.firmware = firmware
        self.configVersions = configVersions
        self.levelLimits = levelLimits
        self.groups = groups
    }

    enum CodingKeys: String, CodingKey {
        case boot, ts, agentVersion, firmware, configVersions, levelLimits, groups, outboxRefused, lastRefusal
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        boot = try c.decodeUUID(forKey: .boot)
        ts = try c.decode(Date.self, forKey: .ts)
        agentVersion = try c.decode(String.self, forKey: .agentVersion)
        firmware = try c.decode(String.self, forKey: .firmware)
        configVersions = try c.decodeMap(of: Int.self, forKey: .configVersions)
        levelLimits = try c.decode(LevelLimits.self, forKey: .levelLimits)
        groups = try c.decodeIfPresent([String].self, forKey: .groups) ?? []
        outboxRefused = try c.decodeIfPresent(Int.self, forKey: .outboxRefused)
        lastRefusal = try c.decodeIfPresent(String.self, forKey: .lastRefusal)
        try WireRanges.check(self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(boot.wireString, forKey: .boot)
        try c.encode(ts, forKey: .ts)
        try c.encode(agentVersion, forKey: .agentVersion)
        try c.encode(firmware, forKey: .firmware)
        try c.encode(configVersions, forKey: .configVersions)
        try c.encode(levelLimits, forKey: .levelLimits)
        try c.encode(groups, forKey: .groups)
        try c.encodeIfPresent(outboxRefused, forKey: .outboxRefused)
        try c.encodeIfPresent(lastRefusal, forKey: .lastRefusal)
    }
}

/// The `cmd/stop` payload. An agent stops on any message on that topic, whatever its payload;
/// the reason is for the record.
public struct StopCommand: Sendable, Equatable, Codable {
    public var reason: String

    public init(reason: String) { self.reason = reason }

    /// The longest reason kept, in characters; longer ones are cut.
    public static let maxReasonLength = 200

    /// Reads a stop command leniently: a stop must never be refused for its wording.
    public static func lenient(_ data: Data) -> StopCommand {
        let reason = (try? WireFormat.decode(StopCommand.self, from: data))?.reason ?? "unspecified"
        return StopCommand(reason: String(reason.prefix(maxReasonLength)))
    }
}
