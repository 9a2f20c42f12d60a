import Foundation
import HeadbandLink
import Logging
import MQTT
import Outbox
import ServiceLifecycle
import SpectraProtocol
import Waveform

/// The gateway daemon, as one service: the outbox, the MQTT connection (birth, Will, state),
/// the session controller with the simulated headband, desired config, telemetry and the local
/// control socket. Graceful shutdown ramps a running session down (`agent_shutdown`), flushes
/// the outbox while connected and marks the gateway offline.
public actor AgentRuntime: Service {
    private let configuration: AgentConfiguration
    private let baseProfile: CalibrationProfile
    private let keyring: Keyring
    private let logger: Logger
    private let envelopes: EnvelopeFactory
    private let uplink: GatewayUplink
    /// The outbox and the broker connection, as every gateway runs them.
    private var core: GatewayCore?
    private var outbox: Outbox? { core?.outbox }
    private var client: MQTTClient?
    private var sessions: SessionController?
    /// The headband over its serial link (nil: the simulated headband in this process).
    private var linkedHeadband: LinkedHeadband?
    private var control: ControlSocketServer?
    private var firmware: FirmwareUpdater?
    private var desired: DesiredConfig
    private var state: AgentState
    private var subscribed = false
    /// The outbox's refusal count, whether any refused message was set aside yet, and the last
    /// refusal, as the retained state last carried them, and when.
    private var publishedRefusals: (count: Int, stored: Bool, last: String?, at: Date) = (0, false, nil, .distantPast)
    private var stopping = false
    /// The broker link as an operator sees it (log and `status`).
    private var link = LinkDiagnostics()
    /// Whether the last connection state seen was connected: losing the broker is logged once,
    /// not once per failed attempt while it stays away.

    private var statePath: String { "\(configuration.dataDirectory)/state.json" }
    /// The control socket of an agent using `dataDirectory`.
    public static func controlSocketPath(dataDirectory: String) -> String { "\(dataDirectory)/agent.sock" }

    public init(configuration: AgentConfiguration, profile: CalibrationProfile, trustedKeys: [VerifyingKey], logger: Logger) {
        self.configuration = configuration
        self.baseProfile = profile
        self.keyring = Keyring(trustedKeys)
        self.logger = logger
        var envelopes = EnvelopeFactory(fleet: configuration.fleet, gateway: configuration.gateway)
        envelopes.clock = configuration.clock
        self.envelopes = envelopes
        uplink = GatewayUplink(envelopes: envelopes)
        let state = AgentState.load(path: "\(configuration.dataDirectory)/state.json")
        self.state = state
        self.desired = DesiredConfig(
            fleet: configuration.fleet, gateway: configuration.gateway, groups: configuration.groups, keyring: keyring,
            applied: state.applied)
    }

    /// Opens what the agent runs on (data directory, outbox, broker client, headband, session
    /// state, control socket) and wires the client's consumers; nothing connects yet.
    /// - Returns: the broker client and the outbox, for the service group to run before this
    ///   runtime (they stop after it: its shutdown drains through them).
    /// - Throws: when the data directory, the outbox or the control socket cannot be opened.
    public func open() async throws -> [any Service] {
        try FileManager.default.createDirectory(atPath: configuration.dataDirectory, withIntermediateDirectories: true)
        let outbox = try Outbox(
            OutboxConfiguration(
                path: "\(configuration.dataDirectory)/outbox.sqlite",
                durability: configuration.durability == .full ? .full : .normal,
                maxBytes: configuration.outboxMaxBytes, minFreeBytes: configuration.outboxMinFreeBytes),
            logger: logger,
            evictionNotice: { [uplink] eviction, seq, epoch in
                let event = Event.outboxEvicted(OutboxEvicted(class: "\(eviction.messageClass)", count: eviction.count, bytes: eviction.bytes))
                return uplink.outboxMessage(.event(event), seq: seq, epoch: epoch)
            })
        let core = GatewayCore(
            uplink: uplink, outbox: outbox, broker: configuration.broker.client(id: "\(configuration.fleet)-\(configuration.gateway)"),
            reportedState: { [weak self] in await self?.reportedState() },
            connectionChanged: { [weak self] state, _ in await self?.connectionChanged(state) },
            presenceFailed: { [logger] error in
                logger.warning("publishing presence failed; retried on the next connect", metadata: ["error": "\(error)"])
            })
        self.core = core
        if let reset = await outbox.reset {
            await enqueue(.event(.outboxReset(OutboxReset(reason: reset.reason, movedTo: reset.movedTo))))
        }
        // trust.keys is read at the start: layers its keys no longer sign stop here.
        await revalidateConfig()
        var regimen = state.regimen
        regimen.maxPerDay = configuration.maxSessionsPerDay
        let scripted = configuration.headbandFaults.compactMap(ScriptedFault.init(script:))
        let headband: any Headband
        if configuration.headbandPort == "simulated" {
            headband = SimulatedHeadband(
                channels: baseProfile.channels.count, complianceVolts: baseProfile.complianceVolts, seed: 1,
                faults: scripted.filter { !$0.perSession }.map(\.fault), sessionFaults: scripted.filter(\.perSession).map(\.fault))
        } else {
            let linked = LinkedHeadband(
                path: configuration.headbandPort, replyTimeoutS: Double(configuration.headbandReplyTimeoutMs) / 1000, logger: logger)
            self.linkedHeadband = linked
            headband = linked
        }
        let sessions = SessionController(
            profile: (try? desired.profile(applyingTo: baseProfile)) ?? baseProfile,
            headband: headband,
            regimen: regimen, journal: SessionJournal(path: "\(configuration.dataDirectory)/session.json"),
            timeScale: configuration.timeScale,
            emit: { [weak self] event in await self?.sessionEvent(event) })
        self.sessions = sessions
        await sessions.setMaxLevel(desired.effective.maxLevel ?? 3)
        await sessions.recoverAfterRestart()
        firmware = FirmwareUpdater(
            fleet: configuration.fleet, gateway: configuration.gateway, keyring: keyring, hardware: baseProfile.hardware,
            stagingDirectory: "\(configuration.dataDirectory)/firmware", sessions: sessions, lastVersion: state.applied.firmwareVersion,
            report: { [weak self] progress in
                await self?.enqueue(.event(.firmwareProgress(progress)))
                if progress.stage == .installed || progress.stage == .rolledBack { await self?.publishPresence() }
            },
            accepted: { [weak self] version, _ in await self?.firmwareAccepted(version) })

        let control = try ControlSocketServer(path: Self.controlSocketPath(dataDirectory: configuration.dataDirectory)) {
            [weak self] request, peer in await self?.handleControl(request, from: peer) ?? Data("{\"ok\":false,\"error\":\"shutting down\"}".utf8)
        }
        self.control = control
        let client = await core.client
        self.client = client
        await core.wire()
        return [client, outbox]
    }

    /// Runs the sessions, telemetry, config expiry, the headband and the control socket until a
    /// graceful shutdown, then ends any session and drains the outbox (see ``open()``).
    public func run() async throws {
        guard let core, let client, let control else {
            throw AgentRuntimeError("open() was not called before run()")
        }
        logger.info("agent started", metadata: ["gateway": "\(configuration.gateway)", "broker": "\(configuration.broker.url)"])

        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await message in client.messages { await self.received(message) } }
            group.addTask {
                await core.runTelemetry(
                    interval: { [weak self] in await self?.telemetryInterval() ?? 60 }, make: { [weak self] in await self?.telemetry() })
            }
            group.addTask {
                // Expiry is checked every few seconds: a layer stops applying within 5 s of it.
                while (try? await Task.sleep(for: .seconds(5))) != nil { await self.revalidateConfig() }
            }
            group.addTask { await self.headbandLoop() }
            group.addTask { await control.run() }
            try? await gracefulShutdown()
            await self.shutdown()
            group.cancelAll()
        }
    }

    // MARK: Shutdown

    private func shutdown() async {
        guard !stopping else { return }
        stopping = true
        logger.info("agent stopping")
        if let sessions {
            await sessions.stop(reason: .agentShutdown)
            await sessions.waitUntilIdle()
        }
        // The outbox closes and the client disconnects after this service (see ``open()``).
        await core?.drain(for: .seconds(5))
        control?.stop()
    }

    // MARK: Presence

    private func connectionChanged(_ state: ConnectionState) async {
        if !stopping, let line = link.update(state) {
            switch line {
            case .connected(let after):
                var metadata: Logger.Metadata = ["broker": "\(configuration.broker.url)"]
                if let after { metadata["after"] = "\(after)" }
                logger.info("connected to the broker", metadata: metadata)
            case .failing(let reason, wasConnected: true):
                logger.warning("lost the broker; queueing until it is back", metadata: ["reason": "\(reason)"])
            case .failing(let reason, wasConnected: false):
                logger.error(
                    "cannot connect to the broker; queueing and retrying (said again only when the cause changes, or every 5 minutes)",
                    metadata: ["broker": "\(configuration.broker.url)", "reason": "\(reason)"])
            }
        }
        guard case .connected = state, let client else { return }
        if !subscribed {
            let fleet = configuration.fleet
            let gateway = configuration.gateway
            var subscriptions = desired.topics.map { Subscription($0.path) }
            subscriptions.append(Subscription(Topic.stop(fleet: fleet, gateway: gateway).path))
            subscriptions.append(Subscription(Topic.rebirth(fleet: fleet, gateway: gateway).path))
            subscriptions.append(Subscription(Topic.firmware(fleet: fleet, gateway: gateway).path))
            do {
                try await client.subscribe(subscriptions)
                subscribed = true
            } catch {
                logger.warning("subscribing failed; retried on the next connect", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Publishes the retained birth and state.
    private func publishPresence() async {
        guard let core else { return }
        do {
            try await core.publishPresence()
        } catch {
            // A lost link says so itself.
            if client?.isConnected == true {
                logger.warning("publishing presence failed; retried on the next connect", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The retained state as the birth carries it.
    private func reportedState() async -> ReportedState? {
        guard let sessions else { return nil }
        let status = await sessions.status()
        let outboxStats = await outbox?.stats()
        publishedRefusals = (outboxStats?.refused ?? 0, (outboxStats?.refusedStored ?? 0) > 0, outboxStats?.lastRefusal, Date())
        let reported = ReportedState(
            boot: envelopes.boot, ts: Date(), agentVersion: AgentVersion.current, firmware: await sessions.firmwareVersion,
            configVersions: desired.applied.versions,
            levelLimits: .init(maxLevel: desired.effective.maxLevel ?? 3, unlockedLevel: status.allowedLevel, completedSessions: status.completedSessions),
            groups: configuration.groups.map(\.rawValue),
            outboxRefused: outboxStats.flatMap { $0.refused > 0 ? $0.refusedStored : nil }, lastRefusal: outboxStats?.lastRefusal)
        return reported
    }

    // MARK: Commands

    private func received(_ message: MQTTMessage) async {
        guard let topic = try? Topic(parsing: message.topic), let sessions else { return }
        switch topic {
        case .stop:
            let command = StopCommand.lenient(Data(message.payload))
            logger.notice("remote stop", metadata: ["reason": "\(command.reason)"])
            await sessions.stop(reason: .remoteStop, requestedBy: "remote")
        case .rebirth:
            await publishPresence()
        case .firmware:
            // Downloads and installs take time: run them beside the message loop.
            if let firmware {
                let payload = Data(message.payload)
                Task { await firmware.receive(payload) }
            }
        case .fleetConfig, .groupConfig, .gatewayConfig:
            let before = desired
            let decision = desired.receive(Data(message.payload), on: topic)
            switch decision {
            case .unchanged:
                return
            case .applied(let layer, let version):
                // The merged settings must make a profile the engine takes (it applies to the
                // next session when one runs); otherwise the document is refused whole.
                do {
                    try await sessions.setProfile(try desired.profile(applyingTo: baseProfile))
                } catch {
                    desired = before
                    let reason = "profile: the merged settings make a profile the engine refuses: \(error)"
                    logger.warning("config rejected", metadata: ["layer": "\(layer)", "version": "\(version)", "reason": "\(reason)"])
                    await enqueue(.event(.configRejected(ConfigOutcome(layer: layer, version: version, reason: reason))))
                    return
                }
                state.applied = desired.applied
                persist()
                await sessions.setMaxLevel(desired.effective.maxLevel ?? 3)
                // Signed telemetry intervals take effect at once (the wait in progress ends).
                await core?.telemetryDue()
                await enqueue(.event(.configApplied(ConfigOutcome(layer: layer, version: version))))
                await publishPresence()
            case .rejected(let layer, let version, let reason):
                logger.warning("config rejected", metadata: ["layer": "\(layer)", "version": "\(version)", "reason": "\(reason)"])
                // The version as the wire allows it (a refused document's may be anything).
                let reported = min(max(version, WireRanges.configVersion.lowerBound), WireRanges.configVersion.upperBound)
                await enqueue(.event(.configRejected(ConfigOutcome(layer: layer, version: reported, reason: reason))))
            }
        default:
            return
        }
    }

    private func handleControl(_ bytes: Data, from peer: ControlSocketServer.Peer) async -> Data {
        switch ControlRequest.parse(bytes) {
        case .success(let request): return Self.json(await answer(request, by: peer.requester))
        case .failure(let error): return Self.json(["ok": false, "error": error.reason])
        }
    }

    /// An answer's bytes. Not key-sorted: sorting makes JSONSerialization compare keys through
    /// ICU's collation, which would stay resident in the agent for good; `spectra-agent ... --json`
    /// prints its answer sorted.
    private static func json(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object)) ?? Data("{}".utf8)
    }

    /// - Parameter requester: who asked (`local:uid=N`), logged and recorded in the events.
    private func answer(_ request: ControlRequest, by requester: String) async -> [String: Any] {
        guard let sessions, !stopping else { return ["ok": false, "error": "the agent is shutting down"] }
        switch request {
        case .start(let level):
            do {
                let id = try await sessions.start(level: level, requestedBy: requester)
                logger.notice("session started", metadata: ["sessionId": "\(id)", "by": "\(requester)"])
                return ["ok": true, "sessionId": id.rawValue]
            } catch {
                return ["ok": false, "error": error.reason]
            }
        case .stop:
            logger.notice("session stop asked", metadata: ["by": "\(requester)"])
            await sessions.stop(reason: .userStop, requestedBy: requester)
            return ["ok": true]
        case .level(let level):
            guard let granted = await sessions.requestLevel(level, requestedBy: requester) else { return ["ok": false, "error": "no session is running"] }
            logger.notice("level asked", metadata: ["level": "\(level)", "granted": "\(granted)", "by": "\(requester)"])
            return ["ok": true, "level": granted]
        case .status:
            let status = await sessions.status()
            let data = (try? JSONEncoder().encode(status)) ?? Data()
            var object = (try? JSONSerialization.jsonObject(with: data) as? [String: Any]) ?? [:]
            object["ok"] = true
            object["connected"] = client?.isConnected ?? false
            // The link as the log told it (the wire's timestamp format: no ICU date formatter in the agent).
            object["link"] = link.connected ? "up" : "down"
            object["since"] = WireFormat.timestamp(link.since)
            if let lastError = link.lastError { object["lastError"] = lastError }
            if let outbox {
                let stats = await outbox.stats()
                object["outboxDepth"] = stats.depth
                object["outboxRefused"] = stats.refused
                object["outboxRefusedStored"] = stats.refusedStored
                if let lastRefusal = stats.lastRefusal { object["lastRefusal"] = lastRefusal }
                if let sendError = stats.sendError { object["outboxSendError"] = sendError }
            }
            if let linkedHeadband {
                let link = linkedHeadband.statistics
                var headband: [String: Any] = [
                    "port": linkedHeadband.path, "state": link.state, "framesSent": link.framesSent, "framesReceived": link.framesReceived,
                    "bytesSent": link.bytesSent, "bytesReceived": link.bytesReceived,
                    "corrupted": link.corrupted, "retransmits": link.retransmits, "linkLosses": link.linkLosses,
                ]
                if let error = link.lastError { headband["lastError"] = error }
                if let model = link.model { headband["model"] = model }
                if let firmware = link.firmware { headband["firmware"] = firmware }
                if let p50 = link.segmentLatencyMsP50, let p99 = link.segmentLatencyMsP99 {
                    headband["segmentLatencyMsP50"] = p50
                    headband["segmentLatencyMsP99"] = p99
                }
                object["headband"] = headband
            }
            if let client, client.isConnected {
                let lacks = client.brokerCapabilities.missing
                if !lacks.isEmpty { object["brokerLacks"] = lacks.joined(separator: ", ") }
            }
            return object
        }
    }

    // MARK: Events and telemetry

    private func sessionEvent(_ event: Event) async {
        await enqueue(.event(event))
        switch event {
        case .sessionStarted, .sessionCompleted, .sessionAborted: await core?.telemetryDue()
        default: break
        }
        if case .sessionCompleted = event, let sessions {
            state.regimen = await sessions.currentRegimen
            persist()
            await publishPresence()
        }
    }

    /// Stops applying the layers whose key is no longer trusted or that expired, and reports
    /// each as `config.rejected` (at the start, then every 5 s for expiry).
    private func revalidateConfig() async {
        let dropped = desired.revalidate(now: Date(), clockSynced: configuration.clock.isSynchronised)
        guard !dropped.isEmpty else { return }
        state.applied = desired.applied
        persist()
        if let sessions {
            await sessions.setMaxLevel(desired.effective.maxLevel ?? 3)
            do {
                try await sessions.setProfile(try desired.profile(applyingTo: baseProfile))
            } catch {
                logger.error("the remaining config layers make a profile the engine refuses; the last one it took stays", metadata: ["error": "\(error)"])
            }
        }
        for case .rejected(let layer, let version, let reason) in dropped {
            logger.warning("config layer no longer applies", metadata: ["layer": "\(layer)", "version": "\(version)", "reason": "\(reason)"])
            await enqueue(.event(.configRejected(ConfigOutcome(layer: layer, version: version, reason: reason))))
        }
        if client?.isConnected == true { await publishPresence() }
    }

    private func enqueue(_ message: Message) async {
        await core?.enqueue(message)
    }

    /// This interval's telemetry (and, while the broker stays away, the periodic reminder).
    private func telemetry() async -> Telemetry? {
        if let (reason, seconds) = link.reminder() {
            logger.error("still cannot reach the broker", metadata: ["reason": "\(reason)", "forS": "\(Int(seconds))"])
        }
        guard let sessions, let core, !stopping else { return nil }
        let session = await sessions.sessionTelemetry()
        let readings = await sessions.readings()
        let stats = await core.outbox.stats()
        // A new kind of refusal goes into the retained state at once (the broker may take
        // that topic while it refuses the others), and so does the first set-aside message (a
        // refusal is counted before its message is set aside on disk: a state published between
        // the two carried the reason with nothing stored); a growing count at most once a minute.
        let refusalNews = stats.lastRefusal != publishedRefusals.last
            || (stats.refusedStored > 0) != publishedRefusals.stored
            || (stats.refused != publishedRefusals.count && Date().timeIntervalSince(publishedRefusals.at) >= 60)
        if refusalNews, client?.isConnected == true { await publishPresence() }
        return Telemetry(
            sessionId: session?.0, level: session?.1, elapsedS: session?.2, channels: readings.channel.map { [$0] } ?? [],
            vibrationRpm: session == nil ? nil : readings.vibrationRpm, batteryPct: readings.batteryPct, headbandTempC: readings.temperatureC,
            agent: await core.agentFigures(rssKiB: Self.residentKiB()))
    }

    /// Seconds to the next telemetry: a signed config's intervals, when it sets them, over the
    /// local file's.
    private func telemetryInterval() async -> Double {
        let effective = desired.effective
        return await sessions?.sessionTelemetry() == nil
            ? effective.idleTelemetryIntervalS ?? configuration.idleTelemetryIntervalSeconds
            : effective.telemetryIntervalS ?? configuration.telemetryIntervalSeconds
    }

    private func firmwareAccepted(_ version: Int) {
        state.applied.firmwareVersion = version
        persist()
    }

    /// Keeps the headband's clock and button alive between sessions.
    private func headbandLoop() async {
        let step = 0.2
        while !Task.isCancelled && !stopping {
            try? await Task.sleep(for: .seconds(step))
            await sessions?.idleTick(seconds: step * configuration.timeScale)
        }
    }

    private func persist() {
        do {
            try state.save(path: statePath)
        } catch {
            logger.error("cannot save the agent state", metadata: ["path": "\(statePath)", "error": "\(error)"])
        }
    }

    /// Resident memory of this process, KiB.
    static func residentKiB() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
    }
}

/// A runtime used out of order (a programming error, said rather than trapped).
struct AgentRuntimeError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
