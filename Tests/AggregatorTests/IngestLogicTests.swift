import Aggregator
import Foundation
import Logging
import MQTT
import ServiceLifecycle
import SpectraConfig
import SpectraProtocol
import SpectraTesting
import Synchronization
import Testing

/// A broker link inside the test: it hands ingest the messages the test delivers and records
/// what ingest settles and publishes. Ingest against a real mosquitto is everywhere else.
final class InProcessSubscription: SubscribeTransport {
    private struct State {
        var connected = false
        var watchers: [AsyncStream<ConnectionState>.Continuation] = []
        var handler: (@Sendable (MQTTMessage) -> Void)?
        var connection: UInt64 = 0
        var ordinal = 0
        var settled: Delivery?
        var subscriptions: [Subscription] = []
        var published: [OutgoingMessage] = []
    }
    private let shared = Mutex(State())

    func connectionUpdates() -> AsyncStream<ConnectionState> {
        let (stream, continuation) = AsyncStream.makeStream(of: ConnectionState.self)
        shared.withLock { $0.watchers.append(continuation) }
        return stream
    }
    func deliverMessages(to handler: @escaping @Sendable (MQTTMessage) -> Void) { shared.withLock { $0.handler = handler } }
    func start() { set(connected: true) }
    func disconnect() async {
        set(connected: false)
        shared.withLock { state in
            for watcher in state.watchers { watcher.finish() }
            state.watchers.removeAll()
        }
    }
    var isConnected: Bool { shared.withLock { $0.connected } }
    var brokerCapabilities: BrokerCapabilities { BrokerCapabilities() }
    var receivedMessages: Int { shared.withLock { $0.ordinal } }
    var droppedMessages: Int { 0 }
    func subscribe(_ subscriptions: [Subscription]) async throws -> [QoS] {
        shared.withLock { $0.subscriptions += subscriptions }
        return subscriptions.map(\.qos)
    }
    func unsubscribe(_ filters: [String]) async throws {}
    func settle(through delivery: Delivery) { shared.withLock { $0.settled = delivery } }
    func publish(_ message: OutgoingMessage) async throws { shared.withLock { $0.published.append(message) } }
    func reconnect() {
        set(connected: false)
        set(connected: true)
    }

    // MARK: The test's side

    /// Delivers `envelope` on its topic as the broker would, as the connection's next delivery.
    func deliver(_ envelope: Envelope) {
        let topic: Topic = envelope.kind == .event
            ? .event(fleet: envelope.fleet, gateway: envelope.gateway) : .telemetry(fleet: envelope.fleet, gateway: envelope.gateway)
        deliver(OutgoingMessage(topic: topic.path, payload: [UInt8](envelope.encoded())))
    }

    /// Delivers `message` as the broker would, as the connection's next delivery.
    func deliver(_ message: OutgoingMessage) {
        let (handler, delivery) = shared.withLock { state in
            state.ordinal += 1
            return (state.handler, Delivery(connection: state.connection, ordinal: state.ordinal))
        }
        handler?(MQTTMessage(topic: message.topic, payload: message.payload, qos: .atLeastOnce, retain: false, delivery: delivery))
    }

    var settled: Delivery? { shared.withLock { $0.settled } }
    var subscriptions: [Subscription] { shared.withLock { $0.subscriptions } }

    private func set(connected: Bool) {
        let (watchers, state) = shared.withLock { state -> ([AsyncStream<ConnectionState>.Continuation], ConnectionState) in
            state.connected = connected
            if connected { state.connection += 1 }
            return (state.watchers, connected ? .connected(sessionPresent: true) : .disconnected(reason: "dropped"))
        }
        for watcher in watchers { watcher.yield(state) }
    }
}

@Suite("Ingest logic, in process")
struct IngestLogicTests {
    @Test("a message is settled (its PUBACK may go) only once the batch holding it is committed")
    func settledAfterCommit() async throws {
        let folder = try TestEnvironment.temporaryDirectory("ingest-logic")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = FailingCommits(try SQLiteStatsStore(path: folder.appendingPathComponent("stats.sqlite").path))
        var logger = Logger(label: "test.ingest")
        logger.logLevel = .critical
        let link = InProcessSubscription()
        let ingest = IngestService(
            configuration: AggregatorConfiguration(
                fleets: [], broker: BrokerConfiguration(host: "127.0.0.1", port: 1), clientID: "agg-logic",
                databasePath: "", httpHost: "127.0.0.1", httpPort: 0, publishIntervalSeconds: 3600),
            store: store, metrics: IngestMetrics(), logger: logger, now: { testNow }, transport: link)
        let group = ServiceGroup(configuration: .init(services: [ingest], logger: logger))
        let running = Task { try await group.run() }
        #expect(await eventually(timeout: 40) { link.subscriptions.count == 4 }, "events, telemetry, status and state: \(link.subscriptions)")

        var feed = GatewayFeed("gw-0001")
        for index in 0..<10 { link.deliver(feed.telemetry(at: at(today, hour: 1 + Double(index) / 3600))) }
        try await Task.sleep(for: .milliseconds(500))
        #expect(link.settled == nil, "nothing is settled while commits fail")

        store.failing.store(false, ordering: .relaxed)
        #expect(await eventually(timeout: 40) { link.settled?.ordinal == 10 }, "settled through the last committed: \(String(describing: link.settled))")
        #expect(ingest.committedEnvelopes == 10)
        await group.triggerGracefulShutdown()
        try await running.value
    }
}
