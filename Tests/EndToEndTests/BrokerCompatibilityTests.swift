import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The binaries against other broker implementations and MQTT 3.1.1: amqtt (a 3.1.1 broker),
/// mosquitto under 3.1.1, and mqttools (an MQTT 5 broker with QoS 0 only and no wildcard or
/// shared subscriptions).
@Suite("Other brokers and MQTT 3.1.1")
struct BrokerCompatibilityTests {
    /// A real aggregator on a free port, on broker `url`, with its database in `folder`.
    struct Aggregator {
        let process: ChildProcess
        let base: String
        let config: String
        /// An operator's API token for its database.
        let token: String

        init(url: String, folder: URL, clientID: String = "agg-\(UUID().uuidString.prefix(8))", settings: [String] = []) async throws {
            let httpPort = try TestEnvironment.freePort()
            base = "http://127.0.0.1:\(httpPort)"
            config = folder.appendingPathComponent("\(clientID).yaml").path
            try """
                mqtt:
                  url: \(url)
                clientId: \(clientID)
                database: \(folder.path)/\(clientID).sqlite
                http:
                  port: \(httpPort)
                stats:
                  publishIntervalS: 1

                """.write(toFile: config, atomically: true, encoding: .utf8)
            let database = settings.last { $0.hasPrefix("database=") }.map { String($0.dropFirst("database=".count)) }
                ?? "\(folder.path)/\(clientID).sqlite"
            token = try await AggregatorAccess.token(database: database)
            process = try ChildProcess(
                TestEnvironment.product("spectra-aggregator"), ["run", "--config", config] + settings.flatMap { ["--set", $0] })
        }

        func get(_ path: String) async -> [String: Any]? {
            guard let (data, _) = try? await AggregatorAccess.get(base + path, token: token) else { return nil }
            return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
        }

        func connected() async -> Bool {
            await eventually(timeout: 30) { await get("/healthz")?["broker"] as? String == "connected" }
        }

        /// Envelopes the aggregator has received for fleet `demo`.
        func received() async -> Int? {
            ((await get("/api/v1/fleet/summary?fleet=demo"))?["completeness"] as? [String: Any])?["received"] as? Int
        }

        func stop() async -> Int32? {
            process.send(SIGTERM)
            return await process.wait(timeout: 20)
        }
    }

    /// The simulator's `done:` figures: sessions started, completed, aborted, messages made, delivered.
    static func done(_ stdout: String) -> [Int]? {
        guard let line = stdout.split(separator: "\n").last(where: { $0.hasPrefix("done:") }) else { return nil }
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        return numbers.count == 5 ? numbers : nil
    }

    static func simulate(url: String, folder: URL, _ arguments: [String]) async throws -> (status: Int32?, stdout: String, stderr: String) {
        try await ChildProcess.run(
            TestEnvironment.product("spectra-fleetsim"),
            arguments + [
                "--speed", "43200", "--broker", url, "--data-dir", "\(folder.path)/fleet-\(UUID().uuidString.prefix(6))",
                "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml", "--idle-telemetry-interval", "0.5",
            ], timeout: 240)
    }

    enum Broker: String, CaseIterable, CustomTestStringConvertible {
        case amqtt
        case mosquitto
        var testDescription: String { rawValue }
    }

    @Test("a simulated fleet and the aggregator speak MQTT 3.1.1: every message delivered and counted once", arguments: Broker.allCases)
    func fleetOverMQTT311(_ kind: Broker) async throws {
        let folder = try TestEnvironment.temporaryDirectory("mqtt311-\(kind)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let mosquitto = kind == .mosquitto ? try await MosquittoBroker() : nil
        let amqtt = kind == .amqtt ? try await PythonBroker(.amqtt) : nil
        let url = mosquitto?.url ?? amqtt?.url ?? ""
        let aggregator = try await Aggregator(url: url, folder: folder, settings: ["mqtt.protocol=3.1.1"])
        #expect(await aggregator.connected(), "\(aggregator.process.standardError.suffix(2000))")

        let sim = try await Self.simulate(
            url: url, folder: folder, ["--gateways", "4", "--days", "3", "--seed", "11", "--set", "mqtt.protocol=3.1.1"])
        #expect(sim.status == 0, "\(sim.stderr.suffix(1000))")
        #expect(sim.stdout.contains("(MQTT 3.1.1)"), "\(sim.stdout.prefix(300))")
        let figures = try #require(Self.done(sim.stdout), "\(sim.stdout.suffix(500))")
        let (started, messages) = (figures[0], figures[3])
        #expect(figures[4] == messages, "every message delivered: \(figures)")
        #expect(started > 0)

        let settled = await eventually(timeout: 30) { await aggregator.received() == messages }
        let summary = await aggregator.get("/api/v1/fleet/summary?fleet=demo")
        #expect(settled, "\(String(describing: summary?["completeness"])) of \(messages)")
        #expect((summary?["sessions"] as? [String: Any])?["started"] as? Int == started)
        #expect(summary?["gateways"] as? Int == 4)
        #expect(await aggregator.stop() == 0)
        await mosquitto?.stop()
        await amqtt?.stop()
    }

    @Test("over MQTT 3.1.1 (amqtt) the agent's replayed backlog carries the historical mark in the envelope")
    func historicalUnder311() async throws {
        let broker = try await PythonBroker(.amqtt)
        let folder = try TestEnvironment.temporaryDirectory("agent-311")
        defer { try? FileManager.default.removeItem(at: folder) }
        let config = try writeAgentConfig(
            in: folder, broker: broker.url, mqtt: ["protocol: 3.1.1", "keepaliveS: 5"], telemetry: (0.5, 60), timeScale: 300)
        let witness = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "witness", protocolVersion: .v311))
        let received = Collector(witness.messages)
        try await witness.connect()
        try await witness.subscribe([Subscription("spectra/v1/demo/gw/gw-0001/event")])
        let first = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { first.send(SIGKILL) }
        var agent = first
        func control(_ arguments: [String]) async throws -> String {
            try await ChildProcess.run(TestEnvironment.product("spectra-agent"), arguments + ["--config", config]).stdout
        }
        #expect(await eventually(timeout: 30) { (try? await control(["status"]))?.contains("link: up") == true }, "\(agent.standardError)")
        func events() -> [(type: String, historical: Bool, marked: Bool)] {
            received.elements.compactMap { message in
                guard let envelope = try? Envelope.decode(Data(message.payload)), case .event(let event) = envelope.message else { return nil }
                return (event.type.rawValue, envelope.historical, String(decoding: message.payload, as: UTF8.self).contains("\"historical\":true"))
            }
        }

