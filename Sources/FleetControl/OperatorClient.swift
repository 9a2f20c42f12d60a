import Foundation
import MQTT
import SpectraConfig
import SpectraProtocol
import Synchronization

/// The operator's MQTT connection: a short-lived, clean session used by one command.
///
/// Several parts of a command read received messages at once (a retained read, a wait for
/// answers), so one pump takes them off the client and hands each to every reader.
public final class OperatorClient: Sendable {
    public let client: MQTTClient
    private final class Readers: Sendable {
        let map = Mutex<[UUID: AsyncStream<MQTTMessage>.Continuation]>([:])
        var all: [AsyncStream<MQTTMessage>.Continuation] { map.withLock { Array($0.values) } }
    }
    private let readers = Readers()
    private let pump: Mutex<Task<Void, Never>?> = Mutex(nil)

    private init(client: MQTTClient) {
        self.client = client
        let messages = client.messages
        pump.withLock {
            $0 = Task { [readers] in
                for await message in messages {
                    for reader in readers.all { reader.yield(message) }
                }
            }
        }
    }

    /// Connects, or throws ``OperatorError`` saying which broker could not be reached and why.
    public static func connect(_ broker: BrokerConfiguration, name: String = "spectra-ctl") async throws -> OperatorClient {
        let client = MQTTClient(broker.client(id: "\(name)-\(getpid())-\(UInt16.random(in: 0...UInt16.max))"))
        do {
            _ = try await client.connect()
        } catch {
            throw OperatorError("cannot connect to the broker at \(broker.url): \(error)")
        }
        return OperatorClient(client: client)
    }

    /// Every message received from now on, for one reader (ends when the reader stops).
    public func messages() -> AsyncStream<MQTTMessage> {
        let id = UUID()
        let (stream, continuation) = AsyncStream<MQTTMessage>.makeStream(bufferingPolicy: .bufferingNewest(100_000))
        continuation.onTermination = { [readers] _ in _ = readers.map.withLock { $0.removeValue(forKey: id) } }
        readers.map.withLock { $0[id] = continuation }
        return stream
    }

    public func disconnect() async {
        await client.disconnect()
        pump.withLock { $0?.cancel() }
        for reader in readers.all { reader.finish() }
    }

    /// The retained messages under `filter`: subscribes, collects until no new one arrived for
    /// `quietSeconds` (or `maxSeconds` passed), unsubscribes.
    public func retained(_ filter: String, quietSeconds: Double = 0.4, maxSeconds: Double = 5) async throws -> [MQTTMessage] {
        let collected = Mutex<[MQTTMessage]>([])
        let lastArrival = Mutex<ContinuousClock.Instant>(.now)
        let messages = messages()
        let task = Task {
            for await message in messages where message.retain && MQTTClient.matches(filter: filter, topic: message.topic) {
                collected.withLock { $0.append(message) }
                lastArrival.withLock { $0 = .now }
            }
        }
        defer { task.cancel() }
        _ = try await client.subscribe([Subscription(filter)])
        let start = ContinuousClock.now
        lastArrival.withLock { $0 = .now }
        while ContinuousClock.now - start < .seconds(maxSeconds) {
            try await Task.sleep(for: .milliseconds(50))
            if ContinuousClock.now - lastArrival.withLock({ $0 }) > .seconds(quietSeconds) { break }
        }
        try? await client.unsubscribe([filter])
        return collected.withLock { $0 }
    }
}

/// A failure an operator can act on, said in one line.
public struct OperatorError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension MQTTClient {
    /// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest).
    public static func matches(filter: String, topic: String) -> Bool {
        let f = filter.split(separator: "/", omittingEmptySubsequences: false)
        let t = topic.split(separator: "/", omittingEmptySubsequences: false)
        for (index, level) in f.enumerated() {
            if level == "#" { return true }
            guard index < t.count else { return false }
            if level != "+" && level != t[index] { return false }
        }
        return f.count == t.count
    }
}
