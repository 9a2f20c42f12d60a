import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Synchronization
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The real `spectra-agent` and `spectra-aggregator` binaries against a real mosquitto.
@Suite("spectra-aggregator run")
struct AggregatorEndToEndTests {
    static func get(_ url: String, token: String) async throws -> [String: Any] {
        let (data, _) = try await AggregatorAccess.get(url, token: token)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    @Test("a session run on a real agent shows up in the aggregator's API; SIGTERM stops it cleanly")
    func agentToAggregator() async throws {
        let harness = try await AgentTests.Harness()
        let httpPort = try TestEnvironment.freePort()
        let database = harness.folder.appendingPathComponent("aggregator.sqlite").path
        let token = try await AggregatorAccess.token(database: database)
        let aggregator = try ChildProcess(
            TestEnvironment.product("spectra-aggregator"),
            [
                "run", "--config", "\(TestEnvironment.packageRoot.path)/Config/aggregator.yaml",
                "--set", "mqtt.url=mqtt://127.0.0.1:\(harness.broker.port)", "--set", "http.port=\(httpPort)",
                "--set", "database=\(database)", "--set", "clientId=agg-e2e", "--set", "stats.publishIntervalS=1",
            ])
        let base = "http://127.0.0.1:\(httpPort)"
        #expect(await eventually(timeout: 20) { ((try? await Self.get(base + "/healthz", token: token))?["broker"] as? String) == "connected" },
                "aggregator did not come up: \(aggregator.standardError)")

        try await harness.startAgent()
        let ctl = TestEnvironment.product("spectra-ctl")
        let watcher = try ChildProcess(
            ctl, ["watch", "--broker", "mqtt://127.0.0.1:\(harness.broker.port)", "--fleet", "demo", "--type", "session.completed", "--count", "1"])
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        #expect(await eventually(timeout: 20) { harness.eventTypes().contains("session.completed") })

        let settled = await eventually(timeout: 15) {
            let summary = try? await Self.get(base + "/api/v1/fleet/summary?fleet=demo", token: token)
            return ((summary?["sessions"] as? [String: Any])?["completed"] as? Int) == 1 && (summary?["online"] as? Int) == 1
        }
        #expect(settled, "the aggregator counts the agent's completed session and sees it online")
        let summary = try await Self.get(base + "/api/v1/fleet/summary?fleet=demo", token: token)
        #expect(((summary["completeness"] as? [String: Any])?["ratio"] as? Double) == 1, "every seq arrived")
        let gateway = try await Self.get(base + "/api/v1/gateways/gw-0001", token: token)
        #expect(((gateway["gateway"] as? [String: Any])?["firmware"] as? String) != nil, "the retained state's firmware is known")
        let sessions = (gateway["recentSessions"] as? [[String: Any]]) ?? []
        #expect(sessions.count == 1)
        #expect(sessions.first?["outcome"] as? String == "completed")
        #expect(sessions.first?["regimenDay"] as? Int == 1)

        // The operator's view of the same figures.
        #expect(await watcher.wait(timeout: 10) == 0, "watch exits after one session.completed")
        #expect(watcher.lines.contains { $0.contains("gw-0001") && $0.contains("session.completed") }, "\(watcher.lines)")
        // spectra-ctl reads its token from the environment; without one it says how to give it.
        let anonymous = try await ChildProcess.run(ctl, ["gateways", "--aggregator", base])
        #expect(anonymous.status != 0 && anonymous.stderr.contains("401") && anonymous.stderr.contains("SPECTRA_AGGREGATOR_TOKEN"), "\(anonymous.stderr)")
        let withToken = ["SPECTRA_AGGREGATOR_TOKEN": token]
        let gateways = try await ChildProcess.run(ctl, ["gateways", "--aggregator", base], environment: withToken)
        #expect(gateways.status == 0, "\(gateways.stderr)")
        #expect(gateways.stdout.contains("GATEWAY") && gateways.stdout.contains("gw-0001"), "\(gateways.stdout)")
        let sessionsJSON = try await ChildProcess.run(ctl, ["sessions", "gw-0001", "--aggregator", base, "--json"], environment: withToken)
        let parsed = try JSONSerialization.jsonObject(with: Data(sessionsJSON.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.first?["outcome"] as? String == "completed")
        let stats = try await ChildProcess.run(ctl, ["stats", "--aggregator", base, "--fleet", "demo"], environment: withToken)
        #expect(stats.stdout.contains("completed 1"), "\(stats.stdout)")
        let missing = try await ChildProcess.run(ctl, ["sessions", "gw-9999", "--aggregator", base], environment: withToken)
        #expect(missing.status != 0 && missing.stderr.contains("404"), "\(missing.stderr)")

        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
        // The agent's clean offline status reaches the aggregator.
        #expect(await eventually(timeout: 10) { ((try? await Self.get(base + "/api/v1/fleet/summary?fleet=demo", token: token))?["online"] as? Int) == 0 })
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0, "aggregator exits 0 on SIGTERM: \(aggregator.standardError.suffix(500))")
    }

