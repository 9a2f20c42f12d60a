/// The safety monitor: independent of the planner, it checks every segment before it leaves
/// and every measurement after, against the hard rules and the validated profile.
///
/// It shares no state with ``SessionEngine``: it keeps its own stimulation clock, channel
/// history and charge accounting, so a planner bug cannot hide from it.
public struct SafetyMonitor: Sendable {
    public let profile: CalibrationProfile
    private let allowedChannels: [String]
    private var stimulatedS = 0.0
    private var lastEndS = 0.0
    private var lastAmplitude = 0.0
    private var activeChannel: Int?
    /// The table peak of the level of the last segment sent, microamps.
    private var levelPeak = 0.0
    /// Running net charge per channel, microcoulombs.
    public private(set) var netCharge: [Double]
    /// Recent pairs per channel: (net charge, period) for the 1 s mean-current window.
    private var window: [[(net: Double, period: Double)]]
    private var windowNet: [Double]
    private var windowSeconds: [Double]
    private var vibrationBadSinceS: Double?
    private var commandedVibrating = false

    /// Creates a monitor for a profile.
    /// - Throws: ``WaveformError`` when the profile itself breaks a rule.
    public init(profile: CalibrationProfile) throws(WaveformError) {
        try profile.validate()
        self.profile = profile
        allowedChannels = profile.channels.map(\.id)
        netCharge = Array(repeating: 0, count: profile.channels.count)
        window = Array(repeating: [], count: profile.channels.count)
        windowNet = Array(repeating: 0, count: profile.channels.count)
        windowSeconds = Array(repeating: 0, count: profile.channels.count)
    }

    /// Stimulation accounted so far, seconds.
    public var stimulatedSeconds: Double { stimulatedS }

    /// Checks a segment before it is sent; on a violation the segment must not be sent.
    public mutating func check(_ segment: Segment) -> SafetyViolation? {
        let id = segment.channelID
        guard segment.channelIndex >= 0, segment.channelIndex < allowedChannels.count, allowedChannels[segment.channelIndex] == id
        else { return SafetyViolation(rule: .forbiddenChannel, channelID: id, value: Double(segment.channelIndex), limit: 0) }
        guard segment.pairs >= 1, segment.frequencyHz.isFinite, HardLimits.frequencyRangeHz.contains(segment.frequencyHz) else {
            return SafetyViolation(rule: .waveformShape, channelID: id, value: segment.frequencyHz, limit: HardLimits.frequencyRangeHz.upperBound)
        }
        guard segment.phaseWidthMicros.isFinite, segment.phaseWidthMicros > 0, 2 * segment.phaseS <= segment.periodS + 1e-12 else {
            return SafetyViolation(rule: .waveformShape, channelID: id, value: segment.phaseWidthMicros, limit: segment.periodS * 5e5)
        }
        guard let row = profile.setting(for: segment.level) else {
            return SafetyViolation(rule: .levelLock, channelID: id, value: Double(segment.level), limit: 3)
        }
        let ceiling = min(HardLimits.maxPeakMicroAmps, row.peakMicroAmps)
        let peak = segment.peakMicroAmps
        guard peak.isFinite, segment.startMicroAmps >= 0, segment.endMicroAmps >= 0, peak <= ceiling + 1e-6 else {
            return SafetyViolation(rule: .peakCurrent, channelID: id, value: peak, limit: ceiling)
        }
        // Rule 4: one channel at a time; no overlap with what was sent before.
        guard segment.startS >= lastEndS - 1e-9 else {
            return SafetyViolation(rule: .singleChannel, channelID: id, value: segment.startS, limit: lastEndS)
        }
        // Amplitude changes only through a ramp: no pair may step more than one ramp step.
        let maxStep = max(row.peakMicroAmps, lastAmplitude) / min(row.rampUpS, row.rampDownS) * segment.periodS + 1e-6
        guard abs(segment.startMicroAmps - lastAmplitude) <= maxStep, abs(segment.stepMicroAmps) <= maxStep else {
            return SafetyViolation(rule: .peakCurrent, channelID: id, value: abs(segment.startMicroAmps - lastAmplitude), limit: maxStep)
        }
        // Rule 6.
        guard stimulatedS + segment.durationS <= profile.sessionSeconds + 1e-6 else {
            return SafetyViolation(rule: .sessionLimit, channelID: id, value: stimulatedS + segment.durationS, limit: profile.sessionSeconds)
        }
        // Rule 7: vibration only at level 3.
        if segment.vibrationRpm > 0 && segment.level != HardLimits.vibrationLevel {
            return SafetyViolation(rule: .vibration, channelID: id, value: Double(segment.level), limit: Double(HardLimits.vibrationLevel))
        }
        stimulatedS += segment.durationS
        lastEndS = segment.endS
        lastAmplitude = segment.endMicroAmps
        activeChannel = segment.channelIndex
        levelPeak = row.peakMicroAmps
        return nil
    }

