/// The body of an envelope with `kind: "telemetry"`: sent every 1 s in a session and every
/// 60 s idle (both configurable).
public struct Telemetry: Sendable, Equatable, Codable {
    /// One electrode channel's latest readings.
    public struct Channel: Sendable, Equatable, Codable {
        public var id: String
        public var peakMicroAmps: Double
        public var rmsMicroAmps: Double
        public var impedanceOhms: Double
        public var complianceVolts: Double
        /// Whether the electrodes touch skin well enough to stimulate.
        public var contact: Bool

        public init(
            id: String, peakMicroAmps: Double, rmsMicroAmps: Double, impedanceOhms: Double,
            complianceVolts: Double, contact: Bool
        ) {
            self.id = id
            self.peakMicroAmps = peakMicroAmps
            self.rmsMicroAmps = rmsMicroAmps
            self.impedanceOhms = impedanceOhms
            self.complianceVolts = complianceVolts
            self.contact = contact
        }
    }

    /// The agent's own health.
    public struct Agent: Sendable, Equatable, Codable {
        /// Messages waiting in the outbox.
        public var outboxDepth: Int
        /// Bytes the outbox holds.
        public var outboxBytes: Int
        /// Age of the oldest message not yet acknowledged by the broker, seconds.
        public var oldestUnackedS: Double
        /// Broker reconnects since the agent started.
        public var reconnects: Int
        /// Resident memory, KiB.
        public var rssKiB: Int
        /// Messages the broker refused, set aside in the outbox (absent when none).
        public var outboxRefused: Int?

        public init(outboxDepth: Int, outboxBytes: Int, oldestUnackedS: Double, reconnects: Int, rssKiB: Int, outboxRefused: Int? = nil) {
            self.outboxDepth = outboxDepth
            self.outboxBytes = outboxBytes
            self.oldestUnackedS = oldestUnackedS
            self.reconnects = reconnects
            self.rssKiB = rssKiB
            self.outboxRefused = outboxRefused
        }
    }

    public var sessionId: Identifier?
    public var level: Int?
    public var elapsedS: Double?
    public var channels: [Channel]
    public var vibrationRpm: Double?
    public var batteryPct: Double
    public var headbandTempC: Double
    public var agent: Agent

    enum CodingKeys: String, CodingKey {
        case sessionId, level, elapsedS, channels, vibrationRpm, batteryPct, headbandTempC, agent
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        sessionId = try c.decodeIfPresent(Identifier.self, forKey: .sessionId)
        level = try c.decodeIfPresent(Int.self, forKey: .level)
        elapsedS = try c.decodeIfPresent(Double.self, forKey: .elapsedS)
        if decoder.userInfo[WireFormat.skipTelemetryChannels] as? Bool == true {
            // A reader that does not use per-channel readings (the aggregator) only checks
            // that the field is there.
            guard c.contains(.channels) else {
                throw DecodingError.keyNotFound(CodingKeys.channels, .init(codingPath: c.codingPath, debugDescription: "missing"))
            }
            channels = []
        } else {
            channels = try c.decode([Channel].self, forKey: .channels)
        }
        vibrationRpm = try c.decodeIfPresent(Double.self, forKey: .vibrationRpm)
        batteryPct = try c.decode(Double.self, forKey: .batteryPct)
        headbandTempC = try c.decode(Double.self, forKey: .headbandTempC)
        agent = try c.decode(Agent.self, forKey: .agent)
    }

    public init(
        sessionId: Identifier? = nil, level: Int? = nil, elapsedS: Double? = nil, channels: [Channel],
        vibrationRpm: Double? = nil, batteryPct: Double, headbandTempC: Double, agent: Agent
    ) {
        self.sessionId = sessionId
        self.level = level
        self.elapsedS = elapsedS
        self.channels = channels
        self.vibrationRpm = vibrationRpm
        self.batteryPct = batteryPct
        self.headbandTempC = headbandTempC
        self.agent = agent
    }
}
