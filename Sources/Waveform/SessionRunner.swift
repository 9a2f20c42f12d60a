/// Runs a session: the engine plans, the monitor checks, the headband executes, and the
/// measurements flow back. Used by the agent (paced in real time) and by the simulator and
/// tests (as fast as the CPU allows).
public struct SessionRunner: Sendable {
    /// What one step did.
    public enum Step: Sendable, Hashable {
        /// A segment was sent and executed.
        case stimulated(Segment)
        /// Nothing to send (paused); the headband idled for `seconds`.
        case idle(seconds: Double)
        /// The session is over.
        case ended(SessionOutcome)
    }

    public var engine: SessionEngine
    public private(set) var monitor: SafetyMonitor
    public var headband: any Headband
    /// How long a paused step idles, seconds.
    public var idleStepS = 0.1

    /// Creates a runner; the headband begins a session (its watchdog restarts).
    /// - Throws: ``WaveformError`` when the profile breaks a hard rule.
    public init(engine: SessionEngine, headband: any Headband) async throws(WaveformError) {
        self.engine = engine
        self.monitor = try SafetyMonitor(profile: engine.profile)
        self.headband = headband
        self.headband.watchdogS = engine.profile.sessionSeconds
        await self.headband.beginSession()
    }

    /// Runs one step and returns what happened; read the engine's events with `engine.takeEvents()`.
    public mutating func step() async -> Step {
        if case .ended(let outcome) = engine.phase {
            await headband.endSession()
            return .ended(outcome)
        }
        let status = await headband.status(channel: engine.channelIndex)
        let vibrating = engine.level == HardLimits.vibrationLevel && engine.amplitudeMicroAmps > 0
        if let violation = monitor.observe(status, vibrating: vibrating) { engine.trip(violation) }
        engine.consume(status)
        guard let segment = engine.nextSegment(nowS: headband.timeS) else {
            monitor.outputStopped()
            if case .ended(let outcome) = engine.phase {
                await headband.endSession()
                return .ended(outcome)
            }
            await headband.idle(idleStepS)
            return .idle(seconds: idleStepS)
        }
        if let violation = monitor.check(segment) {
            let wasStopping = { if case .stopping = engine.phase { true } else { false } }()
            engine.trip(violation)
            if wasStopping { engine.abortNow(reason: "safety_trip") }
            monitor.outputStopped()
            return await step()
        }
        let reports = await headband.execute(segment)
        for report in reports {
            if let violation = monitor.observe(report) {
                engine.trip(violation)
                break
            }
        }
        engine.consume(reports)
        if reports.count < segment.pairs && !engine.isEnded {
            // The headband's own watchdog or a lost link cut the segment short.
            engine.abortNow(reason: headband.connected ? "safety_trip" : "headband_lost")
        }
        return .stimulated(segment)
    }

    /// Runs until the session ends or `limitS` of headband time pass.
    /// - Returns: every segment sent and every engine event, in order.
    public mutating func runToEnd(limitS: Double = 7200) async -> (segments: [Segment], events: [EngineEvent]) {
        var segments: [Segment] = []
        var events: [EngineEvent] = []
        while headband.timeS < limitS {
            let result = await step()
            events += engine.takeEvents()
            switch result {
            case .stimulated(let segment): segments.append(segment)
            case .idle: continue
            case .ended: return (segments, events)
            }
        }
        engine.abortNow(reason: "headband_lost")
        events += engine.takeEvents()
        return (segments, events)
    }
}
