import Foundation
import Logging
import MQTT
import ServiceLifecycle
import SpectraConfig
import SpectraProtocol
import Synchronization

/// Subscribes to the fleet's topics and writes what arrives into the store in batches, and
/// tells ``StatsPublisher`` which gateways changed. (``StoreMaintenance`` keeps the store
/// compact.)
///
/// Events and telemetry come through MQTT 5 shared subscriptions (`$share/{group}/...`), so
/// several instances split them; the session is persistent, so nothing published while an
/// instance restarts is lost; and a message is acknowledged to the broker only once its batch
/// is committed, so not even a killed instance loses one (the broker sends it again; the
/// store's dedupe counts it once). Status and state are retained, and brokers do not deliver
/// retained messages to shared subscriptions, so every instance subscribes to those directly
/// (applying them is idempotent).
public final class IngestService: Service, Sendable {
    private let configuration: AggregatorConfiguration
    private let store: any StatsStore
    private let metrics: IngestMetrics
    /// Commits, stats rounds and the broker, for `/healthz` and `/metrics`.
    public let health: IngestHealth
    private let limiter: GatewayRateLimiter
    /// Records refused by the store since the last commit: past ``maxRefusedWithoutCommit`` the
    /// store is taken to be broken rather than the records bad, and batches are retried whole.
    private let refusedWithoutCommit = Atomic<Int>(0)
    static let maxRefusedWithoutCommit = 100
    private let logger: Logger
    private let now: @Sendable () -> Date
    /// The link to the broker (an ``MQTTClient`` unless a test gives another).
    let client: any SubscribeTransport
    private let raw = Mutex<[(MQTTMessage, Date)]>([])
    /// Gateways whose figures changed since the stats publisher's last round.
    let changes: ChangedGateways
    private let lastRefusalLog = Mutex<Date>(.distantPast)
    /// Records per write transaction, at most.
    static let maxBatch = 5_000
    /// A fleet's steady trickle is gathered for up to `gatherDelay` into one transaction,
    /// unless `gatherCount` messages wait sooner or none arrive for two polls: a commit costs
    /// about as much as parsing and counting a few dozen messages.
    static let gatherDelay = Duration.milliseconds(50)
    static let gatherCount = 500

    /// - Parameter now: the clock statistics are computed against (tests inject one).
    /// - Parameter settleWindow: messages read ahead of the last commit, at most.
    public init(
        configuration: AggregatorConfiguration, store: any StatsStore, metrics: IngestMetrics, logger: Logger,
        now: @escaping @Sendable () -> Date = Date.init, settleWindow: Int = IngestService.settleWindow,
        retiring: Bool = false, changes: ChangedGateways = ChangedGateways(), transport: (any SubscribeTransport)? = nil
    ) {
        self.changes = changes
        self.retiring = retiring
        self.configuration = configuration
        self.store = store
        self.metrics = metrics
        self.logger = logger
        self.now = now
        health = IngestHealth(statsIntervalSeconds: configuration.publishIntervalSeconds)
        limiter = GatewayRateLimiter(limit: configuration.gatewayMessagesPerHour)
        let broker = configuration.broker
        client = transport ?? MQTTClient(broker.client(
            id: configuration.clientID, cleanStart: false, sessionExpirySeconds: 7 * 86_400,
            // Back quickly after a broker restart: gateways drain their backlogs at once.
            backoff: Backoff(minimumSeconds: 0.2, maximumSeconds: 5),
            // Acknowledge to the broker only what is committed: an aggregator killed mid-batch
            // gets the uncommitted messages again from its session (and dedupes any repeat).
            acknowledgeWhenSettled: settleWindow))
    }

    /// Messages read ahead of the last commit, at most. Big enough that parsing and writing
    /// overlap across several batches before reading waits for the commits to catch up.
    public static let settleWindow = 40_000

    /// Set for ``Retirement``: on connecting, the session's subscriptions are removed (the
    /// broker stops giving this client id messages, and a share group stops counting it as a
    /// member) and only what the session already holds is ingested.
    let retiring: Bool

