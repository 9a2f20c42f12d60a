import Synchronization

/// What a client reports to the rest of the process: received messages, acknowledgements,
/// connection changes and counters. Safe to use from any thread.
final class ClientOutputs: Sendable {
    let messages: AsyncStream<MQTTMessage>
    let acknowledgements: AsyncStream<[PublishAcknowledgement]>
    private let messageSink: AsyncStream<MQTTMessage>.Continuation
    private let ackSink: AsyncStream<[PublishAcknowledgement]>.Continuation
    private let eventSinks = Mutex<[AsyncStream<ConnectionState>.Continuation]>([])
    private let finished = Atomic<Bool>(false)
    private let current = Mutex<ConnectionState>(.disconnected(reason: "not started"))
    let capabilities = Mutex(BrokerCapabilities())
    let dropped = Atomic<Int>(0)
    let reconnects = Atomic<Int>(0)
    let received = Atomic<Int>(0)

    init(receiveBufferCapacity: Int) {
        (messages, messageSink) = AsyncStream.makeStream(of: MQTTMessage.self, bufferingPolicy: .bufferingOldest(receiveBufferCapacity))
        (acknowledgements, ackSink) = AsyncStream.makeStream(of: [PublishAcknowledgement].self)
    }

    var state: ConnectionState { current.withLock { $0 } }

    func set(_ state: ConnectionState) {
        let changed = current.withLock { old in
            defer { old = state }
            return old != state
        }
        if changed { eventSinks.withLock { sinks in for sink in sinks { sink.yield(state) } } }
    }

    /// A new stream of every state change from now on.
    func subscribe() -> AsyncStream<ConnectionState> {
        let (stream, sink) = AsyncStream.makeStream(of: ConnectionState.self, bufferingPolicy: .bufferingNewest(256))
        if finished.load(ordering: .acquiring) {
            sink.finish()
        } else {
            eventSinks.withLock { $0.append(sink) }
        }
        return stream
    }

    func connected(sessionPresent: Bool) { set(.connected(sessionPresent: sessionPresent)) }

    func countReconnect() { reconnects.add(1, ordering: .relaxed) }

    func deliver(_ message: MQTTMessage, to handler: (@Sendable (MQTTMessage) -> Void)?) {
        received.add(1, ordering: .relaxed)
        if let handler {
            handler(message)
        } else if case .dropped = messageSink.yield(message) {
            dropped.add(1, ordering: .relaxed)
        }
    }

    func acknowledge(_ acks: [PublishAcknowledgement]) { ackSink.yield(acks) }

    func finish() {
        messageSink.finish()
        ackSink.finish()
        finished.store(true, ordering: .releasing)
        eventSinks.withLock { sinks in
            for sink in sinks { sink.finish() }
            sinks.removeAll()
        }
    }
}
