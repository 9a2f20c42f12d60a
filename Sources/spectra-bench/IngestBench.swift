import Aggregator
import ArgumentParser
import Foundation
import Logging
import MQTT
import SpectraConfig
import SpectraProtocol

/// A realistic stream: per gateway, mostly telemetry (10 channels) with session events between.
func ingestStream(count: Int, gateways: Int, fleet: String) -> [OutgoingMessage] {
    let fleetID = try! Identifier(fleet)
    let ids = (0..<gateways).map { try! Identifier(String(format: "gw-%05d", $0)) }
    let epochs = ids.map { _ in UUID() }
    let boot = UUID()
    let channels = (0..<10).map { Telemetry.Channel(id: "ch\($0)", peakMicroAmps: 300, rmsMicroAmps: 42.4, impedanceOhms: 5200, complianceVolts: 1.6, contact: true) }
    let start = Date().addingTimeInterval(-3600)
    return (0..<count).map { index in
        let g = index % gateways
        let seq = UInt64(index / gateways + 1)
        let message: Message
        switch seq % 10 {
        case 1:
            message = .event(.sessionStarted(SessionStarted(sessionId: try! Identifier("s\(seq)"), level: 2, profileVersion: "default-1", channels: ["ch0"], regimenPhase: .loading, regimenDay: 3)))
        case 6:
            message = .event(.sessionCompleted(SessionSummary(
                sessionId: try! Identifier("s\(seq - 5)"), durationS: 900, stimulatingS: 880, levelSeconds: ["1": 100, "2": 780, "3": 0],
                pauses: 1, chargeMicroCoulombs: ["ch0": 0], regimenPhase: .loading, regimenDay: 3)))
        default:
            message = .telemetry(Telemetry(
                sessionId: try! Identifier("s1"), level: 2, elapsedS: Double(seq), channels: channels, batteryPct: 77, headbandTempC: 31,
                agent: .init(outboxDepth: 0, outboxBytes: 0, oldestUnackedS: 0, reconnects: 0, rssKiB: 36_000)))
        }
        let envelope = Envelope(
            fleet: fleetID, gateway: ids[g], epoch: epochs[g], seq: seq, boot: boot, monoNanos: seq * 1_000_000_000,
            timestamp: start.addingTimeInterval(Double(seq)), synced: true, message: message)
        let topic: Topic = envelope.kind == .event ? .event(fleet: fleetID, gateway: ids[g]) : .telemetry(fleet: fleetID, gateway: ids[g])
        return OutgoingMessage(topic: topic.path, payload: envelope.encodedBytes())
    }
}

/// Publishes `messages` at QoS 1 with a window in flight; returns when all are acknowledged.
func publishAll(_ messages: [OutgoingMessage], port: Int, window: Int = 2_000) async throws {
    let client = MQTTClient(MQTTConfiguration(port: port, clientID: "ingest-feed-\(getpid())"))
    try await client.connect()
    var iterator = client.acknowledgements.makeAsyncIterator()
    var sent = 0, acknowledged = 0
    while acknowledged < messages.count {
        if sent < messages.count && sent - acknowledged <= window / 2 {
            let batch = min(window - (sent - acknowledged), messages.count - sent)
            try await client.send((0..<batch).map { (messages[sent + $0], UInt64(sent + $0)) })
            sent += batch
            continue
        }
        guard let acks = await iterator.next() else { break }
        acknowledged += acks.count
    }
    await client.disconnect()
}

/// Publishes the benchmark stream (for the `mosquitto_sub` reference).
struct IngestPublish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest-publish", abstract: "Publish the ingest benchmark's stream of envelopes at QoS 1.")
    @Option(help: "Broker port on 127.0.0.1.") var port: Int
    @Option(help: "Envelopes.") var count = 200_000
    @Option(help: "Gateways the envelopes come from.") var gateways = 1_000
    @Option(help: "Fleet.") var fleet = "bench"

    func run() async throws {
        let stream = ingestStream(count: count, gateways: gateways, fleet: fleet)
        let start = monotonicSeconds()
        try await publishAll(stream, port: port)
        report(["bench": "ingest-publish", "messages": count, "seconds": monotonicSeconds() - start])
    }
}

