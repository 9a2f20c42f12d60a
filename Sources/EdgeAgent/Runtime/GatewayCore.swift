import Foundation
import MQTT
import Outbox
import SpectraProtocol

/// One gateway's link to the fleet, as the agent and the fleet simulator both run it: the
/// outbox drained through an MQTT client, the retained birth and state on every connection,
/// telemetry on a fixed cadence that a session's start or end brings forward, an outage
/// (offline, disconnected, a fresh client on return), and the shutdown (drain while connected,
/// offline, close). A change to how a gateway behaves on the broker lands here once.
///
/// What differs between its users comes in as closures: the gateway's clock, its reported
/// state, the telemetry's content, and what else a connection change means to it (the agent
/// subscribes and logs; the simulator counts).
public actor GatewayCore {
    public nonisolated let uplink: GatewayUplink
    public nonisolated let outbox: Outbox
    private let brokerConfiguration: MQTTConfiguration
    private let loop: MQTTEventLoop
    /// The current client (a new one after ``outage(reason:)``; a stopped client is not reused).
    public private(set) var client: MQTTClient
    private let now: @Sendable () -> Date
    private let synced: Bool?
    private let reportedState: @Sendable () async -> ReportedState?
    private let connectionChanged: @Sendable (ConnectionState, _ wasConnected: Bool) async -> Void
    private let presenceFailed: @Sendable (any Error) async -> Void
    private var watcher: Task<Void, Never>?
    /// The telemetry loop's current wait: ended by ``telemetryDue()``.
    private var telemetryWait: Task<Void, Never>?
    private var telemetryDueNow = false

    /// - Parameters:
    ///   - now: the gateway's wall clock, which dates its envelopes and presence.
    ///   - synced: whether that clock is trusted (nil: ``EnvelopeFactory/clock`` says).
    ///   - reportedState: the retained state to publish with the birth (nil: none now).
    ///   - connectionChanged: every change of the connection, after the birth went out on a
    ///     connect, and whether it was connected before; a client that stops while connected
    ///     ends with `.disconnected("stopped")`.
    public init(
        uplink: GatewayUplink, outbox: Outbox, broker: MQTTConfiguration, loop: MQTTEventLoop = .shared,
        now: @escaping @Sendable () -> Date = { Date() }, synced: Bool? = nil,
        reportedState: @escaping @Sendable () async -> ReportedState?,
        connectionChanged: @escaping @Sendable (ConnectionState, _ wasConnected: Bool) async -> Void = { _, _ in },
        presenceFailed: @escaping @Sendable (any Error) async -> Void
    ) {
        self.uplink = uplink
        self.outbox = outbox
        var configuration = broker
        configuration.will = uplink.will(ts: now())
        brokerConfiguration = configuration
        self.loop = loop
        client = MQTTClient(configuration, loop: loop)
        self.now = now
        self.synced = synced
        self.reportedState = reportedState
        self.connectionChanged = connectionChanged
        self.presenceFailed = presenceFailed
    }

    // MARK: Connection

    /// Starts the client (a fresh one when `fresh`, as after an outage) after ``wire()``.
    public func connect(fresh: Bool = false) async {
        if fresh { client = MQTTClient(brokerConfiguration, loop: loop) }
        await wire()
        client.start()
    }

    /// Lets the outbox drain through the current client and publishes the birth and state on
    /// every connection, without starting the client (a service group runs it).
    public func wire() async {
        await outbox.attach(client)
        let updates = client.connectionUpdates()
        watcher?.cancel()
        watcher = Task { [weak self] in
            var up = false
            for await state in updates {
                guard let self else { return }
                if case .connected = state {
                    do { try await self.publishPresence() } catch { await self.presenceFailed(error) }
                }
                let wasUp = up
                switch state {
                case .connected: up = true
                case .disconnected: up = false
                case .connecting: break
                }
                await self.connectionChanged(state, wasUp)
            }
            if up, let self { await self.connectionChanged(.disconnected(reason: "stopped"), true) }
        }
    }

    /// Publishes the retained birth and reported state; nothing while disconnected (every
    /// connect publishes them). Throws what the broker or the client said when they did not go.
    public func publishPresence() async throws {
        guard client.isConnected, let state = await reportedState() else { return }
        try await client.publish(uplink.status(online: true, ts: now()))
        try await client.publish(uplink.state(state))
    }

    /// Says offline with `reason` and disconnects; ``connect(fresh:)`` with `fresh` comes back.
    public func outage(reason: String) async {
        // The client of now: a connect(fresh:) while the publish waits must not be the one
        // disconnected.
        let client = self.client
        try? await client.publish(uplink.status(online: false, reason: reason, ts: now()))
        await client.disconnect()
    }

    // MARK: Messages

    /// Queues `message`, dated by the gateway's clock.
    public func enqueue(_ message: Message) async {
        await uplink.enqueue(message, into: outbox, now: now(), synced: synced)
    }

    /// The agent's own figures for its telemetry: the outbox and the link.
    public func agentFigures(rssKiB: Int) async -> Telemetry.Agent {
        let stats = await outbox.stats()
        return .init(
            outboxDepth: stats.depth, outboxBytes: stats.bytes, oldestUnackedS: stats.oldestUnackedSeconds,
            reconnects: client.reconnects, rssKiB: rssKiB, outboxRefused: stats.refused > 0 ? stats.refusedStored : nil)
    }

    // MARK: Telemetry

    /// Telemetry until cancelled: `make` builds each message (nil: none this time), `interval`
    /// says the seconds to the next, on a fixed cadence (the time a message takes does not
    /// stretch it). ``telemetryDue()`` ends the wait, so a session's first and last telemetry
    /// go at once rather than an idle interval later.
    /// - Parameters:
    ///   - firstAfter: the wait before the first message (a fleet spreads its gateways).
    ///   - sleep: how to wait until an instant (the fleet simulator shares one ticker); it
    ///     returns early when its task is cancelled.
    public func runTelemetry(
        firstAfter: Duration = .zero,
        interval: @escaping @Sendable () async -> Double,
        make: @escaping @Sendable () async -> Telemetry?,
        sleep: @escaping @Sendable (ContinuousClock.Instant) async -> Void = { try? await Task.sleep(until: $0) }
    ) async {
        var due = ContinuousClock.now + firstAfter
        if await !wait(until: due, sleep: sleep) { due = .now }
        while !Task.isCancelled {
            if let telemetry = await make() { await enqueue(.telemetry(telemetry)) }
            due = max(due + .seconds(await interval()), .now)
            // Brought forward: the cadence starts again from now.
            if await !wait(until: due, sleep: sleep) { due = .now }
        }
    }

    /// The next telemetry goes now (a session started or ended, or its interval changed).
    public func telemetryDue() {
        telemetryDueNow = true
        telemetryWait?.cancel()
    }

    /// False when ``telemetryDue()`` ended the wait before `due`.
    private func wait(until due: ContinuousClock.Instant, sleep: @escaping @Sendable (ContinuousClock.Instant) async -> Void) async -> Bool {
        defer { telemetryDueNow = false }
        guard !telemetryDueNow else { return false }
        let wait = Task { await sleep(due) }
        telemetryWait = wait
        // The loop's own cancellation (shutdown) ends the wait too.
        await withTaskCancellationHandler { await wait.value } onCancel: { wait.cancel() }
        telemetryWait = nil
        return !telemetryDueNow
    }

    // MARK: Shutdown

    /// Hands the outbox's backlog to the broker for at most `drainFor`, says offline, closes
    /// the outbox and disconnects. Returns what was left undelivered.
    /// - Parameter untilConnected: wait out a connection still being made (the simulator's
    ///   gateways come back from an outage to hand over their backlog); otherwise a gateway
    ///   that is not connected does not wait.
    @discardableResult
    public func shutdown(drainFor: Duration, untilConnected: Bool = false) async -> OutboxStats {
        let left = await drain(for: drainFor, untilConnected: untilConnected)
        await outbox.close()
        await client.disconnect()
        watcher?.cancel()
        return left
    }

    /// The first half of ``shutdown(drainFor:untilConnected:)``: drains and says offline,
    /// leaving the outbox open and the client connected (for a service group that stops them
    /// after this).
    @discardableResult
    public func drain(for drainFor: Duration, untilConnected: Bool = false) async -> OutboxStats {
        let deadline = ContinuousClock.now + drainFor
        while ContinuousClock.now < deadline {
            let connected = client.isConnected
            if !connected && !untilConnected { break }
            if connected, await outbox.stats().depth == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        let left = await outbox.stats()
        if client.isConnected {
            // Bounded: a broker that hangs must not hold the shutdown (its Will says offline).
            try? await client.publish(uplink.status(online: false, reason: "shutdown", ts: now()), timeout: .seconds(2))
        }
        return left
    }
}