    /// Records that output stopped (pause or end): the next segment must start from zero.
    public mutating func outputStopped() {
        lastAmplitude = 0
        activeChannel = nil
    }

    /// Checks one measured pulse pair (rules 1, 2 and 4).
    public mutating func observe(_ report: PulseReport) -> SafetyViolation? {
        let index = report.channelIndex
        guard index >= 0, index < allowedChannels.count else {
            return SafetyViolation(rule: .forbiddenChannel, value: Double(index), limit: 0)
        }
        let id = allowedChannels[index]
        guard report.firstPhaseMicroAmps.isFinite, report.secondPhaseMicroAmps.isFinite, report.phaseS.isFinite, report.phaseS > 0 else {
            return SafetyViolation(rule: .invalidMeasurement, channelID: id, value: .nan, limit: 0)
        }
        if let active = activeChannel, active != index {
            return SafetyViolation(rule: .singleChannel, channelID: id, value: Double(index), limit: Double(active))
        }
        let measuredPeak = report.peakMicroAmps
        let ceiling = HardLimits.maxPeakMicroAmps
        if measuredPeak > ceiling {
            return SafetyViolation(rule: .peakCurrent, channelID: id, value: measuredPeak, limit: ceiling)
        }
        // Rule 2: running net charge within one phase's charge.
        let net = report.netMicroCoulombs
        netCharge[index] += net
        let phaseCharge = max(measuredPeak, levelPeak) * report.phaseS
        if abs(netCharge[index]) > phaseCharge {
            return SafetyViolation(rule: .chargeBalance, channelID: id, value: abs(netCharge[index]), limit: phaseCharge)
        }
        // Rule 2: mean current over the last whole periods lasting at least 1 s.
        let period = report.periodS.isFinite && report.periodS > 0 ? report.periodS : 0.1
        window[index].append((net, period))
        windowNet[index] += net
        windowSeconds[index] += period
        while let oldest = window[index].first, windowSeconds[index] - oldest.period >= 1 - 1e-9 {
            window[index].removeFirst()
            windowNet[index] -= oldest.net
            windowSeconds[index] -= oldest.period
        }
        if windowSeconds[index] >= 1 - 1e-9 {
            let mean = abs(windowNet[index]) / windowSeconds[index]
            if mean > HardLimits.maxMeanMicroAmps {
                return SafetyViolation(rule: .dcMean, channelID: id, value: mean, limit: HardLimits.maxMeanMicroAmps)
            }
        }
        return nil
    }

    /// Checks the headband's status (rule 7: the vibration motor), given whether the session is
    /// stimulating at level 3 now.
    public mutating func observe(_ status: HeadbandStatus, vibrating: Bool) -> SafetyViolation? {
        let rpm = status.vibrationRpm
        guard rpm.isFinite, rpm >= 0 else {
            return SafetyViolation(rule: .invalidMeasurement, value: rpm, limit: 0)
        }
        if vibrating != commandedVibrating {
            // A new command: the motor gets its spin-up or spin-down time from now.
            commandedVibrating = vibrating
            vibrationBadSinceS = nil
        }
        let inRange = vibrating ? HardLimits.vibrationRangeRpm.contains(rpm) : rpm < 100
        if inRange {
            vibrationBadSinceS = nil
            return nil
        }
        let since = vibrationBadSinceS ?? status.timeS
        vibrationBadSinceS = since
        // Spin-up and spin-down take a fraction of a second; out of range for over 2 s is a fault.
        if status.timeS - since > profile.vibration.faultAfterS {
            return SafetyViolation(
                rule: .vibration, value: rpm, limit: vibrating ? HardLimits.vibrationRangeRpm.lowerBound : 0)
        }
        return nil
    }
}
