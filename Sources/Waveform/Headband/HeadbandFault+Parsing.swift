/// A fault from a test or demo script, and which clock its time is on.
public struct ScriptedFault: Sendable, Hashable {
    public var fault: HeadbandFault
    /// Whether the time counts from the start of each session (`liftoff@session+400+3`), so the
    /// fault plays in every session, rather than once on the headband's own clock.
    public var perSession: Bool

    public init(fault: HeadbandFault, perSession: Bool = false) {
        self.fault = fault
        self.perSession = perSession
    }

    /// Parses `KIND@SECONDS[+DURATION][:VALUE]` (see ``HeadbandFault/init(script:)``), or
    /// `KIND@session+SECONDS[+DURATION][:VALUE]` for a fault timed from each session's start.
    /// - Returns: nil when the text is neither.
    public init?(script text: String) {
        let marker = "@session+"
        if let range = text.range(of: marker) {
            guard let fault = HeadbandFault(script: text.replacingCharacters(in: range, with: "@")) else { return nil }
            self.fault = fault
            self.perSession = true
        } else {
            guard let fault = HeadbandFault(script: text) else { return nil }
            self.fault = fault
            self.perSession = false
        }
    }
}

extension HeadbandFault {
    /// Parses a scripted fault for the simulated headband, `KIND@SECONDS[+DURATION][:VALUE]`, times on
    /// the headband's own clock:
    /// `liftoff@120+3` (all channels), `short@200`, `battery@300:4` (drop to 4 %), `stall@60+10`,
    /// `press@30` (short press), `longpress@400`, `disconnect@500`, `nan@90`, `imbalance@100:0.2`,
    /// `fwfail@0` (firmware installs fail and roll back).
    /// - Returns: nil when the text is not one of these.
    public init?(script text: String) {
        let parts = text.split(separator: "@", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        var rest = Substring(parts[1])
        var value: Double?
        if let colon = rest.firstIndex(of: ":") {
            value = Double(rest[rest.index(after: colon)...])
            rest = rest[..<colon]
        }
        var duration: Double?
        if let plus = rest.firstIndex(of: "+") {
            duration = Double(rest[rest.index(after: plus)...])
            rest = rest[..<plus]
        }
        guard let at = Double(rest), at.isFinite, at >= 0 else { return nil }
        switch parts[0] {
        case "liftoff": self = .liftOff(channel: nil, atS: at, durationS: duration ?? 3)
        case "short": self = .short(channel: Int(value ?? 0), atS: at)
        case "battery": self = .batteryDrop(atS: at, pct: value ?? 3)
        case "stall": self = .motorStall(atS: at, durationS: duration ?? 10)
        case "press": self = .button(atS: at, .short)
        case "longpress": self = .button(atS: at, .long)
        case "disconnect": self = .disconnect(atS: at)
        case "nan": self = .invalidReadings(atS: at)
        case "imbalance": self = .imbalance(atS: at, fraction: value ?? 0.2)
        case "fwfail": self = .firmwareFailure(atS: at)
        default: return nil
        }
    }

    /// The same fault `seconds` later.
    public func shifted(by seconds: Double) -> HeadbandFault {
        switch self {
        case .liftOff(let channel, let at, let duration): .liftOff(channel: channel, atS: at + seconds, durationS: duration)
        case .short(let channel, let at): .short(channel: channel, atS: at + seconds)
        case .batteryDrop(let at, let pct): .batteryDrop(atS: at + seconds, pct: pct)
        case .motorStall(let at, let duration): .motorStall(atS: at + seconds, durationS: duration)
        case .button(let at, let press): .button(atS: at + seconds, press)
        case .disconnect(let at): .disconnect(atS: at + seconds)
        case .invalidReadings(let at): .invalidReadings(atS: at + seconds)
        case .imbalance(let at, let fraction): .imbalance(atS: at + seconds, fraction: fraction)
        case .firmwareFailure(let at): .firmwareFailure(atS: at + seconds)
        }
    }
}
