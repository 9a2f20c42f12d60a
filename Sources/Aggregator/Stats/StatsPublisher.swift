import Foundation
import Logging
import MQTT
import ServiceLifecycle
import SpectraProtocol
import Synchronization

/// Gateways whose figures changed since the retained stats last went out: ingest adds, the
/// stats publisher takes.
public final class ChangedGateways: Sendable {
    private let keys = Mutex<Set<GatewayKey>>([])
    public init() {}

    func insert(_ changed: Set<GatewayKey>) {
        guard !changed.isEmpty else { return }
        keys.withLock { $0.formUnion(changed) }
    }

    /// Everything changed so far, emptied.
    func take() -> Set<GatewayKey> {
        keys.withLock { keys in
            defer { keys.removeAll() }
            return keys
        }
    }
}

/// Every `publishIntervalSeconds`: the fleet gauges of `/metrics`, and the retained
/// `stats/summary` of every fleet and `stats/gw/{gw}` of every gateway that changed, at QoS 1,
/// for dashboards fed by the broker. Runs until the graceful shutdown.
public struct StatsPublisher: Service {
    let configuration: AggregatorConfiguration
    let store: any StatsStore
    let client: any SubscribeTransport
    let changes: ChangedGateways
    let metrics: IngestMetrics
    let health: IngestHealth
    let logger: Logger
    let now: @Sendable () -> Date
    /// With several instances on one database, only the holder publishes the retained topics
    /// (nil: this instance always does).
    let lease: (any PublishingLease)?
    /// The first round after a start publishes every gateway, changed or not.
    private let publishedOnce = PublishedOnce()

    private final class PublishedOnce: Sendable {
        let value = Atomic<Bool>(false)
    }

    /// Publishes through `ingest`'s connection the changes it reports.
    public init(ingest: IngestService, configuration: AggregatorConfiguration, store: any StatsStore, metrics: IngestMetrics,
                logger: Logger, now: @escaping @Sendable () -> Date = Date.init, lease: (any PublishingLease)? = nil) {
        self.lease = lease
        self.configuration = configuration
        self.store = store
        self.client = ingest.client
        self.changes = ingest.changes
        self.metrics = metrics
        self.health = ingest.health
        self.logger = logger
        self.now = now
    }

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while (try? await Task.sleep(for: .seconds(configuration.publishIntervalSeconds))) != nil {
                health.roundStarted()
                await round()
                let seconds = health.roundFinished()
                metrics.statsRoundSeconds.set(to: seconds)
                if seconds > configuration.publishIntervalSeconds {
                    logger.warning(
                        "the stats round took longer than its interval (see /healthz)",
                        metadata: ["seconds": "\(seconds)", "intervalS": "\(configuration.publishIntervalSeconds)"])
                }
            }
        }
    }

    /// One summary per fleet: `/metrics`' gateway counts take it connected to the broker or
    /// not, the retained topics when connected.
    private func round() async {
        if let (reason, seconds) = health.linkReminder() {
            logger.error("still cannot reach the broker", metadata: ["broker": "\(configuration.broker.url)", "reason": "\(reason)", "forS": "\(Int(seconds))"])
        }
        let summaries: [(fleet: String, summary: FleetSummary)]
        do {
            summaries = try await fleetSummaries()
        } catch {
            logger.warning("reading the fleet summaries failed; retried next round", metadata: ["error": "\(error)"])
            return
        }
        for (fleet, summary) in summaries {
            metrics.fleet(
                fleet, gateways: summary.gateways, online: summary.online, silent: summary.silent,
                completeness: summary.completeness.ratio, backlog: summary.backlog.messages)
        }
        guard client.isConnected else { return }
        if let lease {
            guard await lease.holds() else {
                // Another instance publishes; when this one takes over, it starts with everything.
                publishedOnce.value.store(false, ordering: .relaxed)
                _ = changes.take()
                return
            }
        }
        await publish(summaries)
    }

    private func fleetSummaries() async throws -> [(fleet: String, summary: FleetSummary)] {
        var summaries: [(fleet: String, summary: FleetSummary)] = []
        for fleet in try await store.fleets() {
            summaries.append((fleet, try await store.summary(fleet: fleet, now: now())))
        }
        return summaries
    }

    /// Publishes `stats/summary` for every fleet and `stats/gw/{gw}` for every gateway that
    /// changed since the last round, retained at QoS 1. What fails goes again next round.
    func publish(_ summaries: [(fleet: String, summary: FleetSummary)]) async {
        let everything = !publishedOnce.value.exchange(true, ordering: .relaxed)
        let changed = changes.take()
        do {
            for (fleet, summary) in summaries {
                guard let fleetID = try? Identifier(fleet, field: "fleet") else { continue }
                try await client.publish(OutgoingMessage(
                    topic: Topic.statsSummary(fleet: fleetID).path, payload: [UInt8](IngestService.encode(summary)), retain: true))
                metrics.publishedStats.increment()
                let changedHere = changed.filter { $0.fleet == fleet }
                guard everything || !changedHere.isEmpty else { continue }
                for gateway in try await store.gateways(fleet: fleet, search: nil, now: now())
                where everything || changedHere.contains(GatewayKey(fleet: fleet, gateway: gateway.gateway)) {
                    guard let gatewayID = try? Identifier(gateway.gateway, field: "gw") else { continue }
                    try await client.publish(OutgoingMessage(
                        topic: Topic.statsGateway(fleet: fleetID, gateway: gatewayID).path, payload: [UInt8](IngestService.encode(gateway)),
                        retain: true))
                    metrics.publishedStats.increment()
                }
            }
            if health.problem("publish", nil) { logger.info("publishing stats works again") }
        } catch {
            changes.insert(changed)
            if everything { publishedOnce.value.store(false, ordering: .relaxed) }
            // A refusal (the broker's ACL) lasts: said once, and on /healthz while it does.
            if health.problem("publish", "publishing the retained stats failed: \(error); retried every round") {
                logger.warning("publishing stats failed; retried every round", metadata: ["error": "\(error)"])
            }
        }
    }
}
