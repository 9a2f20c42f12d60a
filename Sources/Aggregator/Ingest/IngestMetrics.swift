import Foundation
import Prometheus
import Synchronization

/// The aggregator's own figures, served on `/metrics` in Prometheus text format.
public final class IngestMetrics: Sendable {
    /// The registry `/metrics` renders.
    public let registry: PrometheusCollectorRegistry
    let accepted: [String: Counter]
    let duplicates: Counter
    let presence: Counter
    let batches: Counter
    let retries: Counter
    let lag: Gauge
    let pending: Gauge
    let connected: Gauge
    let publishedStats: Counter
    let latency: ValueHistogram
    let statsRoundSeconds: Gauge
    let lastCommitAge: Gauge
    let statsRoundAge: Gauge
    let healthy: Gauge
    let brokerStateAge: Gauge
    private let failures = Mutex<[String: Counter]>([:])
    private let fleetGauges = Mutex<[[String]: Gauge]>([:])

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        accepted = Dictionary(uniqueKeysWithValues: ["event", "telemetry"].map { kind in
            (kind, registry.makeCounter(descriptor: Self.name("ingested", "total", "Envelopes counted for the first time, by kind."), labels: [("kind", kind)]))
        })
        duplicates = registry.makeCounter(descriptor: Self.name("dedupe_hits", "total", "Envelopes dropped because (gw, epoch, seq) was already counted."))
        presence = registry.makeCounter(descriptor: Self.name("presence", "total", "Status and state messages applied."))
        batches = registry.makeCounter(descriptor: Self.name("batches", "total", "Write transactions committed."))
        retries = registry.makeCounter(
            descriptor: Self.name(
                "store_retries", "total", "Write transactions the database rolled back (serialisation failure, deadlock) and that ran again."))
        lag = registry.makeGauge(descriptor: Self.name("lag", "seconds", "Commit time minus the newest synced envelope's ts in the last batch."))
        pending = registry.makeGauge(descriptor: Self.name("pending", "messages", "Received messages not yet committed."))
        connected = registry.makeGauge(descriptor: Self.name("broker_connected", "", "1 while connected to the broker."))
        publishedStats = registry.makeCounter(descriptor: Self.name("stats_published", "total", "Retained stats messages published."))
        latency = registry.makeValueHistogram(
            descriptor: Self.name("commit_latency", "seconds", "Gateway ts to statistics commit, live envelopes from synced clocks."),
            buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300])
        statsRoundSeconds = registry.makeGauge(descriptor: Self.name("stats_round", "seconds", "How long the last stats round took."))
        lastCommitAge = registry.makeGauge(
            descriptor: Self.name("last_commit_age", "seconds", "Seconds since the last committed batch (since the start before the first)."))
        statsRoundAge = registry.makeGauge(
            descriptor: Self.name("last_stats_round_age", "seconds", "Seconds since the last stats round ended (since the start before the first)."))
        healthy = registry.makeGauge(descriptor: Self.name("healthy", "", "1 while /healthz answers 200."))
        brokerStateAge = registry.makeGauge(
            descriptor: Self.name("broker_state_age", "seconds", "Seconds the broker link has been in its current state (see broker_connected)."))
        for reason in IngestRecord.Refusal.allReasons { failed(reason: reason, count: 0) }
    }

    /// Sets the health figures from a `/healthz` report (called as `/metrics` is rendered).
    func update(_ report: IngestHealth.Report) {
        lastCommitAge.set(to: report.lastCommitAgeSeconds)
        statsRoundAge.set(to: report.statsRoundAgeSeconds)
        healthy.set(to: report.healthy ? 1 : 0)
        brokerStateAge.set(to: max(0, Date().timeIntervalSince(report.brokerSince)))
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "spectra", subsystem: "aggregator", metricName: metric, unitName: unit, helpText: help)
    }

    /// Counts messages refused by parsing, validation, a per-gateway limit or the store, under
    /// their reason (labels come from a fixed set: no per-gateway labels).
    func failed(reason: String, count: Int = 1) {
        let counter = failures.withLock { counters in
            if let counter = counters[reason] { return counter }
            let counter = registry.makeCounter(descriptor: Self.name("parse_failures", "total", "Messages refused by parsing or validation, by reason."), labels: [("reason", reason)])
            counters[reason] = counter
            return counter
        }
        counter.increment(by: Int64(count))
    }

    /// Sets a fleet's gauges: its gateway counts (`spectra_aggregator_gateways{fleet,state}`:
    /// every gateway known, those online by their last word, and of those the silent ones), its
    /// data completeness (`spectra_aggregator_completeness_ratio{fleet}`, absent before anything
    /// arrived) and the messages waiting in its gateways' outboxes
    /// (`spectra_aggregator_backlog_messages{fleet}`).
    func fleet(_ fleet: String, gateways: Int, online: Int, silent: Int, completeness: Double? = nil, backlog: Int = 0) {
        func gauge(_ name: String, _ help: String, _ labels: [(String, String)]) -> Gauge {
            fleetGauges.withLock { gauges in
                let key = [name] + labels.map(\.1)
                if let gauge = gauges[key] { return gauge }
                let gauge = registry.makeGauge(descriptor: Self.name(name, "", help), labels: labels)
                gauges[key] = gauge
                return gauge
            }
        }
        for (state, value) in [("known", gateways), ("online", online), ("silent", silent)] {
            gauge("gateways", "Gateways per fleet: known, online by their last word, silent of the online.", [("fleet", fleet), ("state", state)])
                .set(to: Double(value))
        }
        if let completeness {
            gauge("completeness_ratio", "Of the seqs gateways used, the share received or announced as evicted, per fleet.", [("fleet", fleet)])
                .set(to: completeness)
        }
        gauge("backlog_messages", "Messages waiting in the fleet's gateways' outboxes, from their latest telemetry.", [("fleet", fleet)])
            .set(to: Double(backlog))
    }

    func record(_ outcome: ApplyOutcome) {
        accepted["event"]?.increment(by: Int64(outcome.acceptedEvents))
        accepted["telemetry"]?.increment(by: Int64(outcome.accepted - outcome.acceptedEvents))
        duplicates.increment(by: Int64(outcome.duplicates))
        presence.increment(by: Int64(outcome.presence))
        batches.increment()
        retries.increment(by: Int64(outcome.retries))
        if let lagSeconds = outcome.maxLagSeconds { lag.set(to: lagSeconds) }
        for seconds in outcome.latenciesSeconds { latency.record(seconds) }
    }

    /// Renders every metric in Prometheus text format.
    public func render() -> String { registry.emitToString() }
}
