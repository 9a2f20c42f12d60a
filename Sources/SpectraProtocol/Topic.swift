/// One topic of the wire contract, `spectra/v1/{fleet}/...`.
///
/// Build topics from this type and parse every received topic with ``Topic/init(parsing:)``:
/// the grammar is closed, so anything that is not exactly one of these cases (wrong root,
/// bad id, an extra or missing level, a wildcard) is refused.
public enum Topic: Sendable, Hashable, CustomStringConvertible {
    /// Retained birth / Will: `gw/{gw}/status`.
    case status(fleet: Identifier, gateway: Identifier)
    /// Session and system events: `gw/{gw}/event`.
    case event(fleet: Identifier, gateway: Identifier)
    /// Periodic measurements: `gw/{gw}/telemetry`.
    case telemetry(fleet: Identifier, gateway: Identifier)
    /// Retained reported state: `gw/{gw}/state`.
    case state(fleet: Identifier, gateway: Identifier)
    /// Signed config for one gateway: `gw/{gw}/cmd/config`.
    case gatewayConfig(fleet: Identifier, gateway: Identifier)
    /// Signed config for a group: `group/{group}/cmd/config`.
    case groupConfig(fleet: Identifier, group: Identifier)
    /// Signed config for the whole fleet: `all/cmd/config`.
    case fleetConfig(fleet: Identifier)
    /// Signed firmware manifest: `gw/{gw}/cmd/firmware`.
    case firmware(fleet: Identifier, gateway: Identifier)
    /// Emergency stop: `gw/{gw}/cmd/stop`.
    case stop(fleet: Identifier, gateway: Identifier)
    /// Ask the gateway to republish status and state: `gw/{gw}/cmd/rebirth`.
    case rebirth(fleet: Identifier, gateway: Identifier)
    /// Retained fleet summary: `stats/summary`.
    case statsSummary(fleet: Identifier)
    /// Retained per-gateway summary: `stats/gw/{gw}`.
    case statsGateway(fleet: Identifier, gateway: Identifier)

    /// The first two levels of every topic.
    public static let root = "spectra/v1"

    /// The longest topic this parser looks at, in bytes (the longest valid one is far shorter).
    public static let maxLength = 512

    /// The fleet the topic belongs to.
    public var fleet: Identifier {
        switch self {
        case .status(let fleet, _), .event(let fleet, _), .telemetry(let fleet, _), .state(let fleet, _),
            .gatewayConfig(let fleet, _), .groupConfig(let fleet, _), .fleetConfig(let fleet),
            .firmware(let fleet, _), .stop(let fleet, _), .rebirth(let fleet, _),
            .statsSummary(let fleet), .statsGateway(let fleet, _):
            fleet
        }
    }

    /// The gateway the topic is about, if any.
    public var gateway: Identifier? {
        switch self {
        case .status(_, let gw), .event(_, let gw), .telemetry(_, let gw), .state(_, let gw),
            .gatewayConfig(_, let gw), .firmware(_, let gw), .stop(_, let gw), .rebirth(_, let gw),
            .statsGateway(_, let gw):
            gw
        case .groupConfig, .fleetConfig, .statsSummary:
            nil
        }
    }

    /// The topic string.
    public var path: String {
        let base = "\(Self.root)/\(fleet.rawValue)"
        switch self {
        case .status(_, let gw): return "\(base)/gw/\(gw)/status"
        case .event(_, let gw): return "\(base)/gw/\(gw)/event"
        case .telemetry(_, let gw): return "\(base)/gw/\(gw)/telemetry"
        case .state(_, let gw): return "\(base)/gw/\(gw)/state"
        case .gatewayConfig(_, let gw): return "\(base)/gw/\(gw)/cmd/config"
        case .groupConfig(_, let group): return "\(base)/group/\(group)/cmd/config"
        case .fleetConfig: return "\(base)/all/cmd/config"
        case .firmware(_, let gw): return "\(base)/gw/\(gw)/cmd/firmware"
        case .stop(_, let gw): return "\(base)/gw/\(gw)/cmd/stop"
        case .rebirth(_, let gw): return "\(base)/gw/\(gw)/cmd/rebirth"
        case .statsSummary: return "\(base)/stats/summary"
        case .statsGateway(_, let gw): return "\(base)/stats/gw/\(gw)"
        }
    }

    public var description: String { path }

