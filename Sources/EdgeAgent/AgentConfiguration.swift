import SpectraConfig
import SpectraProtocol
import Waveform

/// Everything `spectra-agent run` needs to know, with a documented default for each setting.
/// `Config/agent.yaml` is the commented reference for every key.
public struct AgentConfiguration: Sendable, Equatable {
    /// How the outbox database trades speed for durability.
    public enum Durability: String, Sendable, CaseIterable {
        /// WAL with synchronous NORMAL: survives a process crash; a power cut may lose the last commits.
        case normal
        /// WAL with synchronous FULL: every commit is on disk before enqueue returns.
        case full
    }

    public var fleet: Identifier
    public var gateway: Identifier
    /// Groups whose `group/{name}/cmd/config` this gateway follows.
    public var groups: [Identifier]
    /// Where the agent keeps its databases and control socket.
    public var dataDirectory: String
    public var broker: BrokerConfiguration
    public var durability: Durability
    /// The outbox's byte cap.
    public var outboxMaxBytes: Int
    /// Free disk space the outbox always leaves.
    public var outboxMinFreeBytes: Int
    /// Telemetry interval during a session, seconds.
    public var telemetryIntervalSeconds: Double
    /// Telemetry interval when idle, seconds.
    public var idleTelemetryIntervalSeconds: Double
    /// The calibration profile (YAML).
    public var profilePath: String
    /// Completed sessions allowed per calendar day.
    public var maxSessionsPerDay: Int
    /// Public key files (PEM) whose signatures on config and firmware documents are trusted.
    public var trustedKeyFiles: [String]
    /// How much faster than real time sessions run: 1 on a gateway; more for demos and tests.
    public var timeScale: Double
    /// Whether the wall clock counts as synchronised (envelopes' `synced`, document expiry).
    public var clock: ClockTrust = .auto
    /// Faults the simulated headband plays (see `ScriptedFault(script:)`), for tests and demos.
    public var headbandFaults: [String]
    /// Where the headband is: `simulated` (in this process), or the path of its serial port
    /// (a USB dock such as /dev/ttyACM0, or the emulator's pseudo-terminal).
    public var headbandPort = "simulated"
    /// How long the agent waits for the headband's reply before asking again (4 tries, then
    /// the link counts as lost), milliseconds.
    public var headbandReplyTimeoutMs = 250

    /// Creates a configuration; every parameter but the identity has a default.
    public init(
        fleet: Identifier, gateway: Identifier, groups: [Identifier] = [], dataDirectory: String = "var",
        broker: BrokerConfiguration = BrokerConfiguration(), durability: Durability = .normal,
        outboxMaxBytes: Int = 64 << 20, outboxMinFreeBytes: Int = 32 << 20,
        telemetryIntervalSeconds: Double = 1, idleTelemetryIntervalSeconds: Double = 60,
        profilePath: String = "Config/calibration/default.yaml", maxSessionsPerDay: Int = 1,
        trustedKeyFiles: [String] = [], timeScale: Double = 1, headbandFaults: [String] = []
    ) {
        self.fleet = fleet
        self.gateway = gateway
        self.groups = groups
        self.dataDirectory = dataDirectory
        self.broker = broker
        self.durability = durability
        self.outboxMaxBytes = outboxMaxBytes
        self.outboxMinFreeBytes = outboxMinFreeBytes
        self.telemetryIntervalSeconds = telemetryIntervalSeconds
        self.idleTelemetryIntervalSeconds = idleTelemetryIntervalSeconds
        self.profilePath = profilePath
        self.maxSessionsPerDay = maxSessionsPerDay
        self.trustedKeyFiles = trustedKeyFiles
        self.timeScale = timeScale
        self.headbandFaults = headbandFaults
    }

    /// Every key ``init(fields:defaultDataDirectory:)`` reads.
    public static let keys: Set<String> = BrokerConfiguration.keys.union([
        "fleet", "gateway", "groups", "dataDir",
        "outbox.durability", "outbox.maxBytes", "outbox.minFreeBytes",
        "telemetry.intervalS", "telemetry.idleIntervalS",
        "session.profile", "session.maxPerDay", "session.timeScale", "trust.keys", "headband.faults", "headband.port", "headband.replyTimeoutMs", "clock.synced",
    ])

    static func faults(_ fields: ConfigFields) throws(ConfigurationError) -> [String] {
        let list = fields.stringList("headband.faults", default: [])
        for item in list where ScriptedFault(script: item) == nil {
            throw ConfigurationError(
                file: fields.source, key: "headband.faults",
                problem: "'\(item)' is not a fault such as liftoff@120+3, short@200, battery@300:4, stall@60+10, press@30, longpress@400, or one timed from each session's start such as liftoff@session+400+3")
        }
        return list
    }

    /// Reads the agent's keys.
    /// - Parameter defaultDataDirectory: `/var/lib/spectra-agent` when installed (systemd's
    ///   `STATE_DIRECTORY`), `var` when run from the checkout.
    /// - Throws: ``ConfigurationError`` naming the key and the problem.
    public init(fields: ConfigFields, defaultDataDirectory: String = "var") throws(ConfigurationError) {
        func id(_ key: String, _ text: String) throws(ConfigurationError) -> Identifier {
            do {
                return try Identifier(text, field: key)
            } catch {
                throw ConfigurationError(file: fields.source, key: key, problem: error.reason)
            }
        }
        guard let fleetText = fields.raw("fleet") else {
            throw ConfigurationError(file: fields.source, key: "fleet", problem: "is required (the fleet this gateway belongs to)")
        }
        guard let gatewayText = fields.raw("gateway") else {
            throw ConfigurationError(file: fields.source, key: "gateway", problem: "is required (this gateway's id)")
        }
        var groups: [Identifier] = []
        for text in fields.stringList("groups", default: []) { groups.append(try id("groups", text)) }
        self.init(
            fleet: try id("fleet", fleetText),
            gateway: try id("gateway", gatewayText),
            groups: groups,
            dataDirectory: try fields.string("dataDir", default: defaultDataDirectory),
            broker: try BrokerConfiguration(fields: fields),
            durability: try fields.choice("outbox.durability", default: Durability.normal),
            outboxMaxBytes: try fields.int("outbox.maxBytes", default: 64 << 20, in: (1 << 20)...(1 << 40)),
            outboxMinFreeBytes: try fields.int("outbox.minFreeBytes", default: 32 << 20, in: 0...(1 << 40)),
            telemetryIntervalSeconds: try fields.double("telemetry.intervalS", default: 1, in: 0.1...3600),
            idleTelemetryIntervalSeconds: try fields.double("telemetry.idleIntervalS", default: 60, in: 1...86_400),
            profilePath: try fields.string("session.profile", default: "Config/calibration/default.yaml"),
            maxSessionsPerDay: try fields.int("session.maxPerDay", default: 1, in: 1...10),
            trustedKeyFiles: fields.stringList("trust.keys", default: []),
            timeScale: try fields.double("session.timeScale", default: 1, in: 1...100_000),
            headbandFaults: try Self.faults(fields))
        clock = try fields.choice("clock.synced", default: ClockTrust.auto)
        headbandPort = try fields.string("headband.port", default: "simulated")
        headbandReplyTimeoutMs = try fields.int("headband.replyTimeoutMs", default: 250, in: 50...5000)
        guard headbandPort == "simulated" || headbandPort.hasPrefix("/") else {
            throw ConfigurationError(
                file: fields.source, key: "headband.port",
                problem: "'\(headbandPort)' must be simulated or the absolute path of a serial port, such as /dev/ttyACM0")
        }
    }
}
