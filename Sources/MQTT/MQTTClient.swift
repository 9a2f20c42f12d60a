/// An MQTT 5 (or 3.1.1) client over libmosquitto, driven by an ``MQTTEventLoop`` thread
/// shared with any number of other clients.
///
/// ```swift
/// let client = MQTTClient(MQTTConfiguration(port: 1883, clientID: "gw-0001"))
/// try await client.connect()
/// try await client.publish(OutgoingMessage(topic: "a/b", payload: Array("hi".utf8)))
/// ```
///
/// After the first connection the client reconnects by itself, with exponential backoff and
/// full jitter; ``connectionEvents`` reports each change. A publish waiting for its PUBACK when
/// the connection drops fails with ``MQTTError/Kind/connectionLost``: it may or may not have
/// reached the broker, and the caller (the outbox) decides to send it again.
public final class MQTTClient: Sendable {
    /// The settings the client was made with.
    public let configuration: MQTTConfiguration
    private let core: ClientCore
    private let outputs: ClientOutputs
    private let loop: MQTTEventLoop

    /// Creates a client; nothing happens until ``connect()`` or ``start()``.
    public init(_ configuration: MQTTConfiguration, loop: MQTTEventLoop = .shared) {
        self.configuration = configuration
        self.loop = loop
        self.outputs = ClientOutputs(receiveBufferCapacity: configuration.receiveBufferCapacity)
        self.core = ClientCore(configuration: configuration, loop: loop, outputs: outputs)
    }

    /// Received messages, in arrival order. The buffer holds
    /// ``MQTTConfiguration/receiveBufferCapacity`` messages; past that, new ones are dropped and
    /// counted in ``droppedMessages``.
    public var messages: AsyncStream<MQTTMessage> { outputs.messages }

    /// Hands every message received from now on to `handler`, on the event loop's thread,
    /// instead of to ``messages``.
    ///
    /// For a consumer that only files messages away (takes a lock, appends): a consumer of
    /// ``messages`` that keeps up is woken on another thread for every message. `handler` runs
    /// while the loop serves every other client, so it must never block or wait. Set it before
    /// ``connect()`` or ``start()`` so that no message goes to the stream instead.
    public func deliverMessages(to handler: @escaping @Sendable (MQTTMessage) -> Void) {
        loop.execute { [core] in core.messageHandler = handler }
    }

    /// Acknowledgements of messages sent with ``send(_:)``, in batches (all that arrived in one
    /// pass of the event loop), in the order the broker sent them.
    public var acknowledgements: AsyncStream<[PublishAcknowledgement]> { outputs.acknowledgements }

    /// Every change of ``state`` from now on; each call (or access) gives a new stream, so several
    /// components can follow the connection.
    public var connectionEvents: AsyncStream<ConnectionState> { outputs.subscribe() }

    /// Same as ``connectionEvents``.
    public func connectionUpdates() -> AsyncStream<ConnectionState> { outputs.subscribe() }

    /// Drops the current connection (without DISCONNECT) and reconnects: the remedy for a drain
    /// that stalled on a link that looks alive.
    public func reconnect() {
        loop.execute { [core] in core.abortSocket() }
    }

    /// The connection state now.
    public var state: ConnectionState { outputs.state }

    /// What the broker's last CONNACK said it supports.
    public var brokerCapabilities: BrokerCapabilities { outputs.capabilities.withLock { $0 } }

    /// Whether the client is connected now.
    public var isConnected: Bool {
        if case .connected = outputs.state { return true }
        return false
    }

    /// Messages dropped because the consumer of ``messages`` fell behind.
    public var droppedMessages: Int { outputs.dropped.load(ordering: .relaxed) }

    /// Messages received so far.
    public var receivedMessages: Int { outputs.received.load(ordering: .relaxed) }

    /// Times an established connection was lost and reconnecting began.
    public var reconnects: Int { outputs.reconnects.load(ordering: .relaxed) }

    /// Connects and waits for the broker's CONNACK; from then on the client reconnects by itself.
    /// - Returns: whether the broker still had this client's persistent session.
    /// - Throws: ``MQTTError`` when the first attempt fails (refused, unreachable, TLS); the
    ///   client is then stopped, and may be started again.
    @discardableResult
    public func connect() async throws -> Bool {
        try await withCheckedThrowingContinuation { continuation in
            loop.execute { [core] in core.start(firstAttempt: continuation) }
        }
    }

