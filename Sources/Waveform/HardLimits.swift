/// The engine's hard limits (docs/safety.md). No profile or remote config can
/// loosen them; a value beyond one is rejected, never clamped silently.
public enum HardLimits {
    /// Rule 1: peak current on any channel, microamps.
    public static let maxPeakMicroAmps = 1000.0
    /// Pulse-pair frequency range, hertz.
    public static let frequencyRangeHz = 0.5...50.0
    /// Rule 2: mean current over any window of whole pulse periods of at least 1 s, microamps.
    public static let maxMeanMicroAmps = 5.0
    /// Rule 5: impedance above which contact counts as lost, ohms.
    public static let liftOffOhms = 50_000.0
    /// Rule 5: impedance below which the electrodes count as shorted, ohms.
    public static let shortOhms = 300.0
    /// Rule 5: pulses in a row at the compliance limit that count as lost contact.
    public static let compliancePulsesForPause = 2
    /// Rule 5: stable contact needed before resuming, seconds.
    public static let stableContactSeconds = 1.0
    /// Rule 6: stimulation per session, seconds.
    public static let maxSessionSeconds = 900.0
    /// Rule 7: allowed vibration speed while stimulating at level 3, rpm.
    public static let vibrationRangeRpm = 7200.0...8800.0
    /// Rule 7: how long the motor may be out of range before it is a fault, seconds.
    public static let vibrationFaultSeconds = 2.0
    /// The level that adds vibration (rule 7).
    public static let vibrationLevel = 3
    /// Battery level below which a session is stopped, percent.
    public static let batteryStopPct = 5.0

    /// Muscles a channel may sit on: the lateral lifting muscles.
    public static let allowedMuscles: Set<String> = [
        "frontalis_lateral", "zygomaticus_major", "zygomaticus_minor", "levator_labii_superioris", "levator_anguli_oris",
    ]

    /// Rule 3: muscles no channel may ever stimulate.
    public static let forbiddenMuscles: Set<String> = [
        "depressor_labii_inferioris", "depressor_anguli_oris", "depressor_supercilii", "corrugator_supercilii",
        "procerus", "orbicularis_oculi", "mentalis",
    ]
}

/// One of the eight hard rules, named as in `safety.trip` events.
public enum SafetyRule: String, Sendable, Hashable, CaseIterable, Codable {
    /// Rule 1.
    case peakCurrent = "peak_current"
    /// Rule 2: running net charge above one phase's charge.
    case chargeBalance = "charge_balance"
    /// Rule 2: mean current over a 1 s window above 5 uA.
    case dcMean = "dc_mean"
    /// Rule 3.
    case forbiddenChannel = "forbidden_channel"
    /// Rule 4.
    case singleChannel = "single_channel"
    /// Rule 5: electrodes shorted.
    case short
    /// Rule 6.
    case sessionLimit = "session_limit"
    /// Rule 7.
    case vibration = "vibration_speed"
    /// Rule 8.
    case levelLock = "level_lock"
    /// Battery too low to continue.
    case batteryLow = "battery_low"
    /// A measurement that is not a number, negative where it cannot be, or missing.
    case invalidMeasurement = "invalid_measurement"
    /// A segment outside the waveform's shape (frequency, phase width).
    case waveformShape = "waveform_shape"

    /// The rule's number in docs/safety.md, when it has one.
    public var number: Int? {
        switch self {
        case .peakCurrent: 1
        case .chargeBalance, .dcMean: 2
        case .forbiddenChannel: 3
        case .singleChannel: 4
        case .short: 5
        case .sessionLimit: 6
        case .vibration: 7
        case .levelLock: 8
        case .batteryLow, .invalidMeasurement, .waveformShape: nil
        }
    }
}

/// A profile or configuration value refused by the hard rules, with the rule and the value.
public struct WaveformError: Error, Sendable, Hashable, CustomStringConvertible {
    public var rule: SafetyRule
    /// Where: `channels[3].muscle`, `levels[2].peakMicroAmps`, ...
    public var path: String
    public var reason: String

    public init(_ rule: SafetyRule, path: String, _ reason: String) {
        self.rule = rule
        self.path = path
        self.reason = reason
    }

    public var description: String {
        let number = rule.number.map { "rule \($0), " } ?? ""
        return "\(path): \(reason) (\(number)\(rule.rawValue))"
    }
}
