/// What a consumer of subscribed messages (the aggregator's ingest and its stats publisher)
/// needs from its link to the broker: the connection's state and what the broker supports,
/// subscriptions, messages handed over as they arrive, settling them (their acknowledgements
/// wait until then, with ``MQTTConfiguration/acknowledgeWhenSettled``) and publishing.
/// ``MQTTClient`` is the product's implementation; ingest's own logic can run against another
/// in one process.
public protocol SubscribeTransport: AnyObject, Sendable {
    /// Every change of the connection's state from now on (a new stream per call).
    func connectionUpdates() -> AsyncStream<ConnectionState>
    /// Hands every message received from now on to `handler` (which must not block).
    func deliverMessages(to handler: @escaping @Sendable (MQTTMessage) -> Void)
    /// Starts connecting, and reconnecting after every loss, until ``disconnect()``.
    func start()
    /// Stops reading, sends what is settled, says DISCONNECT and stops.
    func disconnect() async
    var isConnected: Bool { get }
    /// What the broker said it does not support, on the current connection.
    var brokerCapabilities: BrokerCapabilities { get }
    /// Messages delivered so far, and dropped for a handler that did not keep up.
    var receivedMessages: Int { get }
    var droppedMessages: Int { get }
    @discardableResult
    func subscribe(_ subscriptions: [Subscription]) async throws -> [QoS]
    func unsubscribe(_ filters: [String]) async throws
    /// Every message delivered up to and including `delivery` is done with.
    func settle(through delivery: Delivery)
    func publish(_ message: OutgoingMessage) async throws
    /// Drops the connection and makes a new one.
    func reconnect()
}

extension MQTTClient: SubscribeTransport {}
