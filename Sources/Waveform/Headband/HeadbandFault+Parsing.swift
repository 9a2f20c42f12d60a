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
}