    /// Parses a received topic.
    /// - Throws: ``ProtocolError`` with code `invalidTopic` (wrong root, unknown or extra levels,
    ///   over ``maxLength``) or `invalidIdentifier` (a fleet, gateway or group id that breaks
    ///   the id grammar, such as one holding `+`, `#` or a NUL byte).
    public init(parsing topic: String) throws(ProtocolError) {
        guard topic.utf8.count <= Self.maxLength else {
            throw ProtocolError(.invalidTopic, path: "topic", "topic is longer than \(Self.maxLength) bytes")
        }
        // The levels are byte ranges of the topic's UTF-8, split on the byte '/' as MQTT splits
        // them, and compared byte for byte: it is parsed once per message the aggregator reads
        // (as Substrings, with an array of them and String comparisons, it was a sixth of
        // parsing a telemetry message).
        var text = topic
        let parsed = text.withUTF8 { bytes in Result { () throws(ProtocolError) -> Topic? in try Self.parse(bytes, topic) } }
        if let parsed = try parsed.get() {
            self = parsed
            return
        }
        throw ProtocolError(
            .invalidTopic, path: "topic", "\(Identifier.describe(topic)) is not a topic of the spectra/v1 contract")
    }

    /// The contract topic `bytes` spell, nil when they spell none; `topic` is for messages.
    private static func parse(_ bytes: UnsafeBufferPointer<UInt8>, _ topic: String) throws(ProtocolError) -> Topic? {
        // The contract's topics have seven levels at most (`spectra/v1/{fleet}/gw/{gw}/cmd/config`):
        // the first seven are kept, the rest only counted.
        var levels = InlineArray<7, Range<Int>>(repeating: 0..<0)
        var count = 0
        var start = 0
        for position in 0...bytes.count where position == bytes.count || bytes[position] == UInt8(ascii: "/") {
            if count < levels.count { levels[count] = start..<position }
            count += 1
            start = position + 1
        }
        func level(_ index: Int) -> UnsafeBufferPointer<UInt8> {
            UnsafeBufferPointer(rebasing: bytes[levels[index]])
        }
        func level(_ index: Int, is word: StaticString) -> Bool {
            level(index).elementsEqual(UnsafeBufferPointer(start: word.utf8Start, count: word.utf8CodeUnitCount))
        }
        func id(_ index: Int, _ field: String) throws(ProtocolError) -> Identifier {
            try Identifier(String(decoding: level(index), as: UTF8.self), field: field)
        }
        guard count >= 4, level(0, is: "spectra"), level(1, is: "v1") else {
            throw ProtocolError(
                .invalidTopic, path: "topic",
                "\(Identifier.describe(topic)) does not start with '\(Self.root)/{fleet}/'")
        }
        let fleet = try id(2, "topic.fleet")
        switch count - 3 {
        case 2 where level(3, is: "stats") && level(4, is: "summary"):
            return .statsSummary(fleet: fleet)
        case 3 where level(3, is: "all") && level(4, is: "cmd") && level(5, is: "config"):
            return .fleetConfig(fleet: fleet)
        case 3 where level(3, is: "stats") && level(4, is: "gw"):
            return .statsGateway(fleet: fleet, gateway: try id(5, "topic.gateway"))
        case 3 where level(3, is: "gw"):
            let gw = try id(4, "topic.gateway")
            if level(5, is: "telemetry") { return .telemetry(fleet: fleet, gateway: gw) }
            if level(5, is: "event") { return .event(fleet: fleet, gateway: gw) }
            if level(5, is: "status") { return .status(fleet: fleet, gateway: gw) }
            if level(5, is: "state") { return .state(fleet: fleet, gateway: gw) }
        case 4 where level(3, is: "gw") && level(5, is: "cmd"):
            let gw = try id(4, "topic.gateway")
            if level(6, is: "config") { return .gatewayConfig(fleet: fleet, gateway: gw) }
            if level(6, is: "firmware") { return .firmware(fleet: fleet, gateway: gw) }
            if level(6, is: "stop") { return .stop(fleet: fleet, gateway: gw) }
            if level(6, is: "rebirth") { return .rebirth(fleet: fleet, gateway: gw) }
        case 4 where level(3, is: "group") && level(5, is: "cmd") && level(6, is: "config"):
            return .groupConfig(fleet: fleet, group: try id(4, "topic.group"))
        default:
            break
        }
        return nil
    }
}

/// Subscription filters (with MQTT wildcards) for the contract's topics.
public enum TopicFilter {
    /// Everything gateways of `fleet` publish of one leaf: `spectra/v1/{fleet}/gw/+/{leaf}`.
    /// `leaf` is `status`, `event`, `telemetry` or `state`.
    public static func allGateways(fleet: Identifier, leaf: String) -> String {
        "\(Topic.root)/\(fleet)/gw/+/\(leaf)"
    }

    /// The same filter across every fleet: `spectra/v1/+/gw/+/{leaf}`.
    public static func allFleets(leaf: String) -> String {
        "\(Topic.root)/+/gw/+/\(leaf)"
    }

    /// Every command for one gateway: `spectra/v1/{fleet}/gw/{gw}/cmd/+`.
    public static func commands(fleet: Identifier, gateway: Identifier) -> String {
        "\(Topic.root)/\(fleet)/gw/\(gateway)/cmd/+"
    }

    /// A shared-subscription form of `filter`: `$share/{group}/{filter}` (MQTT 5).
    public static func shared(group: String, _ filter: String) -> String {
        "$share/\(group)/\(filter)"
    }
}
