import ArgumentParser
import EdgeAgent
import Foundation
import MQTT
import SpectraProtocol
import Synchronization

/// The traffic of many gateways in a session, from MQTT connections of their own, without the
/// agent behind each: what one broker and one aggregator take when the load generator costs
/// little. (`spectra-fleetsim` runs the whole agent for every gateway, whose CPU shares the
/// machine with the broker and the aggregator.)
///
/// Every gateway connects with its own client id and Will, publishes a retained birth on
/// `status`, then session telemetry with per-channel readings every `interval` seconds, QoS 1,
/// with its own epoch and gap-free `seq`, so the aggregator's completeness shows anything lost.
/// What the broker has not acknowledged is kept in memory: telemetry due while a gateway is
/// not connected, and what was in flight when its connection dropped, go on the next
/// connection before the live message, marked historical, as the agent's outbox sends them.
/// (The agent's outbox is durable and sends live messages first within a window; this is
/// neither, and measures the broker and the aggregator, not the agent.)
struct FleetLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fleet-load", abstract: "Many gateways' session telemetry from light clients, until interrupted.")
    @Option(help: "Broker port on 127.0.0.1.") var port: Int
    @Option(help: "Gateways.") var gateways = 1_000
    @Option(help: "Number of the first gateway (gw-00001 is 1), for several processes in one fleet.") var firstGateway = 1
    @Option(help: "Seconds between one gateway's telemetry messages.") var interval = 1.0
    @Option(help: "Per-channel readings in each message.") var channels = 10
    @Option(help: "Fleet name.") var fleet = "load"
    @Option(help: "Stop after this many seconds (0: at SIGINT or SIGTERM).") var seconds = 0.0

    func validate() throws {
        guard gateways > 0, firstGateway > 0 else { throw ValidationError("--gateways and --first-gateway must be at least 1") }
        guard interval >= 0.01 else { throw ValidationError("--interval must be at least 0.01 s") }
        guard (0...64).contains(channels) else { throw ValidationError("--channels must be between 0 and 64") }
        _ = try Identifier(fleet, field: "--fleet")
    }

    func run() async throws {
        signal(SIGPIPE, SIG_IGN)
        let load = try LoadFleet(
            fleet: Identifier(fleet, field: "--fleet"), first: firstGateway, count: gateways, channels: channels, port: port)
        let stop = Atomic<Bool>(false)
        var signalSources: [any DispatchSourceSignal] = []
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { stop.store(true, ordering: .relaxed) }
            source.resume()
            signalSources.append(source)
        }
        let start = ContinuousClock.now
        var nextReport = start + .seconds(5)
        var tick = 0
        let tickLength = Duration.milliseconds(10)
        let ticksPerInterval = max(1, Int((interval * 100).rounded()))
        while !stop.load(ordering: .relaxed) && (seconds == 0 || ContinuousClock.now - start < .seconds(seconds)) {
            // Each gateway's telemetry falls in a slot of its own within the interval, so the
            // fleet's messages are spread evenly rather than sent in bursts.
            let slot = tick % ticksPerInterval
            let due = stride(from: slot, to: gateways, by: ticksPerInterval).map { load.gateways[$0] }
            await withTaskGroup(of: Void.self) { group in
                for gateway in due { group.addTask { await gateway.tick() } }
            }
            tick += 1
            try? await Task.sleep(until: start + tickLength * tick)
            if ContinuousClock.now >= nextReport {
                nextReport += .seconds(5)
                FileHandle.standardError.write(Data((load.progress() + "\n").utf8))
            }
        }
        signalSources.forEach { $0.cancel() }
        await load.stop()
        FileHandle.standardError.write(Data((load.progress() + "\n").utf8))
    }
}

/// The fleet's gateways and what they have done.
private final class LoadFleet: Sendable {
    let gateways: [LoadGateway]
    let counters = LoadCounters()

    init(fleet: Identifier, first: Int, count: Int, channels: Int, port: Int) throws {
        let readings = (0..<channels).map {
            Telemetry.Channel(id: "ch\($0)", peakMicroAmps: 300, rmsMicroAmps: 42.4, impedanceOhms: 5200, complianceVolts: 1.6, contact: true)
        }
        // One event loop per core: a single loop thread tops out at about 6,000 messages a second
        // (each of them a publish out and a PUBACK in).
        let loops = (0..<max(1, ProcessInfo.processInfo.activeProcessorCount)).map { MQTTEventLoop(name: "load-loop-\($0)") }
        var gateways: [LoadGateway] = []
        for number in first..<(first + count) {
            gateways.append(try LoadGateway(
                fleet: fleet, gateway: Identifier(String(format: "gw-%05d", number)), port: port, channels: readings, counters: counters,
                loop: loops[number % loops.count]))
        }
        self.gateways = gateways
        for gateway in gateways { gateway.start() }
    }

    func progress() -> String {
        let connected = gateways.reduce(0) { $0 + ($1.client.isConnected ? 1 : 0) }
        let made = counters.acknowledged.load(ordering: .relaxed) + counters.queued.load(ordering: .relaxed)
        return "fleet-load: \(connected) of \(gateways.count) connected, messages \(made) made, \(counters.sent.load(ordering: .relaxed)) sent, "
            + "\(counters.acknowledged.load(ordering: .relaxed)) acknowledged, \(counters.queued.load(ordering: .relaxed)) not yet acknowledged"
    }

