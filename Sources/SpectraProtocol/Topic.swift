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
        // Substrings of the received topic, split on the byte '/' as MQTT splits levels (not
        // on Characters, which costs a grapheme break per character): it is parsed once per
        // message the aggregator reads.
        let levels = topic.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false).map { Substring($0) }
        guard levels.count >= 4, levels[0] == "spectra", levels[1] == "v1" else {
            throw ProtocolError(
                .invalidTopic, path: "topic",
                "\(Identifier.describe(topic)) does not start with '\(Self.root)/{fleet}/'")
        }
        let fleet = try Identifier(String(levels[2]), field: "topic.fleet")
        let rest = levels[3...]
        let first = rest.startIndex
        func id(_ text: Substring, _ field: String) throws(ProtocolError) -> Identifier {
            try Identifier(String(text), field: field)
        }
        switch rest.count {
        case 2 where rest[first] == "stats" && rest[first + 1] == "summary":
            self = .statsSummary(fleet: fleet)
            return
        case 3 where rest[first] == "all" && rest[first + 1] == "cmd" && rest[first + 2] == "config":
            self = .fleetConfig(fleet: fleet)
            return
        case 3 where rest[first] == "stats" && rest[first + 1] == "gw":
            self = .statsGateway(fleet: fleet, gateway: try id(rest[first + 2], "topic.gateway"))
            return
        case 3 where rest[first] == "gw":
            let gw = try id(rest[first + 1], "topic.gateway")
            switch rest[first + 2] {
            case "status": self = .status(fleet: fleet, gateway: gw); return
            case "event": self = .event(fleet: fleet, gateway: gw); return
            case "telemetry": self = .telemetry(fleet: fleet, gateway: gw); return
            case "state": self = .state(fleet: fleet, gateway: gw); return
            default: break
            }
        case 4 where rest[first] == "gw" && rest[first + 2] == "cmd":
            let gw = try id(rest[first + 1], "topic.gateway")
            switch rest[first + 3] {
            case "config": self = .gatewayConfig(fleet: fleet, gateway: gw); return
            case "firmware": self = .firmware(fleet: fleet, gateway: gw); return
            case "stop": self = .stop(fleet: fleet, gateway: gw); return
            case "rebirth": self = .rebirth(fleet: fleet, gateway: gw); return
            default: break
            }
        case 4 where rest[first] == "group" && rest[first + 2] == "cmd" && rest[first + 3] == "config":
            self = .groupConfig(fleet: fleet, group: try id(rest[first + 1], "topic.group"))
            return
        default:
            break
        }
        throw ProtocolError(
            .invalidTopic, path: "topic", "\(Identifier.describe(topic)) is not a topic of the spectra/v1 contract")
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
