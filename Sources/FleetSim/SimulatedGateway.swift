import EdgeAgent
import Foundation
import Logging
import MQTT
import Outbox
import SpectraProtocol
import Synchronization
import Waveform

/// One simulated gateway: the agent's own session controller (waveform engine, safety monitor,
/// simulated headband), regimen, and gateway core (SQLite outbox, MQTT client, presence,
/// telemetry cadence), driven by a simulated wearer on simulated time.
public actor SimulatedGateway {
    public let gateway: Identifier
    public let wearer: Wearer
    private let fleet: Identifier
    private let clock: SimClock
    private let profile: CalibrationProfile
    private let counters: FleetCounters
    private let logger: Logger
    private let core: GatewayCore
    /// Sessions completed, as the retained state reports them (read by the core on a connect).
    private let completedSessions = SharedCount()
    private var random: SeededRandom
    private var regimen = Regimen()
    /// Gateway clock minus true time (seconds); non-zero gateways report `synced: false`.
    private let clockSkewSeconds: Double
    private let telemetryIntervalSeconds: Double
    private let idleTelemetryIntervalSeconds: Double
    private var inSession = false
    /// The level of the session running (or that would run).
    private var level: Int { Self.level(completedSessions: regimen.completedSessions) }
    private static func level(completedSessions: Int) -> Int { completedSessions >= 21 ? 3 : completedSessions >= 7 ? 2 : 1 }
    private var online = false
    private var outages: [Task<Void, Never>] = []
    private var shuttingDown = false
    private let ticker: FleetTicker?

    init(
        fleet: Identifier, gateway: Identifier, seed: UInt64, clock: SimClock, profile: CalibrationProfile, broker: MQTTConfiguration,
        dataDirectory: String, counters: FleetCounters, telemetryIntervalSeconds: Double, idleTelemetryIntervalSeconds: Double,
        spreadDays: Int, outboxQueue: DispatchQueue? = nil, ticker: FleetTicker? = nil, logger: Logger
    ) throws {
        self.ticker = ticker
        self.fleet = fleet
        self.gateway = gateway
        self.clock = clock
        self.profile = profile
        self.counters = counters
        self.logger = logger
        self.telemetryIntervalSeconds = telemetryIntervalSeconds
        self.idleTelemetryIntervalSeconds = idleTelemetryIntervalSeconds
        var random = SeededRandom(seed: seed)
        wearer = Wearer.draw(using: &random, spreadDays: spreadDays)
        clockSkewSeconds = random.chance(0.03) ? Double(Int.random(in: -6...6, using: &random) * 3600 + 1800) : 0
        self.random = random
        let envelopes = EnvelopeFactory(fleet: fleet, gateway: gateway)
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        let outbox = try Outbox(OutboxConfiguration(path: "\(dataDirectory)/outbox.sqlite", targetQueue: outboxQueue), logger: logger)
        var configuration = broker
        configuration.clientID = "\(fleet)-\(gateway)"
        configuration.cleanStart = true
        let skew = clockSkewSeconds
        let now: @Sendable () -> Date = { clock.now().addingTimeInterval(skew) }
        let completed = completedSessions
        core = GatewayCore(
            uplink: GatewayUplink(envelopes: envelopes), outbox: outbox, broker: configuration, now: now, synced: skew == 0,
            reportedState: {
                let sessions = completed.value
                return ReportedState(
                    boot: envelopes.boot, ts: now(), agentVersion: AgentVersion.current, firmware: "2.4.0", configVersions: [:],
                    levelLimits: .init(maxLevel: 3, unlockedLevel: Self.level(completedSessions: sessions), completedSessions: sessions),
                    groups: [])
            },
            connectionChanged: { [counters, logger] state, wasConnected in
                Self.count(state, wasConnected: wasConnected, counters: counters, logger: logger)
            },
            presenceFailed: { [counters, logger] error in
                if counters.linkFailed("presence: \(error)") {
                    logger.warning("a gateway's birth or state did not go (said once per cause for the whole fleet)", metadata: ["error": "\(error)"])
                }
            })
    }

    /// Counts connections for the progress line; a link failure is logged once per cause for
    /// the whole fleet.
    private static func count(_ state: ConnectionState, wasConnected: Bool, counters: FleetCounters, logger: Logger) {
        switch state {
        case .connected:
            if !wasConnected { counters.connected.add(1, ordering: .relaxed) }
        case .disconnected(let reason):
            if wasConnected { counters.connected.subtract(1, ordering: .relaxed) }
            if reason != "stopped", counters.linkFailed(reason) {
                logger.error("a gateway cannot reach the broker (said once per cause for the whole fleet)", metadata: ["reason": "\(reason)"])
            }
        case .connecting:
            break
        }
    }

    /// Lives through `days` simulated days from the clock's start, then (when `live`) stays
    /// online, idle, until cancelled.
    func run(days: Int, live: Bool) async {
        // The outbox's dispatcher outlives this task's cancellation (which is how a fleet is
        // stopped): the shutdown drains through it, then closes the outbox, which ends it.
        let dispatcher = Task { [outbox = core.outbox] in await outbox.run() }
        await core.connect()
        online = true
        counters.online.add(1, ordering: .relaxed)
        let firstAfter = Duration.seconds(Double.random(in: 0...idleTelemetryIntervalSeconds, using: &random))
        let telemetry = Task { [core, ticker] in
            await core.runTelemetry(
                firstAfter: firstAfter, interval: { [weak self] in await self?.telemetryInterval() ?? 60 },
                make: { [weak self] in await self?.telemetry() },
                sleep: { due in
                    if let ticker { await ticker.sleep(until: due) } else { try? await Task.sleep(until: due) }
                })
        }
        var day = 0
        while !Task.isCancelled && day < days {
            await liveDay(day)
            day += 1
        }
        // Live: stay connected (presence, idle telemetry, any backlog) until cancelled, which
        // ends the sleep at once.
        while live && !Task.isCancelled {
            try? await Task.sleep(for: .seconds(3600))
        }
        telemetry.cancel()
        await telemetry.value
        // Not in this (cancelled) task: in it every sleep of the shutdown's bounded waits returns
        // at once, and with the broker gone those waits spin, each holding one of the threads
        // every gateway shares for its whole 15 s, so a fleet stopped without a broker took
        // 15 s per gateway per core to exit.
        await Task { await self.shutdown() }.value
        await dispatcher.value
    }

    private func liveDay(_ day: Int) async {
        let dayStart = clock.virtualStart.addingTimeInterval(Double(day) * 86_400)
        // Some days the gateway loses its uplink for hours and comes back with a backlog.
        if random.chance(0.02) {
            let from = dayStart.addingTimeInterval(Double.random(in: 0...43_200, using: &random))
            let hours = Double.random(in: 2...14, using: &random)
            outages.append(Task { await self.outage(from: from, hours: hours) })
        }
        if day >= wearer.startDay {
            let regimenDay = regimen.dayNumber(on: Regimen.day(of: dayStart, in: TimeZone(identifier: "UTC")!))
            if random.chance(wearer.sessionChance(regimenDay: regimen.firstDay == nil ? 1 : regimenDay)) {
                let at = dayStart.addingTimeInterval((wearer.usualHour + Double.random(in: -1...1, using: &random)) * 3600)
                try? await clock.sleep(until: at)
                if Task.isCancelled { return }
                await session()
            }
        }
        try? await clock.sleep(until: dayStart.addingTimeInterval(86_400))
    }

    /// One session through the agent's own controller, with whatever the headband does.
    private func session() async {
        let faults = Wearer.sessionFaults(using: &random).compactMap(HeadbandFault.init(script:))
        let controller = SessionController(
            profile: profile,
            headband: SimulatedHeadband(channels: profile.channels.count, complianceVolts: profile.complianceVolts, seed: random.next(), faults: faults),
            regimen: regimen, journal: nil, timeScale: clock.speed, clockIsScaled: true, now: { [clock] in clock.now() },
            emit: { [weak self] event in await self?.emitEvent(event) })
        do {
            try await controller.start(level: nil)
        } catch {
            return
        }
        counters.sessionsStarted.add(1, ordering: .relaxed)
        inSession = true
        await core.telemetryDue()
        await controller.waitUntilIdle()
        inSession = false
        regimen = await controller.currentRegimen
        completedSessions.value = regimen.completedSessions
        await core.telemetryDue()
    }

    private func emitEvent(_ event: Event) async {
        switch event {
        case .sessionCompleted: counters.sessionsCompleted.add(1, ordering: .relaxed)
        case .sessionAborted: counters.sessionsAborted.add(1, ordering: .relaxed)
        default: break
        }
        await enqueue(.event(event))
    }

    private func enqueue(_ message: Message) async {
        await core.enqueue(message)
        counters.enqueued.add(1, ordering: .relaxed)
    }

    /// Telemetry: what the simulated headband reports, and the agent's own figures.
    private func telemetry() async -> Telemetry {
        defer { counters.enqueued.add(1, ordering: .relaxed) }
        return Telemetry(
            level: inSession ? level : nil, channels: [], batteryPct: 60 + Double(random.next() % 40), headbandTempC: inSession ? 31.5 : 24,
            agent: await core.agentFigures(rssKiB: 0))
    }

    /// Every `telemetryIntervalSeconds` (real time) in a session, less often idle.
    private func telemetryInterval() -> Double { inSession ? telemetryIntervalSeconds : idleTelemetryIntervalSeconds }

    private func outage(from: Date, hours: Double) async {
        try? await clock.sleep(until: from)
        guard online, !Task.isCancelled, !shuttingDown else { return }
        online = false
        counters.online.add(-1, ordering: .relaxed)
        counters.outages.add(1, ordering: .relaxed)
        await core.outage(reason: "outage")
        try? await clock.sleep(until: from.addingTimeInterval(hours * 3600))
        guard !Task.isCancelled, !online, !shuttingDown else { return }
        await core.connect(fresh: true)
        online = true
        counters.online.add(1, ordering: .relaxed)
    }

    /// Drains what is left (a few seconds at most), says offline, closes.
    func shutdown() async {
        // A gateway in the middle of an outage comes back to hand over its backlog.
        shuttingDown = true
        outages.forEach { $0.cancel() }
        if !online {
            await core.connect(fresh: true)
            online = true
            counters.online.add(1, ordering: .relaxed)
        }
        let left = await core.shutdown(drainFor: .seconds(15), untilConnected: true)
        // What the broker never took, counted as such (the simulator's last line and its exit
        // status say so). Messages the broker refused are set aside in the outbox: not
        // delivered either.
        counters.undelivered.add(left.depth + left.refused, ordering: .relaxed)
        counters.refused.add(left.refused, ordering: .relaxed)
        if let refusal = left.lastRefusal { _ = counters.linkFailed("the broker refused a message: \(refusal)") }
        if online { counters.online.add(-1, ordering: .relaxed) }
        online = false
    }

    /// Messages still waiting in this gateway's outbox.
    func backlog() async -> Int { await core.outbox.stats().depth }
}

