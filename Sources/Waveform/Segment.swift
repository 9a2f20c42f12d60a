/// A stretch of stimulation the headband executes: a biphasic rectangular pulse train on one
/// channel. Each pulse pair is a phase and an equal and opposite phase; the leading polarity
/// alternates from pair to pair. A ramp steps the amplitude once per pair, never inside one.
public struct Segment: Sendable, Hashable {
    /// Index into the profile's channels.
    public var channelIndex: Int
    public var channelID: String
    /// Start on the session's stimulation clock, seconds.
    public var startS: Double
    /// Pulse pairs in the segment (at least 1).
    public var pairs: Int
    public var frequencyHz: Double
    public var phaseWidthMicros: Double
    /// Amplitude of the first pair, microamps (>= 0).
    public var startMicroAmps: Double
    /// Amplitude change from one pair to the next, microamps.
    public var stepMicroAmps: Double
    /// Whether the first pair leads with the positive phase.
    public var leadingPositive: Bool
    /// Vibration motor target, rpm (0 = off).
    public var vibrationRpm: Double
    /// The level in effect.
    public var level: Int

    public init(
        channelIndex: Int, channelID: String, startS: Double, pairs: Int, frequencyHz: Double, phaseWidthMicros: Double,
        startMicroAmps: Double, stepMicroAmps: Double, leadingPositive: Bool, vibrationRpm: Double, level: Int
    ) {
        self.channelIndex = channelIndex
        self.channelID = channelID
        self.startS = startS
        self.pairs = pairs
        self.frequencyHz = frequencyHz
        self.phaseWidthMicros = phaseWidthMicros
        self.startMicroAmps = startMicroAmps
        self.stepMicroAmps = stepMicroAmps
        self.leadingPositive = leadingPositive
        self.vibrationRpm = vibrationRpm
        self.level = level
    }

    /// Seconds between pulse pairs.
    public var periodS: Double { 1 / frequencyHz }
    /// Duration, seconds.
    public var durationS: Double { Double(pairs) / frequencyHz }
    /// End on the stimulation clock.
    public var endS: Double { startS + durationS }
    /// One phase, seconds.
    public var phaseS: Double { phaseWidthMicros / 1_000_000 }
    /// Amplitude of pair `index` (0-based).
    public func amplitude(pair index: Int) -> Double { startMicroAmps + Double(index) * stepMicroAmps }
    /// Amplitude of the last pair.
    public var endMicroAmps: Double { amplitude(pair: pairs - 1) }
    /// The largest amplitude in the segment.
    public var peakMicroAmps: Double { max(abs(startMicroAmps), abs(endMicroAmps)) }
    /// Whether pair `index` leads with the positive phase.
    public func leadsPositive(pair index: Int) -> Bool { leadingPositive == (index % 2 == 0) }
}
