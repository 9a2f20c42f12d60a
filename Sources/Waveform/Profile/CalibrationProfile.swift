/// A calibration profile: the channels, the level table, vibration and level unlocks.
/// Loaded from YAML (`Config/calibration/default.yaml`) and validated against the hard rules
/// by ``validate()`` before any use.
public struct CalibrationProfile: Sendable, Hashable, Codable {
    /// One electrode channel.
    public struct Channel: Sendable, Hashable, Codable {
        public var id: String
        /// Target muscle, e.g. `zygomaticus_major`.
        public var muscle: String
        /// `left` or `right`.
        public var side: String
        /// The two electrode positions; each starts with `L-` or `R-`.
        public var electrodes: [String]
        /// Contact area of the smaller electrode, cm2.
        public var electrodeAreaCm2: Double

        public init(id: String, muscle: String, side: String, electrodes: [String], electrodeAreaCm2: Double) {
            self.id = id
            self.muscle = muscle
            self.side = side
            self.electrodes = electrodes
            self.electrodeAreaCm2 = electrodeAreaCm2
        }
    }

    /// One row of the level table.
    public struct Level: Sendable, Hashable, Codable {
        public var level: Int
        public var peakMicroAmps: Double
        public var frequencyHz: Double
        public var phaseWidthMicros: Double
        public var rampUpS: Double
        public var rampDownS: Double
        public var dwellS: Double

        public init(
            level: Int, peakMicroAmps: Double, frequencyHz: Double = 10, phaseWidthMicros: Double = 20_000,
            rampUpS: Double = 2, rampDownS: Double = 1, dwellS: Double = 8
        ) {
            self.level = level
            self.peakMicroAmps = peakMicroAmps
            self.frequencyHz = frequencyHz
            self.phaseWidthMicros = phaseWidthMicros
            self.rampUpS = rampUpS
            self.rampDownS = rampDownS
            self.dwellS = dwellS
        }

        /// Seconds between pulse pairs.
        public var periodS: Double { 1 / frequencyHz }
        /// One phase's width, seconds.
        public var phaseS: Double { phaseWidthMicros / 1_000_000 }
    }

    /// The vibration motor.
    public struct Vibration: Sendable, Hashable, Codable {
        public var level: Int
        public var rpm: Double
        public var tolerancePct: Double
        public var faultAfterS: Double

        public init(level: Int = 3, rpm: Double = 8000, tolerancePct: Double = 10, faultAfterS: Double = 2) {
            self.level = level
            self.rpm = rpm
            self.tolerancePct = tolerancePct
            self.faultAfterS = faultAfterS
        }
    }

    /// Completed sessions after which levels 2 and 3 unlock (rule 8).
    public struct LevelUnlock: Sendable, Hashable, Codable {
        public var level2AfterSessions: Int
        public var level3AfterSessions: Int

        public init(level2AfterSessions: Int = 7, level3AfterSessions: Int = 21) {
            self.level2AfterSessions = level2AfterSessions
            self.level3AfterSessions = level3AfterSessions
        }
    }

    public var version: String
    public var hardware: String
    /// Stimulation per session, seconds (at most 900).
    public var sessionSeconds: Double
    /// The current source's compliance voltage, volts.
    public var complianceVolts: Double
    public var channels: [Channel]
    public var levels: [Level]
    public var vibration: Vibration
    public var levelUnlock: LevelUnlock

    public init(
        version: String, hardware: String = "sculpt-r2", sessionSeconds: Double = 900, complianceVolts: Double = 11,
        channels: [Channel], levels: [Level], vibration: Vibration = Vibration(), levelUnlock: LevelUnlock = LevelUnlock()
    ) {
        self.version = version
        self.hardware = hardware
        self.sessionSeconds = sessionSeconds
        self.complianceVolts = complianceVolts
        self.channels = channels
        self.levels = levels
        self.vibration = vibration
        self.levelUnlock = levelUnlock
    }

    /// The row for `level`.
    public func setting(for level: Int) -> Level? { levels.first { $0.level == level } }
}
