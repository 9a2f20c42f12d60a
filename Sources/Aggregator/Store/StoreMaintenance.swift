import Foundation
import Logging
import ServiceLifecycle

/// Once a minute: the store's compaction (finished days rolled up) and the pruning of raw
/// events past `retentionDays`. Runs until the graceful shutdown.
public struct StoreMaintenance: Service {
    let store: any StatsStore
    let retentionDays: Int
    let logger: Logger
    let now: @Sendable () -> Date
    let intervalSeconds: Double

    public init(store: any StatsStore, retentionDays: Int, logger: Logger, now: @escaping @Sendable () -> Date = Date.init, intervalSeconds: Double = 60) {
        self.store = store
        self.retentionDays = retentionDays
        self.logger = logger
        self.now = now
        self.intervalSeconds = intervalSeconds
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while (try? await Task.sleep(for: .seconds(intervalSeconds))) != nil {
                do {
                    try await store.compact(now: now())
                    let removed = try await store.prune(before: Day(now()).adding(-retentionDays))
                    if removed > 0 { logger.info("pruned raw events past retention", metadata: ["events": "\(removed)"]) }
                } catch {
                    logger.warning("store maintenance failed; retried in a minute", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