        // Live: no mark.
        _ = try await control(["session", "start", "--level", "1"])
        #expect(await eventually(timeout: 30) { events().contains { $0.type == "session.completed" } }, "\(events())")
        #expect(events().allSatisfy { !$0.historical }, "\(events())")

        // Queued while the broker is down, delivered when it is back: marked historical. (The
        // agent is restarted once the witness is back: amqtt keeps no session across its
        // restart, so the witness must subscribe again before the backlog goes out.)
        await broker.stop()
        #expect(await eventually(timeout: 20) { (try? await control(["status"]))?.contains("link: down") == true })
        let before = events().count
        _ = try await control(["session", "start", "--level", "1"])
        try await Task.sleep(for: .seconds(5))  // the session (15 min at 300x) runs its course offline
        first.send(SIGTERM)
        #expect(await first.wait(timeout: 20) == 0)
        try await broker.start()
        #expect(await eventually(timeout: 60) { witness.isConnected })
        try await witness.subscribe([Subscription("spectra/v1/demo/gw/gw-0001/event")])
        agent = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { agent.send(SIGKILL) }
        // (The offline session may have ended, or been cut short by the agent's stop.)
        let replayed = await eventually(timeout: 60) {
            let types = events().dropFirst(before).map(\.type)
            return types.contains("session.started") && (types.contains("session.completed") || types.contains("session.aborted"))
        }
        let late = Array(events().dropFirst(before))
        #expect(replayed, "\(late) \(agent.standardError.suffix(1500))")
        #expect(!late.isEmpty && late.allSatisfy { $0.historical && $0.marked }, "\(late)")

        // spectra-ctl too: MQTT 3.1.1 from the environment reaches the agent; MQTT 5 is refused by
        // this broker, and says so.
        let stop = ["stop", "--fleet", "demo", "--gateway", "gw-0001", "--broker", broker.url, "--reason", "compatibility"]
        let old = try await ChildProcess.run(TestEnvironment.product("spectra-ctl"), stop, environment: ["SPECTRA_MQTT_PROTOCOL": "3.1.1"])
        #expect(old.status == 0, "\(old.stderr)")
        #expect(await eventually(timeout: 15) { agent.standardError.contains("remote stop") }, "\(agent.standardError.suffix(1000))")
        let five = try await ChildProcess.run(TestEnvironment.product("spectra-ctl"), stop, environment: ["SPECTRA_MQTT_KEEPALIVE_S": "5"], timeout: 60)
        #expect(five.status != 0 && five.stderr.contains("mqtt.protocol: 3.1.1"), "\(five)")
        agent.send(SIGTERM)
        #expect(await agent.wait(timeout: 15) == 0)
        await witness.disconnect()
        await broker.stop()
    }

    @Test("a broker without wildcard or shared subscriptions and with QoS 0 only (mqttools): the aggregator stops with one clear error, the agent says why it cannot send")
    func brokerThatLacksFeatures() async throws {
        let broker = try await PythonBroker(.mqttools)
        let folder = try TestEnvironment.temporaryDirectory("mqttools")
        defer { try? FileManager.default.removeItem(at: folder) }

        let aggregator = try await Aggregator(url: broker.url, folder: folder, settings: ["shareGroup=aggregators"])
        let status = await aggregator.process.wait(timeout: 30)
        let log = aggregator.process.standardError
        #expect(status == 1, "\(log.suffix(2000))")
        #expect(log.contains("does not take shared subscriptions") && log.contains("shareGroup 'aggregators' is ignored"), "\(log.suffix(2000))")
        let last = log.split(separator: "\n").last.map(String.init) ?? ""
        #expect(last.hasPrefix("spectra-aggregator: ") && last.contains("does not take wildcard subscriptions"), "\(last)")

        let config = try writeAgentConfig(in: folder, broker: broker.url, telemetry: (1, 1))
        let agent = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { agent.send(SIGKILL) }
        var text = ""
        let said = await eventually(timeout: 30) {
            text = (try? await ChildProcess.run(TestEnvironment.product("spectra-agent"), ["status", "--config", config]).stdout) ?? ""
            return text.contains("outboxSendError:")
        }
        #expect(said, "\(text)\n\(agent.standardError.suffix(1500))")
        #expect(text.contains("brokerLacks:") && text.contains("QoS above 0"), "\(text)")
        #expect(text.contains("does not take this QoS"), "\(text)")
        try await Task.sleep(for: .seconds(3))
        let lines = agent.standardError.split(separator: "\n").filter { $0.contains("the outbox cannot send to the broker") }
        #expect(lines.count == 1, "said once, not at every telemetry: \(lines)")
        agent.send(SIGTERM)
        #expect(await agent.wait(timeout: 20) == 0)
        await broker.stop()
    }
}