    @Test("an aggregator SIGKILLed in the middle of a backlog loses nothing and counts nothing twice once restarted")
    func killedDuringIngest() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("aggregator-kill")
        defer { try? FileManager.default.removeItem(at: folder) }
        let instance = try await AggregatorInstance(broker: broker, folder: folder, clientID: "agg-kill", statsIntervalS: 3600)
        func startAggregator() throws -> ChildProcess { try instance.start() }
        func summary() async -> (received: Int, expected: Int, completed: Int)? { await instance.summary() }
        func connected() async -> Bool { await instance.connected() }

        // First run: the persistent session and its subscriptions; then the aggregator is away.
        var aggregator = try startAggregator()
        #expect(await eventually(timeout: 20) { await connected() }, "aggregator did not come up: \(aggregator.standardError)")
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0)

        // The backlog: 40 gateways, 250 sessions each as started/completed pairs, 20,000 envelopes.
        let gateways = 40, sessionsPerGateway = 250
        let start = Date().addingTimeInterval(-3_600)
        var backlog: [OutgoingMessage] = []
        for index in 1...gateways {
            let gateway = try Identifier(String(format: "gw-%04d", index))
            let (fleet, epoch, boot) = (try Identifier("demo"), UUID(), UUID())
            var seq: UInt64 = 0
            func envelope(_ message: Message, at time: Date) -> OutgoingMessage {
                seq += 1
                let envelope = Envelope(
                    fleet: fleet, gateway: gateway, epoch: epoch, seq: seq, boot: boot, monoNanos: seq * 1_000_000,
                    timestamp: time, synced: true, message: message)
                return OutgoingMessage(topic: Topic.event(fleet: fleet, gateway: gateway).path, payload: [UInt8](envelope.encoded()))
            }
            for number in 0..<sessionsPerGateway {
                let id = try Identifier("s-\(index)-\(number)")
                let at = start.addingTimeInterval(Double(number))
                backlog.append(envelope(.event(.sessionStarted(SessionStarted(
                    sessionId: id, level: 1, profileVersion: "default-1", channels: ["frontalis-l"], regimenPhase: .loading, regimenDay: 1))), at: at))
                backlog.append(envelope(.event(.sessionCompleted(SessionSummary(
                    sessionId: id, durationS: 900, stimulatingS: 900, levelSeconds: ["1": 900, "2": 0, "3": 0], pauses: 0,
                    chargeMicroCoulombs: ["frontalis-l": 0], reason: nil, regimenPhase: .loading, regimenDay: 1))), at: at))
            }
        }
        let publisher = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "backlog"))
        try await publisher.connect()
        var acknowledgements = publisher.acknowledgements.makeAsyncIterator()
        for chunk in stride(from: 0, to: backlog.count, by: 1_000) {
            let part = backlog[chunk..<min(chunk + 1_000, backlog.count)]
            try await publisher.send(part.enumerated().map { ($0.element, UInt64(chunk + $0.offset)) })
            var acknowledged = 0
            while acknowledged < part.count, let acks = await acknowledgements.next() { acknowledged += acks.count }
        }
        await publisher.disconnect()

        // Second run: killed once part of the backlog is committed.
        aggregator = try startAggregator()
        var atKill = 0
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(60) {
            if let now = await summary(), now.received >= backlog.count / 5 {
                atKill = now.received
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        aggregator.send(SIGKILL)
        _ = await aggregator.wait(timeout: 10)
        #expect(atKill > 0 && atKill < backlog.count, "killed in the middle of the backlog (\(atKill) of \(backlog.count) committed)")

        // Third run: the broker sends again everything not acknowledged, i.e. not committed.
        aggregator = try startAggregator()
        let complete = await eventually(timeout: 90) { await summary()?.received == backlog.count }
        #expect(complete, "every envelope arrives")
        try await Task.sleep(for: .seconds(1))
        let final = await summary()
        #expect(final?.received == backlog.count && final?.expected == backlog.count, "no loss: \(String(describing: final))")
        #expect(final?.completed == gateways * sessionsPerGateway, "each session counted once: \(String(describing: final))")
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0)
    }
}