    func stop() async {
        await withTaskGroup(of: Void.self) { group in
            for gateway in gateways { group.addTask { await gateway.stop() } }
        }
    }
}

private final class LoadCounters: Sendable {
    /// Telemetry handed to a connection (a message sent again counts again).
    let sent = Atomic<Int>(0)
    /// Telemetry the broker acknowledged.
    let acknowledged = Atomic<Int>(0)
    /// Telemetry made and not yet acknowledged.
    let queued = Atomic<Int>(0)
}

/// One gateway: a client, its seq, and its telemetry until the broker acknowledged it.
private final class LoadGateway: Sendable {
    private struct State {
        var seq: UInt64 = 0
        /// Not yet handed to a connection, oldest first.
        var waiting: [(seq: UInt64, message: OutgoingMessage)] = []
        /// Handed to a connection, not yet acknowledged: sent again on the next connection.
        var unacknowledged: [UInt64: OutgoingMessage] = [:]
        /// The client's count of lost connections when this connection's birth went out
        /// (nil: not since the last failure).
        var bornAfterLosses: Int?
        var busy = false
    }

    /// The state, in an object of its own for the acknowledgement task to hold.
    private final class Shared: Sendable {
        let state = Mutex(State())
    }

    let client: MQTTClient
    private let fleet: Identifier
    private let gateway: Identifier
    private let epoch = UUID()
    private let boot = UUID()
    private let channels: [Telemetry.Channel]
    private let counters: LoadCounters
    private let shared = Shared()
    private let acknowledgements: Task<Void, Never>
    /// The agent's own uplink messages (envelope, topic, presence), without its outbox.
    private let uplink: GatewayUplink

    init(fleet: Identifier, gateway: Identifier, port: Int, channels: [Telemetry.Channel], counters: LoadCounters, loop: MQTTEventLoop) {
        self.fleet = fleet
        self.gateway = gateway
        self.channels = channels
        self.counters = counters
        let uplink = GatewayUplink(envelopes: EnvelopeFactory(fleet: fleet, gateway: gateway, boot: boot), agentVersion: "fleet-load")
        self.uplink = uplink
        var configuration = MQTTConfiguration(port: port, clientID: "\(fleet)-\(gateway)")
        configuration.will = uplink.will()
        let client = MQTTClient(configuration, loop: loop)
        self.client = client
        acknowledgements = Task { [counters, shared] in
            for await batch in client.acknowledgements {
                let settled = shared.state.withLock { state in
                    batch.reduce(0) { $0 + ($1.token != 0 && state.unacknowledged.removeValue(forKey: $1.token) != nil ? 1 : 0) }
                }
                counters.acknowledged.add(settled, ordering: .relaxed)
                counters.queued.add(-settled, ordering: .relaxed)
            }
        }
    }

    func start() { client.start() }

    /// Telemetry now. On a new connection the birth goes first, then everything not
    /// acknowledged on the one before, then what waited: all of it marked historical.
    func tick() async {
        let connected = client.isConnected
        let losses = client.reconnects
        let batch: [(message: OutgoingMessage, token: UInt64)]? = shared.state.withLock { state in
            state.seq += 1
            state.waiting.append((state.seq, telemetry(seq: state.seq, queued: state.waiting.count + state.unacknowledged.count)))
            counters.queued.add(1, ordering: .relaxed)
            guard connected, !state.busy else { return nil }
            state.busy = true
            var batch: [(message: OutgoingMessage, token: UInt64)] = []
            if state.bornAfterLosses != losses {
                state.bornAfterLosses = losses
                batch.append((birth(), 0))
                batch += state.unacknowledged.sorted { $0.key < $1.key }.map { ($0.value, $0.key) }
            }
            batch += state.waiting.map { ($0.message, $0.seq) }
            state.waiting.removeAll()
            for index in batch.indices.dropLast() where batch[index].token != 0 {
                batch[index].message.userProperties = [UserProperty("historical", "true")]
            }
            for item in batch where item.token != 0 { state.unacknowledged[item.token] = item.message }
            return batch
        }
        guard let batch else { return }
        var sent = true
        do {
            try await client.send(batch)
        } catch {
            // Whatever went before the failure, all of it goes again on the next connection
            // (the aggregator counts a message once), after a new birth.
            sent = false
        }
        counters.sent.add(sent ? batch.count { $0.token != 0 } : 0, ordering: .relaxed)
        shared.state.withLock { state in
            state.busy = false
            if !sent { state.bornAfterLosses = nil }
        }
    }

    /// Session telemetry; the agent's outbox depth says how many messages are not yet acknowledged.
    private func telemetry(seq: UInt64, queued: Int) -> OutgoingMessage {
        let body = Telemetry(
            sessionId: try? Identifier("load-session"), level: 2, elapsedS: Double(seq % 900), channels: channels, batteryPct: 77,
            headbandTempC: 31, agent: .init(outboxDepth: queued, outboxBytes: 0, oldestUnackedS: 0, reconnects: client.reconnects, rssKiB: 0))
        let entry = uplink.outboxMessage(.telemetry(body), seq: seq, epoch: epoch, synced: true)
        return OutgoingMessage(topic: entry.topic, payload: entry.payload)
    }

    private func birth() -> OutgoingMessage { uplink.status(online: true) }

    /// Says offline and disconnects.
    func stop() async {
        try? await client.publish(uplink.status(online: false, reason: "shutdown"))
        await client.disconnect()
        await acknowledgements.value
    }
}
