import EdgeAgent
import Foundation
import Logging
import MQTT
import Outbox
import SpectraProtocol
import Synchronization
import Waveform

/// One simulated gateway: the agent's own session controller (waveform engine, safety monitor,
/// simulated headband), regimen, SQLite outbox and MQTT client, driven by a simulated wearer
/// on simulated time.
public actor SimulatedGateway {
    public let gateway: Identifier
    public let wearer: Wearer
    private let fleet: Identifier
    private let clock: SimClock
    private let profile: CalibrationProfile
    private let counters: FleetCounters
    private let logger: Logger
    private let envelopes: EnvelopeFactory
    private let uplink: GatewayUplink
    private let outbox: Outbox
    private let brokerConfiguration: MQTTConfiguration
    private var client: MQTTClient
    private var presence: Task<Void, Never>?
    private var random: SeededRandom
    private var regimen = Regimen()
    /// Gateway clock minus true time (seconds); non-zero gateways report `synced: false`.
    private let clockSkewSeconds: Double
    private let telemetryIntervalSeconds: Double
    private let idleTelemetryIntervalSeconds: Double
    private var inSession = false
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
        envelopes = EnvelopeFactory(fleet: fleet, gateway: gateway)
        uplink = GatewayUplink(envelopes: envelopes)
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        outbox = try Outbox(OutboxConfiguration(path: "\(dataDirectory)/outbox.sqlite", targetQueue: outboxQueue), logger: logger)
        var configuration = broker
        configuration.clientID = "\(fleet)-\(gateway)"
        configuration.cleanStart = true
        configuration.will = uplink.will(ts: clock.now())
        brokerConfiguration = configuration
        client = MQTTClient(configuration)
    }

    /// Connects a client (a new one after an outage: a stopped client is not reused) and lets
    /// the outbox drain through it.
    private func connectUplink(fresh: Bool) async {
        if fresh { client = MQTTClient(brokerConfiguration) }
        await outbox.attach(client)
        let updates = client.connectionUpdates()
        presence?.cancel()
        let counters = self.counters
        let logger = self.logger
        presence = Task {
            var up = false
            defer { if up { counters.connected.subtract(1, ordering: .relaxed) } }
            for await state in updates {
                switch state {
                case .connected:
                    if !up { counters.connected.add(1, ordering: .relaxed) }
                    up = true
                    await self.publishPresence()
                case .disconnected(let reason):
                    if up { counters.connected.subtract(1, ordering: .relaxed) }
                    up = false
                    if reason != "stopped", counters.linkFailed(reason) {
                        logger.error("a gateway cannot reach the broker (said once per cause for the whole fleet)", metadata: ["reason": "\(reason)"])
                    }
                case .connecting:
                    break
                }
            }
        }
        client.start()
    }

    private var gatewayNow: Date { clock.now().addingTimeInterval(clockSkewSeconds) }

    /// Lives through `days` simulated days from the clock's start, then (when `live`) stays
    /// online, idle, until cancelled.
    func run(days: Int, live: Bool) async {
        await connectUplink(fresh: false)
        online = true
        counters.online.add(1, ordering: .relaxed)
        let telemetry = Task { await self.telemetryLoop() }
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
        presence?.cancel()
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
        await controller.waitUntilIdle()
        inSession = false
        regimen = await controller.currentRegimen
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
        await uplink.enqueue(message, into: outbox, now: gatewayNow, synced: clockSkewSeconds == 0)
        counters.enqueued.add(1, ordering: .relaxed)
    }

    /// Telemetry every `telemetryIntervalSeconds` (real time) in a session, less often idle, on
    /// a fixed cadence (the time an enqueue takes does not stretch the interval).
    private func telemetryLoop() async {
        var due = ContinuousClock.now + .seconds(Double.random(in: 0...idleTelemetryIntervalSeconds, using: &random))
        await sleep(until: due)
        while !Task.isCancelled {
            let stats = await outbox.stats()
            let level = regimen.completedSessions >= 21 ? 3 : regimen.completedSessions >= 7 ? 2 : 1
            let telemetry = Telemetry(
                level: inSession ? level : nil, channels: [], batteryPct: 60 + Double(random.next() % 40), headbandTempC: inSession ? 31.5 : 24,
                agent: .init(outboxDepth: stats.depth, outboxBytes: stats.bytes, oldestUnackedS: stats.oldestUnackedSeconds, reconnects: client.reconnects, rssKiB: 0))
            await enqueue(.telemetry(telemetry))
            due = max(due + .seconds(inSession ? telemetryIntervalSeconds : idleTelemetryIntervalSeconds), .now)
            await sleep(until: due)
        }
    }

    /// On the fleet's shared ticker when there is one; returns early when cancelled.
    private func sleep(until due: ContinuousClock.Instant) async {
        if let ticker {
            await ticker.sleep(until: due)
        } else {
            try? await Task.sleep(until: due)
        }
    }

    private func outage(from: Date, hours: Double) async {
        try? await clock.sleep(until: from)
        guard online, !Task.isCancelled, !shuttingDown else { return }
        online = false
        counters.online.add(-1, ordering: .relaxed)
        counters.outages.add(1, ordering: .relaxed)
        try? await client.publish(uplink.status(online: false, reason: "outage", ts: gatewayNow))
        await client.disconnect()
        try? await clock.sleep(until: from.addingTimeInterval(hours * 3600))
        guard !Task.isCancelled, !online, !shuttingDown else { return }
        await connectUplink(fresh: true)
        online = true
        counters.online.add(1, ordering: .relaxed)
    }

    private func publishPresence() async {
        let state = ReportedState(
            boot: envelopes.boot, ts: gatewayNow, agentVersion: AgentVersion.current, firmware: "2.4.0", configVersions: [:],
            levelLimits: .init(maxLevel: 3, unlockedLevel: regimen.completedSessions >= 21 ? 3 : regimen.completedSessions >= 7 ? 2 : 1, completedSessions: regimen.completedSessions),
            groups: [])
        try? await client.publish(uplink.status(online: true, ts: gatewayNow))
        try? await client.publish(uplink.state(state))
    }

    /// Drains what is left (a few seconds at most), says offline, closes.
    func shutdown() async {
        // A gateway in the middle of an outage comes back to hand over its backlog.
        shuttingDown = true
        outages.forEach { $0.cancel() }
        if !online {
            await connectUplink(fresh: true)
            online = true
            counters.online.add(1, ordering: .relaxed)
        }
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline {
            let depth = await outbox.stats().depth
            if client.isConnected && depth == 0 { break }
            try? await Task.sleep(for: .milliseconds(50))
        }
        // What the broker never took, counted as such (the simulator's last line and its exit
        // status say so).
        // Messages the broker refused are set aside in the outbox: not delivered either.
        let left = await outbox.stats()
        counters.undelivered.add(left.depth + left.refused, ordering: .relaxed)
        counters.refused.add(left.refused, ordering: .relaxed)
        if let refusal = left.lastRefusal { _ = counters.linkFailed("the broker refused a message: \(refusal)") }
        if client.isConnected {
            try? await client.publish(uplink.status(online: false, reason: "shutdown", ts: gatewayNow))
        }
        await outbox.close()
        await client.disconnect()
        if online { counters.online.add(-1, ordering: .relaxed) }
        online = false
    }

    /// Messages still waiting in this gateway's outbox.
    func backlog() async -> Int { await outbox.stats().depth }
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
