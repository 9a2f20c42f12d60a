import Aggregator
import Foundation
import Logging
import MQTT
import SpectraConfig
import SpectraProtocol
import SpectraTesting
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The instant the tests' aggregator thinks it is: 2026-11-27 12:00 UTC.
let testNow = Date(timeIntervalSince1970: 1_795_780_800)
let today = Day(testNow)

/// Builds one gateway's envelopes as its outbox would: one `seq` counter per epoch.
struct GatewayFeed {
    let fleet: Identifier
    let gateway: Identifier
    var epoch = UUID()
    var boot = UUID()
    var seq: UInt64 = 0
    /// Whether the gateway's wall clock is trusted.
    var synced = true
    /// Gateway clock minus true time, seconds.
    var clockErrorSeconds: Double = 0

    init(_ gateway: String, fleet: String = "demo") {
        self.fleet = try! Identifier(fleet)
        self.gateway = try! Identifier(gateway)
    }

    mutating func next(_ message: Message, at time: Date) -> Envelope {
        seq += 1
        return Envelope(
            fleet: fleet, gateway: gateway, epoch: epoch, seq: seq, boot: boot, monoNanos: seq * 1_000_000,
            timestamp: time.addingTimeInterval(clockErrorSeconds), synced: synced, message: message)
    }

    /// Skips a seq, as if the message were lost for good.
    mutating func skip() { seq += 1 }

    mutating func telemetry(at time: Date, depth: Int = 0) -> Envelope {
        next(.telemetry(Telemetry(
            channels: [], batteryPct: 80, headbandTempC: 30,
            agent: .init(outboxDepth: depth, outboxBytes: depth * 300, oldestUnackedS: 0, reconnects: 0, rssKiB: 30_000))), at: time)
    }

    /// A whole session: started, optionally a level change and a trip, then its end.
    mutating func session(_ truth: SessionTruth) -> [Envelope] {
        let id = try! Identifier(truth.id)
        var out = [next(.event(.sessionStarted(SessionStarted(
            sessionId: id, level: 1, profileVersion: "default-1", channels: ["frontalis-l"],
            regimenPhase: truth.regimenDay.map { $0 <= 56 ? .loading : .maintenance }, regimenDay: truth.regimenDay))), at: truth.start)]
        if truth.levelSeconds[1] > 0 {
            out.append(next(.event(.sessionLevelChanged(LevelChanged(sessionId: id, from: 1, to: 2))), at: truth.start.addingTimeInterval(60)))
        }
        for _ in 0..<truth.trips {
            out.append(next(.event(.safetyTrip(SafetyTrip(sessionId: id, rule: "peak", channel: "frontalis-l", value: 1100, limit: 1000))), at: truth.start.addingTimeInterval(90)))
        }
        let summary = SessionSummary(
            sessionId: id, durationS: truth.levelSeconds.reduce(0, +) + 10, stimulatingS: truth.levelSeconds.reduce(0, +),
            levelSeconds: ["1": truth.levelSeconds[0], "2": truth.levelSeconds[1], "3": truth.levelSeconds[2]],
            pauses: truth.pauses, chargeMicroCoulombs: ["frontalis-l": 0], reason: truth.abortReason.map(AbortReason.init(rawValue:)),
            regimenPhase: truth.regimenDay.map { $0 <= 56 ? .loading : .maintenance }, regimenDay: truth.regimenDay)
        let end = truth.start.addingTimeInterval(900)
        out.append(next(.event(truth.abortReason == nil ? .sessionCompleted(summary) : .sessionAborted(summary)), at: end))
        return out
    }
}

/// What really happened in one session: the test's own record, from which it computes the
/// statistics it expects the aggregator to report.
struct SessionTruth {
    var gateway: String
    var id: String
    var start: Date
    var levelSeconds: [Double] = [600, 0, 0]
    var pauses = 0
    var trips = 0
    var abortReason: String?
    var regimenDay: Int?

    var day: Day { Day(start) }
}

func at(_ day: Day, hour: Double) -> Date { day.start.addingTimeInterval(hour * 3600) }

extension MosquittoBroker {
    func client(_ id: String) async throws -> MQTTClient {
        let client = MQTTClient(MQTTConfiguration(port: port, clientID: id, backoff: Backoff(minimumSeconds: 0.1, maximumSeconds: 0.5)))
        try await client.connect()
        return client
    }
}

extension MQTTClient {
    func publish(_ envelope: Envelope, historical: Bool = false) async throws {
        let topic: Topic = envelope.kind == .event
            ? .event(fleet: envelope.fleet, gateway: envelope.gateway) : .telemetry(fleet: envelope.fleet, gateway: envelope.gateway)
        try await publish(OutgoingMessage(
            topic: topic.path, payload: [UInt8](envelope.encoded()),
            userProperties: historical ? [UserProperty("historical", "true")] : []))
    }

