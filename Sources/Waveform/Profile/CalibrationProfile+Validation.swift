extension CalibrationProfile {
    /// Checks the profile against the hard rules.
    /// - Throws: ``WaveformError`` naming the rule, the entry and the offending value: a depressor
    ///   or unknown muscle, a left-right electrode pair, a peak above 1000 uA, a frequency outside
    ///   0.5-50 Hz, phases that do not fit the period, a session above 900 s, a vibration outside
    ///   7200-8800 rpm or on a level other than 3, a missing level.
    public func validate() throws(WaveformError) {
        guard sessionSeconds > 0, sessionSeconds <= HardLimits.maxSessionSeconds else {
            throw WaveformError(.sessionLimit, path: "sessionSeconds", "\(sessionSeconds) s is outside (0, 900]")
        }
        guard complianceVolts.isFinite, complianceVolts > 0, complianceVolts <= 40 else {
            throw WaveformError(.waveformShape, path: "complianceVolts", "\(complianceVolts) V is outside (0, 40]")
        }
        guard !channels.isEmpty else {
            throw WaveformError(.forbiddenChannel, path: "channels", "the profile has no channels")
        }
        var seen: Set<String> = []
        for (index, channel) in channels.enumerated() {
            try Self.validate(channel, path: "channels[\(index)]")
            guard seen.insert(channel.id).inserted else {
                throw WaveformError(.forbiddenChannel, path: "channels[\(index)].id", "channel id '\(channel.id)' appears twice")
            }
        }
        for level in 1...3 where setting(for: level) == nil {
            throw WaveformError(.levelLock, path: "levels", "level \(level) has no row")
        }
        for (index, level) in levels.enumerated() {
            try Self.validate(level, path: "levels[\(index)]")
        }
        if levels.count != Set(levels.map(\.level)).count {
            throw WaveformError(.levelLock, path: "levels", "a level appears twice")
        }
        guard vibration.level == HardLimits.vibrationLevel else {
            throw WaveformError(.vibration, path: "vibration.level", "vibration is only allowed at level 3, not \(vibration.level)")
        }
        let low = vibration.rpm * (1 - vibration.tolerancePct / 100)
        let high = vibration.rpm * (1 + vibration.tolerancePct / 100)
        guard HardLimits.vibrationRangeRpm.contains(low), HardLimits.vibrationRangeRpm.contains(high), vibration.tolerancePct >= 0
        else {
            throw WaveformError(
                .vibration, path: "vibration.rpm",
                "\(vibration.rpm) rpm +-\(vibration.tolerancePct) % leaves 7200-8800 rpm")
        }
        guard vibration.faultAfterS > 0, vibration.faultAfterS <= HardLimits.vibrationFaultSeconds else {
            throw WaveformError(.vibration, path: "vibration.faultAfterS", "\(vibration.faultAfterS) s is outside (0, 2]")
        }
        guard levelUnlock.level2AfterSessions >= 0, levelUnlock.level3AfterSessions >= levelUnlock.level2AfterSessions else {
            throw WaveformError(.levelLock, path: "levelUnlock", "level3AfterSessions must be >= level2AfterSessions >= 0")
        }
    }

    static func validate(_ channel: Channel, path: String) throws(WaveformError) {
        guard !channel.id.isEmpty, channel.id.utf8.count <= 64 else {
            throw WaveformError(.forbiddenChannel, path: "\(path).id", "a channel id must be 1-64 characters")
        }
        guard !HardLimits.forbiddenMuscles.contains(channel.muscle) else {
            throw WaveformError(
                .forbiddenChannel, path: "\(path).muscle", "'\(channel.muscle)' is a depressor or eye muscle; never stimulated")
        }
        guard HardLimits.allowedMuscles.contains(channel.muscle) else {
            throw WaveformError(
                .forbiddenChannel, path: "\(path).muscle",
                "'\(channel.muscle)' is not a lateral lifting muscle (\(HardLimits.allowedMuscles.sorted().joined(separator: ", ")))")
        }
        guard channel.side == "left" || channel.side == "right" else {
            throw WaveformError(.forbiddenChannel, path: "\(path).side", "side '\(channel.side)' is not left or right")
        }
        guard channel.electrodes.count == 2 else {
            throw WaveformError(.forbiddenChannel, path: "\(path).electrodes", "a channel pairs exactly two electrodes")
        }
        let prefix = channel.side == "left" ? "L-" : "R-"
        for electrode in channel.electrodes where !electrode.hasPrefix(prefix) {
            throw WaveformError(
                .forbiddenChannel, path: "\(path).electrodes",
                "'\(electrode)' is not on the \(channel.side) side: a channel never pairs left with right")
        }
        guard channel.electrodes[0] != channel.electrodes[1] else {
            throw WaveformError(.forbiddenChannel, path: "\(path).electrodes", "both electrodes are '\(channel.electrodes[0])'")
        }
        guard channel.electrodeAreaCm2.isFinite, channel.electrodeAreaCm2 >= 0.25, channel.electrodeAreaCm2 <= 20 else {
            throw WaveformError(
                .forbiddenChannel, path: "\(path).electrodeAreaCm2", "\(channel.electrodeAreaCm2) cm2 is outside 0.25-20")
        }
    }

    /// Checks one level-table row (also used for remote config overrides).
    public static func validate(_ level: Level, path: String) throws(WaveformError) {
        guard (1...3).contains(level.level) else {
            throw WaveformError(.levelLock, path: "\(path).level", "level \(level.level) is not 1, 2 or 3")
        }
        guard level.peakMicroAmps.isFinite, level.peakMicroAmps > 0 else {
            throw WaveformError(.peakCurrent, path: "\(path).peakMicroAmps", "\(level.peakMicroAmps) uA must be a positive number")
        }
        guard level.peakMicroAmps <= HardLimits.maxPeakMicroAmps else {
            throw WaveformError(
                .peakCurrent, path: "\(path).peakMicroAmps",
                "\(format(level.peakMicroAmps)) uA is above the 1000 uA ceiling")
        }
        guard level.frequencyHz.isFinite, HardLimits.frequencyRangeHz.contains(level.frequencyHz) else {
            throw WaveformError(
                .waveformShape, path: "\(path).frequencyHz", "\(format(level.frequencyHz)) Hz is outside 0.5-50 Hz")
        }
        guard level.phaseWidthMicros.isFinite, level.phaseWidthMicros >= 20, 2 * level.phaseS <= level.periodS else {
            throw WaveformError(
                .waveformShape, path: "\(path).phaseWidthMicros",
                "\(format(level.phaseWidthMicros)) us: both phases must fit in one period (\(format(level.periodS * 1e6)) us)")
        }
        guard level.rampUpS.isFinite, level.rampUpS >= 0.5, level.rampUpS <= 10,
            level.rampDownS.isFinite, level.rampDownS >= 0.2, level.rampDownS <= 10
        else {
            throw WaveformError(.waveformShape, path: "\(path).rampUpS", "ramps must be 0.5-10 s up and 0.2-10 s down")
        }
        guard level.dwellS.isFinite, level.dwellS >= level.periodS, level.dwellS <= 120 else {
            throw WaveformError(.singleChannel, path: "\(path).dwellS", "dwell \(format(level.dwellS)) s must be one period to 120 s")
        }
    }

    static func format(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e12 ? String(Int64(value)) : String(value)
    }
}