    /// Envelopes written so far (counted or recognised as duplicates) by this instance.
    public var committedEnvelopes: Int { committed.load(ordering: .relaxed) }
    private let committed = Atomic<Int>(0)

    /// Whether ingest is connected to the broker.
    public var isConnected: Bool { client.isConnected }

    /// The subscriptions: shared for events and telemetry (when a share group is configured
    /// and the broker takes shared subscriptions), direct for retained presence.
    var subscriptions: [Subscription] { subscriptions(shared: !configuration.shareGroup.isEmpty) }

    func subscriptions(shared useGroup: Bool) -> [Subscription] {
        let fleets: [Identifier?] = configuration.fleets.isEmpty ? [nil] : configuration.fleets
        return fleets.flatMap { fleet -> [Subscription] in
            func filter(_ leaf: String) -> String {
                fleet.map { TopicFilter.allGateways(fleet: $0, leaf: leaf) } ?? TopicFilter.allFleets(leaf: leaf)
            }
            func shared(_ filter: String) -> String {
                useGroup ? TopicFilter.shared(group: configuration.shareGroup, filter) : filter
            }
            return [
                Subscription(shared(filter("event"))),
                Subscription(shared(filter("telemetry"))),
                Subscription(filter("status")),
                Subscription(filter("state")),
            ]
        }
    }

    public func run() async throws {
        let events = client.connectionUpdates()
        client.deliverMessages { [self] message in self.file(message) }
        client.start()
        logger.info("aggregator ingest started", metadata: ["broker": "\(configuration.broker.url)", "clientId": "\(configuration.clientID)"])
        if !configuration.shareGroup.isEmpty && configuration.broker.protocolVersion == .v311 {
            logger.warning(
                "shareGroup is set, but an MQTT 3.1.1 broker cannot say whether it takes shared subscriptions: one that does not treats $share/\(configuration.shareGroup)/... as a plain topic and this instance ingests no events or telemetry",
                metadata: ["shareGroup": "\(configuration.shareGroup)"])
        }
        let fatal: IngestFailure? = await withTaskGroup(of: Void.self) { work in
            // The writer stops only once everything received has been written (``stopping``),
            // not with the link's followers below.
            work.addTask { await self.writeLoop() }
            let fatal: IngestFailure? = await withTaskGroup(of: IngestFailure?.self) { group in
                group.addTask { await self.watchConnection(events) }
                group.addTask { try? await gracefulShutdown(); return nil }
                // Until the shutdown, or a broker this aggregator cannot work with.
                var fatal: IngestFailure?
                for await ending in group {
                    fatal = ending
                    break
                }
                // Stop reading; the DISCONNECT goes out once everything delivered is committed
                // (and acknowledged), then the writer finishes.
                await client.disconnect()
                let deadline = ContinuousClock.now + .seconds(10)
                while processed.load(ordering: .relaxed) < client.receivedMessages - client.droppedMessages, ContinuousClock.now < deadline {
                    try? await Task.sleep(for: .milliseconds(5))
                }
                stopping.store(true, ordering: .relaxed)
                group.cancelAll()
                return fatal
            }
            await work.waitForAll()
            return fatal
        }
        if let fatal {
            logger.critical("aggregator ingest stopped: \(fatal.message)")
            throw fatal
        }
        logger.info("aggregator ingest stopped")
    }

