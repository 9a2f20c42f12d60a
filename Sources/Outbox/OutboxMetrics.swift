import Metrics

/// The outbox's figures as swift-metrics gauges and counters (`spectra_outbox_*`), dimensioned
/// by database file so a process with many outboxes (the fleet simulator) keeps them apart.
struct OutboxMetrics: Sendable {
    private let depth: Gauge
    private let bytes: Gauge
    private let oldest: Gauge
    private let buffered: Gauge
    private let sent: Counter
    private let resent: Counter
    private let acknowledged: Counter
    private let evicted: Counter
    private let rolledUp: Counter
    private let storageErrors: Counter

    init(database: String, factory: any MetricsFactory) {
        let dimensions = [("db", database)]
        depth = Gauge(label: "spectra_outbox_depth", dimensions: dimensions, factory: factory)
        bytes = Gauge(label: "spectra_outbox_bytes", dimensions: dimensions, factory: factory)
        oldest = Gauge(label: "spectra_outbox_oldest_unacked_seconds", dimensions: dimensions, factory: factory)
        buffered = Gauge(label: "spectra_outbox_memory_buffered", dimensions: dimensions, factory: factory)
        sent = Counter(label: "spectra_outbox_sent_total", dimensions: dimensions, factory: factory)
        resent = Counter(label: "spectra_outbox_resent_total", dimensions: dimensions, factory: factory)
        acknowledged = Counter(label: "spectra_outbox_acknowledged_total", dimensions: dimensions, factory: factory)
        evicted = Counter(label: "spectra_outbox_evicted_total", dimensions: dimensions, factory: factory)
        rolledUp = Counter(label: "spectra_outbox_rolled_up_total", dimensions: dimensions, factory: factory)
        storageErrors = Counter(label: "spectra_outbox_storage_errors_total", dimensions: dimensions, factory: factory)
    }

    /// Records `now`; counters advance by what changed since `before`.
    func record(_ now: OutboxStats, since before: OutboxStats) {
        depth.record(now.depth)
        bytes.record(now.bytes)
        oldest.record(now.oldestUnackedSeconds)
        buffered.record(now.memoryBuffered)
        sent.increment(by: max(0, now.sent - before.sent))
        resent.increment(by: max(0, now.resent - before.resent))
        acknowledged.increment(by: max(0, now.acknowledged - before.acknowledged))
        evicted.increment(by: max(0, now.evicted - before.evicted))
        rolledUp.increment(by: max(0, now.rolledUp - before.rolledUp))
        storageErrors.increment(by: max(0, now.storageErrors - before.storageErrors))
    }
}