extension AggregatorEndToEndTests {
    @Test("an aggregator its broker refuses says why once in its log, on /healthz (503, the reason, since when) and on /metrics")
    func refusedByBroker() async throws {
        let broker = try await MosquittoBroker(extraConfig: "allow_anonymous false\n")
        let folder = try TestEnvironment.temporaryDirectory("aggregator-refused")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await BrokerCompatibilityTests.Aggregator(url: broker.url, folder: folder)
        var health: [String: Any]?
        let reported = await eventually(timeout: 20) {
            health = await aggregator.get("/healthz")
            return (health?["brokerLastError"] as? String)?.contains("not authori") == true
        }
        #expect(reported, "\(String(describing: health))")
        #expect(health?["status"] as? String == "unhealthy" && health?["broker"] as? String == "disconnected")
        #expect((health?["reasons"] as? [String])?.contains { $0.contains("not authori") } == true, "\(String(describing: health))")
        #expect(health?["brokerSince"] is String)
        try await Task.sleep(for: .seconds(3))  // several retries, one cause
        let said = aggregator.process.standardError.split(separator: "\n").filter { $0.contains("cannot connect to the broker") }
        #expect(said.count == 1, "\(said)")
        let (data, _) = try await AggregatorAccess.get(aggregator.base + "/metrics", token: aggregator.token)
        let metrics = String(decoding: data, as: UTF8.self)
        #expect(metrics.contains("spectra_aggregator_broker_connected 0"), "\(metrics.prefix(2000))")
        let age = metrics.split(separator: "\n").first { $0.hasPrefix("spectra_aggregator_broker_state_age_seconds ") }
        #expect(age.flatMap { Double($0.split(separator: " ").last ?? "") }.map { $0 >= 3 } == true, "\(String(describing: age))")
        #expect(await aggregator.stop() == 0)
        await broker.stop()
    }
}

extension AggregatorEndToEndTests {
    @Test("a gateway whose connection dies is offline since the loss, not since its agent started (the Will's ts is the start)")
    func offlineSinceTheLoss() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("aggregator-will")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await BrokerCompatibilityTests.Aggregator(url: broker.url, folder: folder)
        #expect(await aggregator.connected())
        let config = try writeAgentConfig(in: folder, broker: broker.url, mqtt: ["keepaliveS: 5"])
        let agent = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { agent.send(SIGKILL) }
        func gateway() async -> [String: Any]? { await aggregator.get("/api/v1/gateways/gw-0001")?["gateway"] as? [String: Any] }
        #expect(await eventually(timeout: 20) { await gateway()?["online"] as? Bool == true })
        try await Task.sleep(for: .seconds(6))
        let killedAt = Date()
        agent.send(SIGKILL)
        var last: [String: Any]?
        let offline = await eventually(timeout: 30) {
            last = await gateway()
            return last?["online"] as? Bool == false
        }
        #expect(offline, "\(String(describing: last))")
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let since = (last?["statusSince"] as? String).flatMap { format.date(from: $0) }
        #expect(since.map { $0 >= killedAt.addingTimeInterval(-1) } == true, "offline since \(String(describing: last?["statusSince"])), killed at \(killedAt)")
        #expect(await aggregator.stop() == 0)
        await broker.stop()
    }
}