/// A count one task writes and another reads.
final class SharedCount: Sendable {
    private let storage = Atomic<Int>(0)
    var value: Int {
        get { storage.load(ordering: .relaxed) }
        set { storage.store(newValue, ordering: .relaxed) }
    }
}

/// Fleet-wide counters for the progress display.
public final class FleetCounters: Sendable {
    public let sessionsStarted = Atomic<Int>(0)
    public let sessionsCompleted = Atomic<Int>(0)
    public let sessionsAborted = Atomic<Int>(0)
    public let enqueued = Atomic<Int>(0)
    /// Messages still in the gateways' outboxes when they shut down: never delivered.
    public let undelivered = Atomic<Int>(0)
    /// Of those, messages the broker refused (not authorised, quota, too large).
    public let refused = Atomic<Int>(0)
    public let online = Atomic<Int>(0)
    public let outages = Atomic<Int>(0)
    /// Gateways whose client is connected to the broker now.
    public let connected = Atomic<Int>(0)
    /// The last reason a gateway's client gave for not reaching the broker.
    public var lastLinkError: String? { linkErrors.withLock { $0.last } }
    private let linkErrors = Mutex<(last: String?, said: Set<String>)>((nil, []))
    public init() {}

    /// Records a link failure; true the first time this reason is seen (to log it once for the
    /// whole fleet; at most 64 distinct reasons are remembered).
    func linkFailed(_ reason: String) -> Bool {
        linkErrors.withLock { errors in
            errors.last = reason
            guard !errors.said.contains(reason), errors.said.count < 64 else { return false }
            errors.said.insert(reason)
            return true
        }
    }
}