    /// Starts connecting without waiting, retrying with backoff until ``disconnect()``;
    /// follow ``connectionEvents`` to learn how it goes.
    public func start() {
        loop.execute { [core] in core.start(firstAttempt: nil) }
    }

    /// Disconnects cleanly (the broker does not publish the Will) and stops reconnecting.
    /// The client's streams finish: a client is not started again; make a new one.
    public func disconnect() async {
        await withCheckedContinuation { continuation in
            loop.execute { [core] in core.stop(continuation) }
        }
    }

    /// Publishes and returns when the broker acknowledged (QoS 1 and 2) or the message was
    /// handed to the socket (QoS 0).
    /// - Throws: ``MQTTError``: `notConnected`, `connectionLost`, `rejected` (reason code), `library`.
    public func publish(_ message: OutgoingMessage) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.execute { [core] in
                do {
                    try core.publish(message, .waiting(continuation))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// ``publish(_:)``, waiting at most `timeout` for the broker's acknowledgement (for a last
    /// word to a broker that may hang, such as the offline status at shutdown).
    /// - Throws: as ``publish(_:)``, or ``MQTTError/Kind/timedOut`` (the message may still arrive).
    public func publish(_ message: OutgoingMessage, timeout: Duration) async throws {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.execute { [core] in
                core.waitSerial &+= 1
                let serial = core.waitSerial
                do {
                    if let mid = try core.publish(message, .waiting(continuation, serial: serial)) {
                        core.abandon(mid: mid, serial: serial, after: seconds)
                    }
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Publishes without waiting; the broker's acknowledgement arrives on ``acknowledgements``
    /// with `token`. Messages whose connection drops before their acknowledgement get none.
    /// - Throws: ``MQTTError`` `notConnected` or `library` for messages that could not be handed over;
    ///   the messages before the failing one were sent.
    public func send(_ messages: [(message: OutgoingMessage, token: UInt64)]) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.execute { [core] in
                do {
                    defer { core.flushAcknowledgements() }
                    // One message goes straight out; several leave together.
                    if messages.count == 1 {
                        try core.publish(messages[0].message, .token(messages[0].token))
                    } else {
                        try core.corked { () throws(MQTTError) in
                            for item in messages { try core.publish(item.message, .token(item.token)) }
                        }
                    }
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    /// Settles every message delivered up to and including `delivery` (in delivery order): with
    /// ``MQTTConfiguration/acknowledgeWhenSettled`` set, their PUBACKs may now go to the broker.
    /// Settling a message from an earlier connection does nothing: the broker sends it again.
    public func settle(through delivery: Delivery) {
        loop.execute { [core] in core.settle(through: delivery) }
    }

    /// Subscribes and waits for the SUBACK. Subscriptions are remembered and made again after a
    /// reconnect when the broker did not keep the session.
    /// - Returns: the granted QoS per filter.
    /// - Throws: ``MQTTError`` `rejected` when the broker refused a filter, or `notConnected`.
    @discardableResult
    public func subscribe(_ subscriptions: [Subscription]) async throws -> [QoS] {
        let granted = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[Int32], any Error>) in
            loop.execute { [core] in core.subscribe(subscriptions, continuation) }
        }
        var result: [QoS] = []
        for (index, code) in granted.enumerated() {
            guard let qos = QoS(rawValue: code) else {
                let filter = index < subscriptions.count ? subscriptions[index].filter : "?"
                throw MQTTError(
                    .rejected, code: code,
                    "the broker refused the subscription to \(filter): \(MQTTError.reasonName(code)) [reason \(code)] (check the broker's ACL and what it supports)")
            }
            result.append(qos)
        }
        return result
    }

    /// Unsubscribes and waits for the UNSUBACK.
    public func unsubscribe(_ filters: [String]) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            loop.execute { [core] in core.unsubscribe(filters, continuation) }
        }
    }
}

extension MQTTClient {
    /// Closes the socket without a DISCONNECT, as a crash or a cut cable would: the broker
    /// publishes the Will and the client reconnects by itself. For tests.
    @_spi(Testing)
    public func dropConnectionWithoutDisconnect() { reconnect() }
}
