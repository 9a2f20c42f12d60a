/// What the headband measured over one pulse pair.
public struct PulseReport: Sendable, Hashable {
    public var channelIndex: Int
    /// Headband clock at the start of the pair, seconds.
    public var timeS: Double
    /// Signed current of the first phase, microamps.
    public var firstPhaseMicroAmps: Double
    /// Signed current of the second phase, microamps.
    public var secondPhaseMicroAmps: Double
    /// Phase width, seconds.
    public var phaseS: Double
    /// Time from this pair to the next, seconds.
    public var periodS: Double
    /// Largest electrode voltage in the pair, volts.
    public var peakVolts: Double
    /// Electrode impedance seen by the pair, ohms.
    public var impedanceOhms: Double
    /// Whether the current source hit its compliance voltage.
    public var atCompliance: Bool

    public init(
        channelIndex: Int, timeS: Double, firstPhaseMicroAmps: Double, secondPhaseMicroAmps: Double, phaseS: Double,
        periodS: Double, peakVolts: Double, impedanceOhms: Double, atCompliance: Bool
    ) {
        self.channelIndex = channelIndex
        self.timeS = timeS
        self.firstPhaseMicroAmps = firstPhaseMicroAmps
        self.secondPhaseMicroAmps = secondPhaseMicroAmps
        self.phaseS = phaseS
        self.periodS = periodS
        self.peakVolts = peakVolts
        self.impedanceOhms = impedanceOhms
        self.atCompliance = atCompliance
    }

    /// Net charge of the pair, microcoulombs (0 for a balanced pair).
    public var netMicroCoulombs: Double { (firstPhaseMicroAmps + secondPhaseMicroAmps) * phaseS }
    /// The larger phase magnitude, microamps.
    public var peakMicroAmps: Double { max(abs(firstPhaseMicroAmps), abs(secondPhaseMicroAmps)) }
}

/// A button gesture on the headband.
public enum ButtonPress: Sendable, Hashable {
    /// A short press: start when idle, next level during a session.
    case short
    /// A long press: stop.
    case long
}

/// The headband's periodic status.
public struct HeadbandStatus: Sendable, Hashable {
    /// Headband clock, seconds.
    public var timeS: Double
    public var batteryPct: Double
    public var vibrationRpm: Double
    public var temperatureC: Double
    /// Contact impedance of the channel in use (measured with a tiny probe current when idle), ohms.
    public var contactImpedanceOhms: Double
    /// Gestures since the last status.
    public var buttons: [ButtonPress]
    /// Whether the headband link is up.
    public var connected: Bool
    /// The headband firmware version.
    public var firmware: String

    public init(
        timeS: Double, batteryPct: Double, vibrationRpm: Double, temperatureC: Double, contactImpedanceOhms: Double,
        buttons: [ButtonPress] = [], connected: Bool = true, firmware: String = "2.4.0"
    ) {
        self.timeS = timeS
        self.batteryPct = batteryPct
        self.vibrationRpm = vibrationRpm
        self.temperatureC = temperatureC
        self.contactImpedanceOhms = contactImpedanceOhms
        self.buttons = buttons
        self.connected = connected
        self.firmware = firmware
    }
}