extension AggregatorEndToEndTests {
    @Test("the HTTP server answers only to its own host names (DNS rebinding), and every answer carries the browser hardening headers; the dashboard's CSP allows its own script only")
    func browserHardening() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("aggregator-headers")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await BrokerCompatibilityTests.Aggregator(url: broker.url, folder: folder)
        #expect(await aggregator.connected())
        let port = try #require(URL(string: aggregator.base)?.port)
        // A raw request, so the Host header is ours to choose.
        func get(_ path: String, host: String) async throws -> (status: Int, headers: [String: String], body: String) {
            let script = """
                import http.client, json, sys
                c = http.client.HTTPConnection("127.0.0.1", \(port), timeout=10)
                c.putrequest("GET", sys.argv[1], skip_host=True); c.putheader("Host", sys.argv[2])
                c.putheader("Authorization", "Bearer " + sys.argv[3]); c.endheaders()
                r = c.getresponse()
                print(json.dumps({"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()}, "body": r.read().decode()}))
                """
            let run = try await ChildProcess.run("/usr/bin/env", ["python3", "-c", script, path, host, aggregator.token])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stderr)")
            return (object["status"] as? Int ?? 0, object["headers"] as? [String: String] ?? [:], object["body"] as? String ?? "")
        }
        let rebinding = try await get("/api/v1/gateways", host: "attacker.example:\(port)")
        #expect(rebinding.status == 421 && rebinding.body.contains("http.allowedHosts"), "\(rebinding)")
        let page = try await get("/", host: "127.0.0.1:\(port)")
        #expect(page.status == 200)
        let csp = page.headers["content-security-policy"] ?? ""
        #expect(csp.contains("script-src 'sha256-") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "\(csp)")
        #expect(page.headers["x-frame-options"] == "DENY" && page.headers["referrer-policy"] == "no-referrer")
        #expect(page.headers["x-content-type-options"] == "nosniff")
        let personal = try await get("/api/v1/gateways", host: "localhost:\(port)")
        #expect(personal.status == 200 && personal.headers["cache-control"] == "no-store", "\(personal.headers)")
        #expect(await aggregator.stop() == 0)
        await broker.stop()
    }
}

extension AggregatorEndToEndTests {
    @Test("SIGTERM under load: every message the broker acknowledged to a producer is counted once, across the stop and the restart")
    func gracefulStopUnderLoad() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("aggregator-term")
        defer { try? FileManager.default.removeItem(at: folder) }
        let instance = try await AggregatorInstance(broker: broker, folder: folder, clientID: "agg-term", statsIntervalS: 1)
        func startAggregator() throws -> ChildProcess { try instance.start() }
        func completeness() async -> (received: Int, expected: Int)? { await instance.summary().map { ($0.received, $0.expected) } }
        func connected() async -> Bool { await instance.connected() }
        var aggregator = try startAggregator()
        #expect(await eventually(timeout: 20) { await connected() }, "aggregator did not come up: \(aggregator.standardError)")

