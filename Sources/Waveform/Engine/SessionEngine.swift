/// The closed-loop planner for one session: turns a validated profile and a level into timed
/// segments for the headband, and adapts to what the headband measures.
///
/// Time is the segments' own stimulation clock (never the wall clock), so no clock jump can
/// stretch a session past its limit. Amplitude moves only through a slew limit derived from
/// the level's ramps (2 s up from 0 to the peak, 1 s down), one step per pulse pair: start,
/// level changes, resume and the end all ramp. Channels take turns, one at a time.
///
/// The engine is a value: the caller drives it by asking for the next segment, executing it,
/// and feeding back the headband's reports. An independent ``SafetyMonitor`` checks both.
public struct SessionEngine: Sendable {
    /// Where the session stands.
    public enum Phase: Sendable, Hashable {
        case running
        /// Ramping down to pause, with why.
        case pausing(reason: String)
        /// Paused since `sinceS` (headband clock); contact stable since `stableSinceS`.
        case paused(reason: String, sinceS: Double, stableSinceS: Double?)
        /// Ramping down to end.
        case stopping(SessionOutcome)
        case ended(SessionOutcome)
    }

    public let profile: CalibrationProfile
    public private(set) var policy: LevelPolicy
    public private(set) var completedSessions: Int
    public private(set) var level: Int
    public private(set) var phase: Phase = .running
    public private(set) var totals = SessionTotals()
    /// The amplitude of the last pair sent, microamps.
    public private(set) var amplitudeMicroAmps: Double = 0
    /// The amplitude the engine aims for within the level (lowered when the skin's impedance
    /// would drive the source to its compliance limit).
    public private(set) var targetMicroAmps: Double = 0
    /// The channel in turn.
    public private(set) var channelIndex = 0
    /// Longest pause before the session is given up, seconds.
    public var maxPauseS: Double = 300
    /// Control interval: a steady segment lasts about this long, seconds.
    public var controlIntervalS: Double

    private var dwellLeftS: Double
    private var pairCount = 0
    private var complianceStreak = 0
    private var lastImpedance: [Double]
    private var events: [EngineEvent] = []
    private var pendingLevel: Int?

    /// Creates the engine for a session.
    /// - Parameters:
    ///   - level: the wearer's requested level; clamped to what rule 8 allows.
    ///   - completedSessions: the wearer's completed sessions (for level unlocks).
    ///   - maxLevel: the remote cap.
    /// - Throws: ``WaveformError`` when the profile breaks a hard rule.
    public init(
        profile: CalibrationProfile, level: Int, completedSessions: Int, maxLevel: Int = 3, controlIntervalS: Double = 0.1
    ) throws(WaveformError) {
        try profile.validate()
        self.profile = profile
        self.policy = LevelPolicy(unlock: profile.levelUnlock, maxLevel: maxLevel)
        self.completedSessions = completedSessions
        self.level = min(max(1, level), policy.allowedLevel(completedSessions: completedSessions))
        self.controlIntervalS = controlIntervalS
        self.lastImpedance = Array(repeating: .nan, count: profile.channels.count)
        self.dwellLeftS = profile.setting(for: self.level)!.dwellS
    }

    /// The level row in force.
    public var setting: CalibrationProfile.Level { profile.setting(for: level)! }

    /// The highest level allowed now (rule 8 and the remote cap).
    public var allowedLevel: Int { policy.allowedLevel(completedSessions: completedSessions) }

    /// Whether the session has ended.
    public var isEnded: Bool { if case .ended = phase { true } else { false } }

    /// The events since the last call.
    public mutating func takeEvents() -> [EngineEvent] {
        defer { events.removeAll() }
        return events
    }

    // MARK: Commands

    /// Asks for `level`; it applies at the next pulse-pair boundary, through a ramp.
    /// - Returns: the level that will apply (clamped to what is allowed).
    @discardableResult
    public mutating func requestLevel(_ requested: Int) -> Int {
        let granted = min(max(1, requested), allowedLevel)
        if granted != level { pendingLevel = granted } else { pendingLevel = nil }
        return granted
    }

    /// Applies a new remote cap; a lower cap takes effect at once, through a ramp.
    public mutating func setMaxLevel(_ maxLevel: Int) {
        policy.maxLevel = min(3, max(1, maxLevel))
        if level > allowedLevel { pendingLevel = allowedLevel }
        if let pending = pendingLevel, pending > allowedLevel { pendingLevel = allowedLevel }
    }