/// The aggregator draining a backlog queued for its persistent session: from its start to the
/// commit of the last envelope.
struct IngestBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest", abstract: "Aggregator ingest rate: a queued backlog drained into the statistics store.")
    @Option(help: "Broker port on 127.0.0.1 (needs max_queued_messages 0).") var port: Int
    @Option(help: "Envelopes.") var count = 200_000
    @Option(help: "Gateways the envelopes come from.") var gateways = 1_000
    @Option(help: "Statistics database: a SQLite file (created) or a postgres:// URL.") var database: String
    @Option(help: "Aggregator instances in one share group, on one PostgreSQL database.") var instances = 1
    @Option(help: "The broker's process id, to report its CPU over the drain as well.") var brokerPid: Int32?
    @Option(help: "The PostgreSQL server's (postmaster's) process id, to report its CPU, backends included.") var databasePid: Int32?

    func run() async throws {
        var logger = Logger(label: "bench.aggregator")
        logger.logLevel = .error
        guard instances == 1 || PostgresDatabase.isURL(database) else {
            throw ValidationError("several instances need a shared database: --database postgres://...")
        }
        let configurations = try (1...max(1, instances)).map { index in
            var configuration = AggregatorConfiguration(
                fleets: [try Identifier("bench")], broker: BrokerConfiguration(host: "127.0.0.1", port: port),
                clientID: "bench-aggregator-\(index)", shareGroup: instances > 1 ? "bench" : "", databasePath: database, httpPort: 0,
                publishIntervalSeconds: 3600)
            if PostgresDatabase.isURL(database) {
                configuration.postgres = try PostgresDatabase(url: database, password: ProcessInfo.processInfo.environment["SPECTRA_DATABASE_PASSWORD"])
            }
            return configuration
        }
        // First start: makes the persistent sessions and their subscriptions, then goes away.
        for configuration in configurations {
            let first = try await AggregatorServer.open(configuration: configuration, logger: logger)
            let firstRun = Task { try await first.run(handleSignals: false) }
            while !first.ingest.isConnected { try await Task.sleep(for: .milliseconds(20)) }
            try await Task.sleep(for: .milliseconds(500))
            await first.shutdown()
            _ = try? await firstRun.value
        }

        let stream = ingestStream(count: count, gateways: gateways, fleet: "bench")
        try await publishAll(stream, port: port)

        let start = monotonicSeconds()
        let cpuStart = processCPUSeconds()
        let brokerCPUStart = brokerPid.flatMap { processCPUSeconds(pid: $0) }
        let databaseCPUStart = databasePid.flatMap { processTreeCPUSeconds(pid: $0) }
        var servers: [AggregatorServer] = []
        for configuration in configurations { servers.append(try await AggregatorServer.open(configuration: configuration, logger: logger)) }
        let runs = servers.map { server in Task { try await server.run(handleSignals: false) } }
        var received = 0
        while received < count {
            try await Task.sleep(for: .milliseconds(20))
            received = servers.map(\.ingest.committedEnvelopes).reduce(0, +)
            if monotonicSeconds() - start > 600 { throw ValidationError("only \(received) of \(count) committed in 600 s") }
        }
        let seconds = monotonicSeconds() - start
        // The aggregators' CPU over the drain (this process's 20 ms polls are noise beside it).
        let cpuSeconds = processCPUSeconds() - cpuStart
        let brokerCPUSeconds = brokerPid.flatMap { pid in brokerCPUStart.flatMap { start in processCPUSeconds(pid: pid).map { $0 - start } } }
        let databaseCPUSeconds = databasePid.flatMap { pid in databaseCPUStart.flatMap { start in processTreeCPUSeconds(pid: pid).map { $0 - start } } }
        for server in servers { await server.shutdown() }
        for run in runs { _ = try? await run.value }
        var fields: [String: Any] = [
            "bench": "ingest", "messages": count, "instances": servers.count, "seconds": seconds, "perSecond": Double(count) / seconds,
            "cpuSeconds": cpuSeconds, "cpuMicrosecondsPerMessage": cpuSeconds / Double(count) * 1e6,
        ]
        if let brokerCPUSeconds {
            fields["brokerCPUSeconds"] = brokerCPUSeconds
            fields["brokerCPUMicrosecondsPerMessage"] = brokerCPUSeconds / Double(count) * 1e6
        }
        if let databaseCPUSeconds {
            fields["databaseCPUSeconds"] = databaseCPUSeconds
            fields["databaseCPUMicrosecondsPerMessage"] = databaseCPUSeconds / Double(count) * 1e6
        }
        report(fields)
    }
}

/// Where ingest time goes: parsing alone, then store writes alone.
struct IngestStages: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ingest-stages", abstract: "Parse and store rates measured apart.")
    @Option var count = 100_000
    @Option(help: "Passes over the stream for each parse stage; the fastest is reported.") var passes = 5
    @Option var database: String

    func run() async throws {
        let stream = ingestStream(count: count, gateways: 1_000, fleet: "bench")
        // The parse stages are timed over `passes` passes and the fastest kept: a small VM's
        // neighbours slow single passes by up to 2x.
        func fastest(_ body: () throws -> Void) rethrows -> Double {
            var best = Double.infinity
            for _ in 0..<passes {
                let start = monotonicSeconds()
                try body()
                best = min(best, monotonicSeconds() - start)
            }
            return best
        }
        var records: [IngestRecord] = []
        records.reserveCapacity(count)
        let parse = try fastest {
            records.removeAll(keepingCapacity: true)
            for message in stream {
                records.append(try IngestRecord.parse(MQTTMessage(topic: message.topic, payload: message.payload, qos: .atLeastOnce, retain: false)))
            }
        }
        // The store once: a second pass would only find duplicates.
        let store = try SQLiteStatsStore(path: database)
        let start = monotonicSeconds()
        var index = 0
        while index < records.count {
            let end = min(index + 5_000, records.count)
            _ = try await store.apply(Array(records[index..<end]))
            index = end
        }
        let write = monotonicSeconds() - start

        // Telemetry alone, through the reference decoder and through ingest's fast path.
        let telemetry = stream.filter { $0.topic.hasSuffix("/telemetry") }.map { Data($0.payload) }
        let reference = try fastest { for data in telemetry { _ = try Envelope.decodeSkippingChannels(data) } }
        let fast = try fastest { for data in telemetry { _ = try Envelope.decodeForIngest(data) } }
        report([
            "parsePerSecond": Double(count) / parse, "storePerSecond": Double(count) / write,
            "telemetryReferencePerSecond": Double(telemetry.count) / reference, "telemetryFastPathPerSecond": Double(telemetry.count) / fast,
        ])
    }
}
