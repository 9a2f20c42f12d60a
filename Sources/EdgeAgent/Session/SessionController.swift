import Foundation
import SpectraProtocol
import Waveform

/// Runs sessions on the headband: starts them (locally only), drives the waveform engine and
/// safety monitor in real time (or faster, for tests and the simulator), and turns what
/// happens into the contract's `session.*` and `safety.trip` events.
public actor SessionController {
    /// Why a session could not start.
    public struct StartError: Error, Sendable, Equatable, CustomStringConvertible {
        public var reason: String
        public var description: String { reason }
    }

    /// The live state, for `spectra-agent status`.
    public struct Status: Sendable, Equatable, Codable {
        public var running: Bool
        public var sessionId: String?
        public var level: Int?
        public var allowedLevel: Int
        public var elapsedS: Double?
        public var stimulatingS: Double?
        public var phase: String
        public var completedSessions: Int
        public var regimenPhase: String
        public var regimenDay: Int
    }

    private var profile: CalibrationProfile
    /// A profile set while a session ran: it takes over when the session ends.
    private var pendingProfile: CalibrationProfile?
    /// Who asked for the level change under way, and for the stop (recorded in the events).
    private var levelRequester: String?
    private var stopRequester: String?
    private var headband: any Headband
    private var regimen: Regimen
    private let journal: SessionJournal?
    private let timeScale: Double
    /// What a second of `now` is worth in session seconds: `timeScale` against the wall clock,
    /// 1 against a clock that already runs `timeScale` times faster (the fleet simulator's).
    private let clockScale: Double
    private let emit: @Sendable (Event) async -> Void
    private let now: @Sendable () -> Date
    private var maxLevel = 3

    private var runner: SessionRunner?
    /// Whether ``drive()`` is inside a step (the headband may be answering over its link): the
    /// stored ``runner`` is then a copy the step will replace, so commands that arrive are also
    /// queued and applied to the stepped runner before it is stored back.
    private var stepping = false
    private var queued: [(inout SessionRunner) -> Void] = []
    /// Whether a start is under way (the headband is beginning its session).
    private var starting = false
    private var sessionId: Identifier?
    /// The violations (rule and channel) already reported in this session: a tripped session
    /// ramps down through several more monitor checks, and each would report the same trip.
    private var reportedTrips: Set<String> = []
    private var startedAt: Date?
    private var task: Task<Void, Never>?

    /// - Parameters:
    ///   - timeScale: how much faster than real time sessions run (1 on a gateway).
    ///   - clockIsScaled: whether `now` already runs `timeScale` times faster than real time
    ///     (a simulated clock), so durations read on it are session seconds as they are.
    ///   - emit: where events go (the outbox, in the agent).
    public init(
        profile: CalibrationProfile, headband: any Headband, regimen: Regimen, journal: SessionJournal?,
        timeScale: Double = 1, clockIsScaled: Bool = false, now: @escaping @Sendable () -> Date = { Date() },
        emit: @escaping @Sendable (Event) async -> Void
    ) {
        self.profile = profile
        self.headband = headband
        self.regimen = regimen
        self.journal = journal
        self.timeScale = max(1, timeScale)
        clockScale = clockIsScaled ? 1 : max(1, timeScale)
        self.now = now
        self.emit = emit
    }

    /// Reports a session a previous run left unfinished as `session.aborted` (`agent_restart`).
    public func recoverAfterRestart() async {
        guard let journal, let entry = journal.read(), let id = try? Identifier(entry.sessionId) else { return }
        await emit(.sessionAborted(SessionSummary(
            sessionId: id, durationS: max(0, now().timeIntervalSince(entry.startedAt)), stimulatingS: entry.stimulatingS,
            levelSeconds: entry.levelSeconds, pauses: entry.pauses, chargeMicroCoulombs: entry.chargeMicroCoulombs,
            reason: .agentRestart)))
        journal.clear()
    }

    /// The wearer's regimen (persisted by the caller).
    public var currentRegimen: Regimen { regimen }

    /// Applies a new remote level cap; a running session drops to it at once, through a ramp.
    public func setMaxLevel(_ level: Int) {
        maxLevel = min(3, max(1, level))
        let cap = maxLevel
        command { $0.engine.setMaxLevel(cap) }
    }

    /// Replaces the profile (config pushes apply between sessions).
    /// Sets the profile of the next sessions: at once, or, while a session runs, when it ends
    /// (a running session keeps the settings it started with).
    /// - Throws: ``StartError`` when the profile breaks the engine's rules.
    public func setProfile(_ profile: CalibrationProfile) throws(StartError) {
        do {
            try profile.validate()
        } catch {
            throw StartError(reason: "\(error)")
        }
        if runner == nil {
            self.profile = profile
        } else {
            pendingProfile = profile
        }
    }

    /// Starts a session.
    /// - Parameter level: the requested level (default: the highest allowed), clamped to what
    ///   rule 8 and the remote cap allow.
    /// - Throws: ``StartError`` when a session already runs or the profile is refused.
    @discardableResult
    /// - Parameter requestedBy: who asked (`button`, `local:uid=N`), recorded in `session.started`.
    public func start(level requested: Int? = nil, requestedBy: String? = nil) async throws(StartError) -> Identifier {
        guard runner == nil, !starting else { throw StartError(reason: "a session is already running") }
        starting = true
        defer { starting = false }
        guard headband.connected, let capabilities = headband.capabilities else {
            throw StartError(reason: "the headband is not connected: check its dock or cable (the agent reconnects by itself)")
        }
        guard capabilities.channels >= profile.channels.count else {
            throw StartError(reason: "the headband (\(capabilities.model)) has \(capabilities.channels) channels; the calibration profile drives \(profile.channels.count)")
        }
        if let peak = profile.levels.map(\.peakMicroAmps).max(), peak > capabilities.maxMicroAmps {
            throw StartError(reason: "the headband's own current limit is \(Int(capabilities.maxMicroAmps)) uA; the calibration profile asks for \(Int(peak)) uA")
        }
        let allowed = LevelPolicy(unlock: profile.levelUnlock, maxLevel: maxLevel).allowedLevel(completedSessions: regimen.completedSessions)
        let level = min(requested ?? allowed, allowed)
        let engine: SessionEngine
        do {
            engine = try SessionEngine(profile: profile, level: level, completedSessions: regimen.completedSessions, maxLevel: maxLevel)
            runner = try await SessionRunner(engine: engine, headband: headband)
        } catch {
            throw StartError(reason: "the calibration profile is refused: \(error)")
        }
        let id = try! Identifier("s-" + UUID().uuidString.lowercased().prefix(13).replacingOccurrences(of: "-", with: ""))
        let startDate = now()
        let day = Regimen.day(of: startDate)
        regimen.sessionStarted(on: day)
        sessionId = id
        reportedTrips = []
        levelRequester = nil
        stopRequester = nil
        startedAt = startDate
        journal?.write(SessionJournal.Entry(
            sessionId: id.rawValue, level: engine.level, startedAt: startDate, stimulatingS: 0, levelSeconds: [:], pauses: 0,
            chargeMicroCoulombs: [:]))
        await emit(.sessionStarted(SessionStarted(
            sessionId: id, level: engine.level, profileVersion: profile.version, channels: profile.channels.map(\.id),
            regimenPhase: regimen.phase(on: day), regimenDay: regimen.dayNumber(on: day), requestedBy: requestedBy)))
        task = Task { await self.drive() }
        return id
    }

    /// Asks for a level; applies at the next pulse boundary through a ramp.
    /// - Returns: the level granted, or nil when no session runs.
    public func requestLevel(_ level: Int, requestedBy: String? = nil) -> Int? {
        guard runner != nil else { return nil }
        levelRequester = requestedBy
        let granted = runner?.engine.requestLevel(level)
        if stepping { queued.append { _ = $0.engine.requestLevel(level) } }
        return granted
    }

    /// Stops the running session through a ramp (`user_stop`, `remote_stop`, `agent_shutdown`).
    /// - Parameter requestedBy: who asked (`button`, `local:uid=N`, `remote`), recorded in
    ///   `session.aborted` (the first stop's, when several come).
    public func stop(reason: AbortReason, requestedBy: String? = nil) {
        guard runner != nil else { return }
        if stopRequester == nil { stopRequester = requestedBy }
        command { $0.engine.stop(reason: reason.rawValue) }
    }

    /// Waits until no session runs.
    public func waitUntilIdle() async {
        await task?.value
    }

    /// Scripts headband faults (the simulated headband), for tests and the simulator.
    public func scriptHeadband(_ faults: [HeadbandFault]) {
        if runner != nil { command { $0.headband.script(faults) } } else { headband.script(faults) }
    }

    /// The live state.
    public func status() -> Status {
        let day = Regimen.day(of: now())
        let allowed = LevelPolicy(unlock: profile.levelUnlock, maxLevel: maxLevel).allowedLevel(completedSessions: regimen.completedSessions)
        return Status(
            running: runner != nil, sessionId: sessionId?.rawValue, level: runner?.engine.level, allowedLevel: allowed,
            elapsedS: startedAt.map { now().timeIntervalSince($0) * clockScale }, stimulatingS: runner?.engine.totals.stimulatingS,
            phase: runner.map { "\($0.engine.phase)" } ?? "idle", completedSessions: regimen.completedSessions,
            regimenPhase: regimen.phase(on: day).rawValue, regimenDay: regimen.dayNumber(on: day))
    }

    /// Telemetry fields of the running session: `(sessionId, level, elapsedS)`.
    public func sessionTelemetry() -> (Identifier, Int, Double)? {
        guard let runner, let sessionId else { return nil }
        return (sessionId, runner.engine.level, runner.engine.totals.stimulatingS)
    }

    /// The headband's latest readings for telemetry: the active channel (during a session),
    /// battery, vibration and temperature.
    public func readings() -> (channel: Telemetry.Channel?, batteryPct: Double, vibrationRpm: Double, temperatureC: Double) {
        let band = runner?.headband ?? headband
        var channel: Telemetry.Channel?
        if let runner {
            let index = runner.engine.channelIndex
            let amplitude = runner.engine.amplitudeMicroAmps
            let row = runner.engine.setting
            channel = Telemetry.Channel(
                id: profile.channels[index].id, peakMicroAmps: amplitude,
                rmsMicroAmps: amplitude * (2 * row.phaseS * row.frequencyHz).squareRoot(), impedanceOhms: 0,
                complianceVolts: profile.complianceVolts, contact: {
                    if case .running = runner.engine.phase { return true }
                    return false
                }())
        }
        return (channel, band.batteryPct, band.vibrationRpm, 31 + min(3, band.stimulatedS / 300))
    }

    /// While no session runs, lets `seconds` of headband time pass and acts on the headband's
    /// button: a short press starts a session at the highest level allowed.
    public func idleTick(seconds: Double) async {
        guard runner == nil else { return }
        await headband.idle(seconds)
        let status = await headband.status(channel: 0)
        if status.buttons.contains(.short) { _ = try? await start(requestedBy: "button") }
    }

    /// The headband's firmware version now.
    public var firmwareVersion: String { (runner?.headband ?? headband).firmware }

    /// Installs firmware on the headband; only when no session runs.
    /// - Returns: nil when a session runs (try later), else whether the new version runs.
    public func installFirmware(_ image: [UInt8], version: String) async -> Bool? {
        guard runner == nil else { return nil }
        return await headband.installFirmware(image, version: version)
    }

    private func drive() async {
        var debt = 0.0
        var lastCheckpoint = 0.0
        while var current = runner {
            // Step and take the events on one copy, stored back before any suspension, so that
            // commands arriving while events are published act on the latest state.
            stepping = true
            let step = await current.step()
            stepping = false
            for change in queued { change(&current) }
            queued.removeAll()
            let events = current.engine.takeEvents()
            runner = current
            for event in events { await publish(event) }
            switch step {
            case .stimulated(let segment): debt += segment.durationS / timeScale
            case .idle(let seconds): debt += seconds / timeScale
            case .ended: break
            }
            if case .ended = step {
                headband = current.headband
                runner = nil
                if let pending = pendingProfile {
                    profile = pending
                    pendingProfile = nil
                }
                break
            }
            if current.engine.totals.stimulatingS - lastCheckpoint >= 5 {
                lastCheckpoint = current.engine.totals.stimulatingS
                checkpoint(current.engine)
            }
            // Pace in real time (scaled), sleeping in slices of at least 5 ms.
            if debt >= 0.005 {
                try? await Task.sleep(for: .seconds(debt))
                debt = 0
            }
        }
    }

    /// Applies a command to the running session (and, while a step is under way, to the runner
    /// that step returns).
    private func command(_ change: @escaping (inout SessionRunner) -> Void) {
        guard var current = runner else { return }
        change(&current)
        runner = current
        if stepping { queued.append(change) }
    }

    private func checkpoint(_ engine: SessionEngine) {
        guard let journal, let sessionId, let startedAt else { return }
        let totals = engine.totals
        journal.write(SessionJournal.Entry(
            sessionId: sessionId.rawValue, level: engine.level, startedAt: startedAt, stimulatingS: totals.stimulatingS,
            levelSeconds: Dictionary(uniqueKeysWithValues: totals.levelSeconds.map { (String($0.key), $0.value) }),
            pauses: totals.pauses, chargeMicroCoulombs: totals.chargeMicroCoulombs))
    }

    private func publish(_ event: EngineEvent) async {
        guard let sessionId, let runner else { return }
        switch event {
        case .levelChanged(let from, let to):
            await emit(.sessionLevelChanged(LevelChanged(sessionId: sessionId, from: from, to: to, requestedBy: levelRequester)))
            levelRequester = nil
        case .paused(let reason):
            await emit(.sessionPaused(PauseChange(sessionId: sessionId, reason: reason)))
        case .resumed(let reason):
            await emit(.sessionResumed(PauseChange(sessionId: sessionId, reason: reason)))
        case .trip(let violation):
            guard reportedTrips.insert("\(violation.rule.rawValue)/\(violation.channelID ?? "")").inserted else { return }
            await emit(.safetyTrip(SafetyTrip(
                sessionId: sessionId, rule: violation.rule.rawValue, channel: violation.channelID,
                value: violation.value.isFinite ? violation.value : -1, limit: violation.limit)))
        case .ended(let outcome):
            let end = now()
            let day = Regimen.day(of: end)
            if outcome.isCompleted { regimen.sessionCompleted(on: day) }
            let totals = runner.engine.totals
            var summary = SessionSummary(
                sessionId: sessionId, durationS: max(0, end.timeIntervalSince(startedAt ?? end)) * clockScale,
                stimulatingS: totals.stimulatingS,
                levelSeconds: Dictionary(uniqueKeysWithValues: totals.levelSeconds.map { (String($0.key), $0.value) }),
                pauses: totals.pauses, chargeMicroCoulombs: totals.chargeMicroCoulombs,
                regimenPhase: regimen.phase(on: day), regimenDay: regimen.dayNumber(on: day))
            if case .aborted(let reason) = outcome {
                summary.reason = AbortReason(rawValue: reason)
                // A user stop nobody asked for through the agent came from the headband's button.
                if reason == AbortReason.userStop.rawValue {
                    summary.requestedBy = stopRequester ?? "button"
                } else if reason == AbortReason.remoteStop.rawValue {
                    summary.requestedBy = stopRequester
                }
                await emit(.sessionAborted(summary))
            } else {
                await emit(.sessionCompleted(summary))
            }
            journal?.clear()
            self.sessionId = nil
            self.startedAt = nil
        }
    }
}