    /// Stops the session through a ramp-down (user, remote or shutdown).
    public mutating func stop(reason: String) {
        switch phase {
        case .ended, .stopping: return
        case .paused:
            end(.aborted(reason: reason))
        default:
            phase = .stopping(.aborted(reason: reason))
        }
    }

    /// A hard-rule violation: output ramps to zero and the session ends as `safety_trip`
    /// (or `battery_low` for the battery).
    public mutating func trip(_ violation: SafetyViolation) {
        guard !isEnded else { return }
        events.append(.trip(violation))
        let reason = violation.rule == .batteryLow ? "battery_low" : "safety_trip"
        if case .paused = phase {
            end(.aborted(reason: reason))
        } else {
            phase = .stopping(.aborted(reason: reason))
        }
    }

    /// Ends at once with no ramp (the headband is gone, or the monitor refused a ramp segment).
    public mutating func abortNow(reason: String) {
        guard !isEnded else { return }
        amplitudeMicroAmps = 0
        end(.aborted(reason: reason))
    }

    private mutating func end(_ outcome: SessionOutcome) {
        phase = .ended(outcome)
        amplitudeMicroAmps = 0
        events.append(.ended(outcome))
    }

    // MARK: Planning

    /// The next segment to send, or nil when paused (call again later with a later `nowS`) or ended.
    /// - Parameter nowS: the headband clock, for pause timing.
    public mutating func nextSegment(nowS: Double) -> Segment? {
        if case .paused(let reason, let since, let stable) = phase {
            if let stable, nowS - stable >= HardLimits.stableContactSeconds {
                phase = .running
                events.append(.resumed(reason: reason))
                complianceStreak = 0
            } else {
                if nowS - since > maxPauseS { end(.aborted(reason: "headband_lost")) }
                return nil
            }
        }
        if case .ended = phase { return nil }
        if let pending = pendingLevel {
            pendingLevel = nil
            if pending != level {
                events.append(.levelChanged(from: level, to: pending))
                level = pending
            }
        }
        let row = setting
        let period = row.periodS
        let remainingS = profile.sessionSeconds - totals.stimulatingS
        // Rule 6: start the final ramp so that it ends by the limit.
        if case .running = phase, remainingS <= row.rampDownS + period / 2 {
            phase = .stopping(.completed)
        }
        if remainingS < period - 1e-6 {
            end(phaseOutcome ?? .completed)
            return nil
        }
        let ceiling = adaptedPeak(row)
        let goal: Double
        switch phase {
        case .running: goal = ceiling
        default: goal = 0
        }
        targetMicroAmps = goal
        let upStep = row.peakMicroAmps / row.rampUpS * period
        let downStep = max(row.peakMicroAmps, amplitudeMicroAmps) / row.rampDownS * period
        var pairs: Int
        var first: Double
        if abs(goal - amplitudeMicroAmps) < 1e-9 {
            pairs = max(1, Int((controlIntervalS * row.frequencyHz).rounded()))
            first = amplitudeMicroAmps
        } else {
            // Ramp: one pair per segment, one step per pair, never past the goal.
            pairs = 1
            first = goal > amplitudeMicroAmps
                ? min(goal, amplitudeMicroAmps + upStep) : max(goal, amplitudeMicroAmps - downStep)
        }
        if first <= 1e-9 && goal == 0 {
            // Down to zero: pause or end without sending an empty pair.
            amplitudeMicroAmps = 0
            switch phase {
            case .pausing(let reason):
                phase = .paused(reason: reason, sinceS: nowS, stableSinceS: nil)
            case .stopping(let outcome):
                end(outcome)
            default:
                break
            }
            return nil
        }
        pairs = min(pairs, max(1, Int((dwellLeftS / period).rounded(.up))))
        pairs = min(pairs, Int((remainingS / period + 1e-6).rounded(.down)))
        guard pairs >= 1 else {
            end(phaseOutcome ?? .completed)
            return nil
        }
        let channel = profile.channels[channelIndex]
        // While ramping down from a higher level, the pair is still bounded by that level's row.
        var tableLevel = level
        while tableLevel < 3, first > profile.setting(for: tableLevel)!.peakMicroAmps + 1e-9 {
            tableLevel += 1
        }
        let segment = Segment(
            channelIndex: channelIndex, channelID: channel.id, startS: totals.stimulatingS, pairs: pairs,
            frequencyHz: row.frequencyHz, phaseWidthMicros: row.phaseWidthMicros, startMicroAmps: first,
            stepMicroAmps: 0, leadingPositive: pairCount % 2 == 0,
            vibrationRpm: tableLevel == profile.vibration.level && isRunningOrRamping ? profile.vibration.rpm : 0,
            level: tableLevel)
        pairCount += pairs
        amplitudeMicroAmps = segment.endMicroAmps
        let duration = segment.durationS
        totals.stimulatingS += duration
        totals.levelSeconds[tableLevel, default: 0] += duration
        var charge = 0.0
        for pair in 0..<pairs { charge += 2 * segment.amplitude(pair: pair) * segment.phaseS }
        totals.chargeMicroCoulombs[channel.id, default: 0] += charge
        dwellLeftS -= duration
        if dwellLeftS <= 1e-9 {
            channelIndex = (channelIndex + 1) % profile.channels.count
            dwellLeftS = row.dwellS
            complianceStreak = 0
        }
        return segment
    }

