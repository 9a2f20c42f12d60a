/// What a sender of acknowledged messages (the outbox) needs from its link to the broker: the
/// connection's state, a batch send with a token per message, the acknowledgements, and a way
/// to recycle a link that stopped acknowledging. ``MQTTClient`` is the product's
/// implementation; the outbox's own logic (windows, resends, refusals, stalls) can run against
/// another in one process.
public protocol PublishTransport: AnyObject, Sendable {
    /// Every change of ``state`` from now on (a new stream per call).
    func connectionUpdates() -> AsyncStream<ConnectionState>
    /// Acknowledgements of messages given to ``send(_:)``, in batches, in the broker's order.
    /// One consumer.
    var acknowledgements: AsyncStream<[PublishAcknowledgement]> { get }
    var state: ConnectionState { get }
    var isConnected: Bool { get }
    /// Whether messages may carry user properties (MQTT 5); otherwise marks go in the payload.
    var carriesUserProperties: Bool { get }
    /// Sends without waiting for acknowledgements; throws for the first message that could not
    /// be handed over (those before it were).
    func send(_ messages: [(message: OutgoingMessage, token: UInt64)]) async throws
    /// Drops the connection and makes a new one.
    func reconnect()
}

extension MQTTClient: PublishTransport {
    public var carriesUserProperties: Bool { configuration.protocolVersion == .v5 }
}