        // 20 gateways' session events, 100 every 50 ms, QoS 1, counted when the broker acknowledges.
        let rounds = 200
        let producing = ProducerRunning()
        let producer = Task { () throws -> Int in
            defer { producing.value.store(false, ordering: .relaxed) }
            let client = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "load"))
            try await client.connect()
            defer { Task { await client.disconnect() } }
            var acknowledgements = client.acknowledgements.makeAsyncIterator()
            let fleet = try Identifier("demo")
            var feeds = try (1...20).map { (gateway: try Identifier(String(format: "gw-%04d", $0)), epoch: UUID(), seq: UInt64(0)) }
            var accepted = 0, token: UInt64 = 0
            for round in 0..<rounds {
                var batch: [(message: OutgoingMessage, token: UInt64)] = []
                for index in 0..<100 {
                    let feed = (round * 100 + index) % feeds.count
                    feeds[feed].seq += 1
                    let id = try Identifier("s-\(feed)-\(feeds[feed].seq)")
                    let envelope = Envelope(
                        fleet: fleet, gateway: feeds[feed].gateway, epoch: feeds[feed].epoch, seq: feeds[feed].seq, boot: feeds[feed].epoch,
                        monoNanos: feeds[feed].seq * 1_000_000, timestamp: Date(), synced: true,
                        message: .event(.sessionStarted(SessionStarted(
                            sessionId: id, level: 1, profileVersion: "default-1", channels: ["frontalis-l"], regimenPhase: .loading, regimenDay: 1))))
                    token += 1
                    batch.append((OutgoingMessage(topic: Topic.event(fleet: fleet, gateway: feeds[feed].gateway).path, payload: [UInt8](envelope.encoded())), token))
                }
                try await client.send(batch)
                var acknowledged = 0
                while acknowledged < batch.count, let acks = await acknowledgements.next() {
                    acknowledged += acks.count
                    accepted += acks.count { $0.isSuccess }
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            return accepted
        }

        // Stopped in the middle of the load, and started again while it goes on. (90 s: with the
        // whole suite on 2 cores the producer, in this process, has sent under 1,000 in 30 s.)
        #expect(await eventually(timeout: 90) { (await completeness()?.received ?? 0) >= 1_000 })
        let before = await completeness()?.received ?? 0
        let stillProducing = producing.value.load(ordering: .relaxed)
        #expect(stillProducing, "the load still runs when the stop comes")
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 20) == 0, "a graceful stop under load: \(aggregator.standardError.suffix(2000))")
        #expect(aggregator.standardError.contains("aggregator ingest stopped"))
        #expect(before > 0, "the load was being ingested when the stop came")
        aggregator = try startAggregator()
        defer { aggregator.send(SIGKILL) }
        let accepted = try await producer.value
        #expect(accepted == rounds * 100, "the broker acknowledged every message to the producer")
        let done = await eventually(timeout: 60) { await completeness()?.received == accepted }
        let final = await completeness()
        #expect(done && final?.expected == accepted, "every acknowledged message once, no gap: \(String(describing: final)) of \(accepted)")
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 20) == 0)
        await broker.stop()
    }
}

/// Whether the load of ``AggregatorEndToEndTests/gracefulStopUnderLoad()`` still runs.
private final class ProducerRunning: Sendable {
    let value = Atomic<Bool>(true)
}

/// One aggregator's configuration for tests that stop and start it: the same database, client
/// id and HTTP port every time, so each start resumes the one before.
struct AggregatorInstance {
    let broker: MosquittoBroker
    let folder: URL
    let clientID: String
    let statsIntervalS: Int
    let httpPort: Int
    let token: String

    init(broker: MosquittoBroker, folder: URL, clientID: String, statsIntervalS: Int) async throws {
        self.broker = broker
        self.folder = folder
        self.clientID = clientID
        self.statsIntervalS = statsIntervalS
        httpPort = try TestEnvironment.freePort()
        token = try await AggregatorAccess.token(database: "\(folder.path)/aggregator.sqlite")
    }

    func start() throws -> ChildProcess {
        try ChildProcess(
            TestEnvironment.product("spectra-aggregator"),
            [
                "run", "--config", "\(TestEnvironment.packageRoot.path)/Config/aggregator.yaml",
                "--set", "mqtt.url=mqtt://127.0.0.1:\(broker.port)", "--set", "http.port=\(httpPort)",
                "--set", "database=\(folder.path)/aggregator.sqlite", "--set", "clientId=\(clientID)",
                "--set", "stats.publishIntervalS=\(statsIntervalS)",
            ])
    }

    /// The demo fleet's completeness and completed sessions; nil while the aggregator does not answer.
    func summary() async -> (received: Int, expected: Int, completed: Int)? {
        guard let summary = try? await AggregatorEndToEndTests.get("http://127.0.0.1:\(httpPort)/api/v1/fleet/summary?fleet=demo", token: token)
        else { return nil }
        let completeness = summary["completeness"] as? [String: Any]
        return (completeness?["received"] as? Int ?? 0, completeness?["expected"] as? Int ?? 0,
                (summary["sessions"] as? [String: Any])?["completed"] as? Int ?? 0)
    }

    func connected() async -> Bool {
        ((try? await AggregatorEndToEndTests.get("http://127.0.0.1:\(httpPort)/healthz", token: token))?["broker"] as? String) == "connected"
    }
}
