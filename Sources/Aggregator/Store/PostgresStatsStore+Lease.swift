import Logging
import PostgresNIO
import Synchronization

/// Whether this instance is the one that publishes the retained `stats/*` topics.
public protocol PublishingLease: Sendable {
    /// True while this instance holds the lease; takes it when it is free.
    func holds() async -> Bool
}

extension PostgresStatsStore {
    /// The advisory lock key of the retained stats publisher ("spectra-publish").
    static let publisherLock: Int64 = 0x5350_4543_5452_4102

    /// One instance at a time publishes the retained stats: the one holding a session-level
    /// advisory lock on a connection of its own. The lock goes with the connection, so an
    /// instance that dies (or loses the database) gives it up, and another one's next round
    /// takes it.
    public final class PublisherLease: PublishingLease {
        private let database: PostgresDatabase
        private let logger: Logger
        private let connection = Mutex<PostgresConnection?>(nil)
        private let nextID = Atomic<Int>(1)

        public init(_ database: PostgresDatabase, logger: Logger) {
            self.database = database
            self.logger = logger
        }

        deinit {
            // The connection must outlive its closing.
            guard let held = connection.withLock({ $0 }) else { return }
            held.close().whenComplete { _ in withExtendedLifetime(held) {} }
        }

        /// Gives the lease up (the process is stopping): another instance's next round takes it.
        public func release() async {
            guard let held = connection.withLock({ connection in defer { connection = nil }; return connection }) else { return }
            _ = try? await held.close().get()
        }

        public func holds() async -> Bool {
            if let held = connection.withLock({ $0 }) {
                // Still ours while the connection answers.
                if !held.isClosed, (try? await held.query("SELECT 1", logger: logger)) != nil { return true }
                connection.withLock { $0 = nil }
                _ = try? await held.close().get()
                logger.warning("lost the retained-stats lease (its database connection closed); another instance may take it")
            }
            do {
                let candidate = try await PostgresConnection.connect(
                    configuration: try database.connectionConfiguration(), id: nextID.add(1, ordering: .relaxed).newValue, logger: logger)
                var taken = false
                for try await value in try await candidate.query(
                    "SELECT pg_try_advisory_lock(\(PostgresStatsStore.publisherLock))", logger: logger
                ).decode(Bool.self) {
                    taken = value
                }
                guard taken else {
                    _ = try? await candidate.close().get()
                    return false
                }
                connection.withLock { $0 = candidate }
                logger.info("this instance publishes the retained stats (it holds the lease)")
                return true
            } catch {
                return false
            }
        }
    }
}