    private var isRunningOrRamping: Bool {
        switch phase {
        case .running, .pausing, .stopping: true
        default: false
        }
    }

    private var phaseOutcome: SessionOutcome? {
        if case .stopping(let outcome) = phase { return outcome }
        return nil
    }

    /// The level's peak, lowered so the source stays out of compliance at the last impedance seen
    /// on this channel ("adjusts within the level").
    private func adaptedPeak(_ row: CalibrationProfile.Level) -> Double {
        let impedance = lastImpedance[channelIndex]
        guard impedance.isFinite, impedance > 0, impedance < HardLimits.liftOffOhms else { return row.peakMicroAmps }
        let deliverable = 0.9 * profile.complianceVolts / impedance * 1e6
        return min(row.peakMicroAmps, max(deliverable, row.peakMicroAmps * 0.25))
    }

    // MARK: Feedback

    /// Feeds back the headband's reports of the pairs it delivered.
    public mutating func consume(_ reports: [PulseReport]) {
        for report in reports {
            guard !isEnded else { return }
            let values = [report.impedanceOhms, report.firstPhaseMicroAmps, report.secondPhaseMicroAmps, report.peakVolts]
            guard values.allSatisfy(\.isFinite), report.impedanceOhms >= 0, report.peakVolts >= 0 else {
                trip(SafetyViolation(rule: .invalidMeasurement, channelID: channelID(report.channelIndex), value: .nan, limit: 0))
                return
            }
            if report.channelIndex >= 0 && report.channelIndex < lastImpedance.count {
                lastImpedance[report.channelIndex] = report.impedanceOhms
            }
            if report.impedanceOhms < HardLimits.shortOhms {
                trip(SafetyViolation(
                    rule: .short, channelID: channelID(report.channelIndex), value: report.impedanceOhms, limit: HardLimits.shortOhms))
                return
            }
            complianceStreak = report.atCompliance ? complianceStreak + 1 : 0
            if report.impedanceOhms > HardLimits.liftOffOhms || complianceStreak >= HardLimits.compliancePulsesForPause {
                contactLost()
                return
            }
        }
    }

    /// Feeds back the headband's status: battery, buttons, contact while paused, link.
    public mutating func consume(_ status: HeadbandStatus) {
        guard !isEnded else { return }
        guard status.connected else {
            abortNow(reason: "headband_lost")
            return
        }
        if !status.batteryPct.isFinite || status.batteryPct < HardLimits.batteryStopPct {
            trip(SafetyViolation(rule: .batteryLow, value: status.batteryPct, limit: HardLimits.batteryStopPct))
            return
        }
        for press in status.buttons {
            switch press {
            case .long: stop(reason: "user_stop")
            case .short: requestLevel(level % allowedLevel + 1)
            }
        }
        if case .paused(let reason, let since, let stable) = phase {
            let contact = status.contactImpedanceOhms
            let good = contact.isFinite && contact > HardLimits.shortOhms && contact < HardLimits.liftOffOhms
            phase = .paused(reason: reason, sinceS: since, stableSinceS: good ? (stable ?? status.timeS) : nil)
        }
    }

    private mutating func contactLost() {
        guard case .running = phase else { return }
        phase = .pausing(reason: "contact_lost")
        totals.pauses += 1
        complianceStreak = 0
        events.append(.paused(reason: "contact_lost"))
    }

    private func channelID(_ index: Int) -> String? {
        index >= 0 && index < profile.channels.count ? profile.channels[index].id : nil
    }
}
