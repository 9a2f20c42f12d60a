import Foundation
import MQTT
import Synchronization

/// A link to a broker inside the test: it records what the outbox sends and acknowledges only
/// what the test says, when it says, so the outbox's own logic (windows, resends, stalls,
/// refusals) is exercised without timing a real connection. The outbox against a real
/// mosquitto is `DeliveryTests`.
final class InProcessTransport: PublishTransport {
    private struct State {
        var state: ConnectionState = .connecting
        var watchers: [AsyncStream<ConnectionState>.Continuation] = []
        /// Every message sent, with its token, in order, across connections.
        var sent: [(message: OutgoingMessage, token: UInt64, connection: Int)] = []
        var connection = 0
        var reconnects = 0
    }
    private let shared = Mutex(State())
    let acknowledgements: AsyncStream<[PublishAcknowledgement]>
    private let acknowledge: AsyncStream<[PublishAcknowledgement]>.Continuation
    let carriesUserProperties = true

    init() {
        (acknowledgements, acknowledge) = AsyncStream.makeStream()
    }

    func connectionUpdates() -> AsyncStream<ConnectionState> {
        let (stream, continuation) = AsyncStream.makeStream(of: ConnectionState.self)
        shared.withLock { $0.watchers.append(continuation) }
        return stream
    }

    var state: ConnectionState { shared.withLock { $0.state } }
    var isConnected: Bool { if case .connected = state { true } else { false } }

    func send(_ messages: [(message: OutgoingMessage, token: UInt64)]) async throws {
        try shared.withLock { state in
            guard case .connected = state.state else { throw MQTTError(.notConnected, "not connected") }
            state.sent += messages.map { ($0.message, $0.token, state.connection) }
        }
    }

    func reconnect() {
        shared.withLock { $0.reconnects += 1 }
        set(.disconnected(reason: "recycled"))
        connect()
    }

    // MARK: The test's side

    func connect() {
        shared.withLock { $0.connection += 1 }
        set(.connected(sessionPresent: false))
    }

    func drop() { set(.disconnected(reason: "dropped")) }

    /// Acknowledges `tokens` in this order, with `reason` (0: accepted).
    func acknowledge(_ tokens: [UInt64], reason: Int32 = 0) {
        acknowledge.yield(tokens.map { PublishAcknowledgement(token: $0, reasonCode: reason) })
    }

    var sent: [(message: OutgoingMessage, token: UInt64, connection: Int)] { shared.withLock { $0.sent } }
    var reconnects: Int { shared.withLock { $0.reconnects } }

    private func set(_ new: ConnectionState) {
        let watchers = shared.withLock { state in
            state.state = new
            return state.watchers
        }
        for watcher in watchers { watcher.yield(new) }
    }
}
