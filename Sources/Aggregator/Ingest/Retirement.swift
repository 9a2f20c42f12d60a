import Foundation
import Logging
import MQTT
import ServiceLifecycle
import SpectraConfig

/// Retires an aggregator instance for good, without stranding what the broker holds for it.
///
/// An instance's persistent session outlives the process by its expiry (7 days): the broker
/// keeps queueing messages for it and, in a share group, keeps giving it its share, which no
/// one then reads. Retiring (the instance stopped first) resumes that session under the same
/// client id, removes its subscriptions so nothing more is queued for it, ingests what the
/// session already held into the instance's database, and then ends the session on the broker.
public enum Retirement {
    /// What a retirement did.
    public struct Outcome: Sendable {
        /// Messages the session still held.
        public var received: Int
        /// Of those, event and telemetry envelopes written to the database.
        public var envelopes: Int
    }

    /// Seconds without a message after which the session is taken to be drained.
    public static let quietSeconds: Double = 3

    /// Retires the instance `configuration` describes (its `clientId`, broker and database).
    /// - Throws: ``IngestFailure`` when the broker cannot be reached or the session not ended.
    public static func run(configuration: AggregatorConfiguration, logger: Logger) async throws -> Outcome {
        let store: any StatsStore
        var lock: DatabaseLock?
        var postgres: PostgresStatsStore?
        defer { postgres?.shutdown() }
        if let database = configuration.postgres {
            let opened = try await PostgresStatsStore(
                database, silentAfterSeconds: configuration.silentAfterSeconds,
                newEpochsPerGatewayPerDay: configuration.newEpochsPerGatewayPerDay)
            postgres = opened
            store = opened
        } else {
            lock = try DatabaseLock.acquire(databasePath: configuration.databasePath)
            store = try SQLiteStatsStore(
                path: configuration.databasePath, silentAfterSeconds: configuration.silentAfterSeconds,
                newEpochsPerGatewayPerDay: configuration.newEpochsPerGatewayPerDay)
        }
        defer { withExtendedLifetime(lock) {} }
        let ingest = IngestService(
            configuration: configuration, store: store, metrics: IngestMetrics(), logger: logger, retiring: true)
        let group = ServiceGroup(configuration: .init(services: [ingest], gracefulShutdownSignals: [], logger: logger))
        let outcome = try await withThrowingTaskGroup(of: Int?.self) { tasks in
            tasks.addTask {
                try await group.run()
                return nil
            }
            tasks.addTask {
                defer { Task { await group.triggerGracefulShutdown() } }
                // Connected, then quiet for `quietSeconds`: what the session held has arrived.
                let deadline = Date().addingTimeInterval(30)
                while !ingest.client.isConnected {
                    guard Date() < deadline else {
                        throw IngestFailure(message: "cannot reach the broker at \(configuration.broker.url) to retire \(configuration.clientID): \(ingest.health.report(brokerConnected: false).reasons.joined(separator: "; "))")
                    }
                    try await Task.sleep(for: .milliseconds(100))
                }
                var last = -1
                var quietSince = Date()
                while Date().timeIntervalSince(quietSince) < quietSeconds {
                    try await Task.sleep(for: .milliseconds(200))
                    let now = ingest.client.receivedMessages
                    if now != last {
                        last = now
                        quietSince = Date()
                    }
                }
                return last
            }
            var received = 0
            for try await result in tasks {
                if let result { received = result }
            }
            return Outcome(received: received, envelopes: ingest.committedEnvelopes)
        }
        // Ends the session: a clean start discards it, and no expiry keeps a new one.
        let ending = MQTTClient(configuration.broker.client(id: configuration.clientID, cleanStart: true, sessionExpirySeconds: 0))
        do {
            _ = try await ending.connect()
        } catch {
            throw IngestFailure(message: "ingested what the session held, but could not end it on the broker: \(error)")
        }
        await ending.disconnect()
        return outcome
    }
}