    func publishRaw(_ topic: String, _ text: String, retain: Bool = false) async throws {
        try await publish(OutgoingMessage(topic: topic, payload: Array(text.utf8), retain: retain))
    }
}

/// One aggregator, in process, on its own database and a free HTTP port.
final class RunningAggregator: Sendable {
    let server: AggregatorServer
    let task: Task<Void, any Error>
    /// An operator's API token, made on the aggregator's database before it started; ``get(_:)``
    /// sends it.
    let token: String

    /// - Parameter now: the aggregator's clock (the tests' fixed instant unless a test moves it).
    init(
        broker: MosquittoBroker, database: String, clientID: String = "agg-test", publishIntervalSeconds: Double = 1,
        now: @escaping @Sendable () -> Date = { testNow }, configure: (inout AggregatorConfiguration) -> Void = { _ in }
    ) async throws {
        var configuration = AggregatorConfiguration(
            fleets: [], broker: BrokerConfiguration(host: "127.0.0.1", port: broker.port), clientID: clientID,
            databasePath: database, httpHost: "127.0.0.1", httpPort: 0, publishIntervalSeconds: publishIntervalSeconds)
        configure(&configuration)
        var logger = Logger(label: "test.aggregator")
        logger.logLevel = .warning
        let server = try AggregatorServer(configuration: configuration, logger: logger, now: now)
        self.server = server
        token = try await server.access.createToken("tests-\(UUID().uuidString.prefix(8))", role: .operator, expiresAt: nil).secret
        task = Task { try await server.run(handleSignals: false) }
        guard await eventually(timeout: 15, { server.httpPort != nil && server.ingest.isConnected }) else {
            task.cancel()
            throw TestEnvironmentError("the aggregator did not start listening and connect within 15 s")
        }
        // Subscriptions are made right after the connect; give the SUBACK a moment.
        _ = await eventually(timeout: 5) { (try? await self.get("/healthz").0) == 200 }
        try await Task.sleep(for: .milliseconds(300))
    }

    var baseURL: String { "http://127.0.0.1:\(server.httpPort ?? 0)" }

    /// A GET with the operator's token, or with `bearer` (`""`: no Authorization header).
    func get(_ path: String, bearer: String? = nil) async throws -> (Int, Data) {
        var request = URLRequest(url: URL(string: baseURL + path)!)
        let token = bearer ?? self.token
        if !token.isEmpty { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, data)
    }

    func json<T: Decodable>(_ type: T.Type, _ path: String) async throws -> T {
        let (status, data) = try await get(path)
        guard status == 200 else { throw TestEnvironmentError("GET \(path) answered \(status): \(String(decoding: data, as: UTF8.self))") }
        return try Self.decoder.decode(type, from: data)
    }

    static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = WireFormat.parseTimestamp(text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: text))
            }
            return date
        }
        return decoder
    }()

    /// Stops it the way SIGTERM would, waiting for the final flush.
    func stop() async {
        await server.shutdown()
        _ = try? await task.value
    }
}

/// The real SQLite store behind a test's `apply`: subclasses refuse batches the way a failing
/// store would, and everything else goes straight to the store.
class ForwardingStore: StatsStore, @unchecked Sendable {
    let store: SQLiteStatsStore

    init(_ store: SQLiteStatsStore) { self.store = store }

    func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome { try await store.apply(records) }
    func compact(now: Date) async throws { try await store.compact(now: now) }
    func prune(before day: Day) async throws -> Int { try await store.prune(before: day) }
    func summary(fleet: String?, now: Date) async throws -> FleetSummary { try await store.summary(fleet: fleet, now: now) }
    func daily(fleet: String?, from: Day, to: Day) async throws -> [DailyStats] { try await store.daily(fleet: fleet, from: from, to: to) }
    func gateways(fleet: String?, search: String?, now: Date) async throws -> [GatewaySummary] {
        try await store.gateways(fleet: fleet, search: search, now: now)
    }
    func gateway(fleet: String?, id: String, now: Date, from: Day, to: Day) async throws -> GatewayDetail? {
        try await store.gateway(fleet: fleet, id: id, now: now, from: from, to: to)
    }
    func sessions(fleet: String?, gateway: String, from: Day, to: Day, limit: Int) async throws -> [SessionRecord]? {
        try await store.sessions(fleet: fleet, gateway: gateway, from: from, to: to, limit: limit)
    }
    func fleets() async throws -> [String] { try await store.fleets() }
}