    private let processed = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)

    /// Follows the link: logs and reports its changes, checks what the broker supports and
    /// subscribes on each connection. Returns a failure when the broker cannot serve this
    /// aggregator at all (nil when the stream ends).
    private func watchConnection(_ events: AsyncStream<ConnectionState>) async -> IngestFailure? {
        var link = LinkDiagnostics()
        var warnedShared = false
        for await state in events {
            guard !Task.isCancelled else { return nil }
            if let line = link.update(state) {
                switch line {
                case .connected(let after):
                    logger.info("connected to the broker", metadata: after.map { ["after": "\($0)"] } ?? [:])
                case .failing(let reason, let wasConnected):
                    logger.error(
                        wasConnected ? "lost the broker; reconnecting" : "cannot connect to the broker; retrying (said again when the cause changes)",
                        metadata: ["broker": "\(configuration.broker.url)", "reason": "\(reason)"])
                }
                health.linkChanged(link)
            }
            if case .connected = state {
                metrics.connected.set(to: 1)
                let capabilities = client.brokerCapabilities
                var shared = !configuration.shareGroup.isEmpty
                if shared && !capabilities.sharedSubscriptions {
                    shared = false
                    if !warnedShared {
                        warnedShared = true
                        logger.warning(
                            "the broker does not take shared subscriptions: shareGroup '\(configuration.shareGroup)' is ignored and this instance subscribes directly (run one instance per broker, or every instance counts every message)",
                            metadata: ["broker": "\(configuration.broker.url)"])
                    }
                }
                if retiring {
                    let filters = subscriptions(shared: true).map(\.filter) + subscriptions(shared: false).map(\.filter)
                    do {
                        try await client.unsubscribe(Array(Set(filters)).sorted())
                        logger.info("retiring: unsubscribed; ingesting what the session still holds")
                    } catch {
                        logger.error("retiring: unsubscribing failed", metadata: ["error": "\(error)"])
                    }
                    continue
                }
                if !capabilities.wildcardSubscriptions {
                    return IngestFailure(
                        message: "the broker at \(configuration.broker.url) does not take wildcard subscriptions, which the aggregator needs to hear every gateway (spectra/v1/+/gw/+/...): use a broker that has them (mosquitto, EMQX, HiveMQ, VerneMQ)")
                }
                do {
                    _ = try await client.subscribe(subscriptions(shared: shared))
                    if health.problem("subscribe", nil) { logger.info("subscribed") }
                } catch {
                    let reason = "subscribing failed: \(error); retried at the next connection"
                    if health.problem("subscribe", reason) {
                        logger.error("subscribing failed; retried at the next connection", metadata: ["error": "\(error)"])
                    }
                }
            } else {
                metrics.connected.set(to: 0)
            }
        }
        return nil
    }

    /// Files a message for the writer, on the MQTT event loop's thread as it arrives (a lock
    /// and an append: no thread is woken per message); parsing happens in the writer's
    /// pipeline, on every core.
    private func file(_ message: MQTTMessage) {
        if lastConnection.exchange(message.delivery.connection, ordering: .relaxed) != message.delivery.connection {
            dropResent(before: message.delivery)
        }
        let receivedAt = now()
        let count = raw.withLock { raw in
            raw.append((message, receivedAt))
            return raw.count
        }
        if count % 1024 == 0 { metrics.pending.set(to: Double(count)) }
        processed.add(1, ordering: .relaxed)
    }

    /// The connection the last filed message came on.
    private let lastConnection = Atomic<UInt64>(0)

    /// Drops what still waits unparsed from earlier connections of the same broker session: none
    /// of it was acknowledged, so the resumed session sends it all again. Without this, a store
    /// that cannot commit (disk full) would gain a window of copies at every reconnect.
    private func dropResent(before delivery: Delivery) {
        let dropped = raw.withLock { raw in
            let before = raw.count
            raw.removeAll { entry in
                let earlier = entry.0.delivery
                return entry.0.qos != .atMostOnce && earlier.session == delivery.session && earlier.connection < delivery.connection
            }
            return before - raw.count
        }
        if dropped > 0 {
            logger.info(
                "dropped messages still waiting from an earlier connection; the broker sends them again",
                metadata: ["messages": "\(dropped)"])
        }
    }

    /// A two-stage pipeline: while one batch is written, the next is parsed (in parallel).
    private func writeLoop() async {
        var writing: Task<Void, Never>?
        // When a few messages wait: since when, and the polls in a row that found none new.
        // They wait up to `gatherDelay` for more while more keep coming; two polls with
        // nothing new end the wait (a broker that lets only a few messages be in flight
        // unacknowledged sends no more until these are committed).
        var fewSince: ContinuousClock.Instant?
        var seen = 0, idlePolls = 0
        while true {
            let waitingCount = raw.withLock { $0.count }
            if waitingCount > 0, waitingCount < Self.gatherCount, !stopping.load(ordering: .relaxed) {
                let since = fewSince ?? .now
                fewSince = since
                idlePolls = waitingCount > seen ? 0 : idlePolls + 1
                seen = waitingCount
                if ContinuousClock.now - since < Self.gatherDelay && idlePolls < 2 {
                    try? await Task.sleep(for: .milliseconds(5))
                    continue
                }
            }
            fewSince = nil
            seen = 0
            idlePolls = 0
            // Take everything waiting at once (taking a prefix would shift the rest every time).
            let waiting = raw.withLock { raw -> [(MQTTMessage, Date)] in
                defer { raw.removeAll(keepingCapacity: false) }
                return raw
            }
            if waiting.isEmpty {
                await writing?.value
                writing = nil
                if stopping.load(ordering: .relaxed) && raw.withLock({ $0.isEmpty }) { return }
                try? await Task.sleep(for: .milliseconds(5))
                continue
            }
            for start in stride(from: 0, to: waiting.count, by: Self.maxBatch) {
                let batch = waiting[start..<min(start + Self.maxBatch, waiting.count)]
                let records = await parse(batch)
                let last = batch[batch.endIndex - 1].0.delivery
                await writing?.value
                writing = Task {
                    await self.write(records)
                    self.client.settle(through: last)
                }
            }
        }
    }

    /// Parses a batch on up to ``parseWorkers`` tasks, keeping arrival order; refusals are
    /// counted and logged at a rate limit.
    private func parse(_ batch: ArraySlice<(MQTTMessage, Date)>) async -> [IngestRecord] {
        let workers = batch.count >= 256 ? Self.parseWorkers : 1
        let chunk = (batch.count + workers - 1) / workers
        let parts = await withTaskGroup(of: (Int, [IngestRecord]).self) { group in
            for worker in 0..<workers {
                let slice = batch[(batch.startIndex + min(worker * chunk, batch.count))..<(batch.startIndex + min((worker + 1) * chunk, batch.count))]
                group.addTask {
                    var records: [IngestRecord] = []
                    records.reserveCapacity(slice.count)
                    for (message, receivedAt) in slice {
                        do throws(IngestRecord.Refusal) {
                            let record = try IngestRecord.parse(message, receivedAt: receivedAt)
                            if let gateway = record.gateway, !self.limiter.admit(gateway, at: receivedAt) {
                                throw IngestRecord.Refusal(
                                    reason: IngestRecord.Refusal.rateLimited,
                                    detail: "more than \(self.limiter.limit) messages from this gateway within an hour",
                                    gateway: gateway)
                            }
                            records.append(record)
                        } catch {
                            self.refused(message, error, at: receivedAt)
                            // Recorded against the gateway (the API and dashboard show it) in
                            // the same commit as the batch around it.
                            if let gateway = error.gateway {
                                records.append(.refused(gateway, error, receivedAt: receivedAt, payload: Data(message.payload)))
                            }
                        }
                    }
                    return (worker, records)
                }
            }
            var parts: [(Int, [IngestRecord])] = []
            for await part in group { parts.append(part) }
            return parts
        }
        return parts.sorted { $0.0 < $1.0 }.flatMap { $0.1 }
    }

    /// Parallel parsers per batch.
    static let parseWorkers = max(1, min(4, ProcessInfo.processInfo.activeProcessorCount))

    private func refused(_ message: MQTTMessage, _ error: IngestRecord.Refusal, at time: Date) {
        metrics.failed(reason: error.reason)
        let shouldLog = lastRefusalLog.withLock { last in
            guard time.timeIntervalSince(last) >= 10 else { return false }
            last = time
            return true
        }
        if shouldLog {
            logger.warning(
                "refused a message (further refusals are counted on /metrics, logged at most every 10 s)",
                metadata: ["topic": "\(message.topic)", "reason": "\(error.reason)", "detail": "\(error.detail)"])
        }
    }

    /// Writes one batch, retrying until it is committed: a failed transaction rolled back, so
    /// nothing is lost or counted twice. While the store is unavailable (a full disk), `/healthz`
    /// says why and nothing is acknowledged. A batch the store refuses is split until the
    /// records it refuses are found; those are recorded against their gateway and counted
    /// (`store_refused`), the rest commit, and all are acknowledged: one poison message never
    /// holds up the messages around it, nor comes back after a restart.
    private func write(_ records: [IngestRecord]) async {
        guard !records.isEmpty else { return }
        while true {
            do {
                let outcome = try await store.apply(records)
                committedBatch(outcome)
                return
            } catch let failure as StoreFailure where failure.kind == .refused
                && refusedWithoutCommit.load(ordering: .relaxed) < Self.maxRefusedWithoutCommit
            {
                guard records.count > 1 else {
                    await setAside(records[0], failure)
                    return
                }
                let half = records.count / 2
                await write(Array(records[..<half]))
                await write(Array(records[half...]))
                return
            } catch {
                if health.commitFailed("\(error)") {
                    logger.error(
                        "commits are failing; the batch is written again every second until it commits (see /healthz)",
                        metadata: ["error": "\(error)", "records": "\(records.count)"])
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    private func committedBatch(_ outcome: ApplyOutcome) {
        metrics.record(outcome)
        for (reason, count) in outcome.refused { metrics.failed(reason: reason, count: count) }
        committed.add(outcome.accepted + outcome.duplicates, ordering: .relaxed)
        metrics.pending.set(to: Double(raw.withLock { $0.count }))
        changes.insert(outcome.changedGateways)
        refusedWithoutCommit.store(0, ordering: .relaxed)
        if let seconds = health.commitSucceeded() {
            logger.notice("commits work again", metadata: ["failingForS": "\(Int(seconds))"])
        }
    }

    /// Records one message the store refused, so it is acknowledged and never retried.
    private func setAside(_ record: IngestRecord, _ failure: StoreFailure) async {
        refusedWithoutCommit.add(1, ordering: .relaxed)
        let at = now()
        metrics.failed(reason: IngestRecord.Refusal.storeRefused)
        logger.error(
            "the store refused a message; it is recorded against its gateway and not retried",
            metadata: ["gateway": "\(record.gateway.map { "\($0.fleet)/\($0.gateway)" } ?? "-")", "error": "\(failure.reason)"])
        guard let gateway = record.gateway else { return }
        var payload: Data?
        if case .envelope(let envelope, _, _, let bytes) = record { payload = bytes ?? envelope.encoded() }
        await write([
            .refused(
                gateway, IngestRecord.Refusal(reason: IngestRecord.Refusal.storeRefused, detail: failure.reason, gateway: gateway),
                receivedAt: at, payload: payload)
        ])
    }

    /// JSON for the retained stats and the API. Every figure is finite by construction (the
    /// store reads sums clamped); should one not be, it is written as null rather than the
    /// whole document being lost.
    static func encode(_ value: some Encodable) -> Data {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "null", negativeInfinity: "null", nan: "null")
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(WireFormat.timestamp(date))
        }
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(value)) ?? Data("{}".utf8)
    }
}

extension IngestService {
    /// Messages received and not yet taken by the writer.
    @_spi(Testing) public var waitingMessages: Int { raw.withLock { $0.count } }

    /// Messages the broker delivered so far.
    @_spi(Testing) public var receivedMessages: Int { client.receivedMessages }

    /// Drops the broker connection without DISCONNECT, as a cut cable would; it comes back by itself.
    @_spi(Testing) public func dropConnection() { client.reconnect() }
}

/// Why ingest cannot run against this broker at all (retrying would not help).
public struct IngestFailure: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
