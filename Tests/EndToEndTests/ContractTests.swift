import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The code against `docs/contracts/asyncapi.yaml` and `openapi.yaml`: the golden fixtures, the
/// live traffic of an agent session through a real broker, and the aggregator's answers. A
/// change to the wire format or the API that the documents do not describe fails here.
@Suite("Contracts: the AsyncAPI and OpenAPI documents against the code")
struct ContractTests {
    /// Runs `Deploy/contracts/validate.py MODE` over `records` (one JSON object per line).
    static func validate(_ mode: String, _ records: [[String: Any]] = []) async throws -> (status: Int32?, output: String) {
        let file = try TestEnvironment.temporaryDirectory("contracts").appendingPathComponent("records.jsonl")
        defer { try? FileManager.default.removeItem(at: file.deletingLastPathComponent()) }
        let lines = try records.map { String(decoding: try JSONSerialization.data(withJSONObject: $0), as: UTF8.self) }
        try (lines.joined(separator: "\n") + "\n").write(to: file, atomically: true, encoding: .utf8)
        let python = PythonBroker.environment.appendingPathComponent("bin/python").path
        let script = TestEnvironment.packageRoot.appendingPathComponent("Deploy/contracts/validate.py").path
        let run = try await ChildProcess.run(python, mode == "documents" ? [script, mode] : [script, mode, file.path])
        return (run.status, run.stdout + run.stderr)
    }

    /// Each golden fixture as the validator takes it: the topic it travels on, or the schema of
    /// a signed document's payload.
    static func fixtureRecords() throws -> [[String: Any]] {
        let folder = TestEnvironment.packageRoot.appendingPathComponent("Tests/SpectraProtocolTests/Fixtures")
        let base = "spectra/v1/demo/gw/gw-0001/"
        return try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted().map { name in
            let payload = try String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            switch name {
            case _ where name.hasPrefix("event-"): return ["topic": base + "event", "payload": payload]
            case _ where name.hasPrefix("document-"): return ["schema": "DocumentPayload", "payload": payload]
            case "stop.json": return ["topic": base + "cmd/stop", "payload": payload]
            default: return ["topic": base + name.replacingOccurrences(of: ".json", with: ""), "payload": payload]
            }
        }
    }

    @Test("the documents are well-formed and every golden fixture matches them; a fixture broken on purpose is caught, naming the field")
    func fixtures() async throws {
        let documents = try await Self.validate("documents")
        #expect(documents.status == 0, "\(documents.output)")
        let records = try Self.fixtureRecords()
        #expect(records.count >= 19)
        let good = try await Self.validate("messages", records)
        #expect(good.status == 0, "\(good.output)")
        #expect(good.output.contains("\(records.count) checked, 0 disagreement"), "\(good.output)")

        // Out of range, an undescribed field, a wrong type: each is one disagreement.
        func broken(containing text: String, _ change: (inout [String: Any]) -> Void) throws -> [String: Any] {
            var record = try #require(records.first { ($0["payload"] as? String)?.contains(text) == true })
            var object = try #require(try JSONSerialization.jsonObject(with: Data((record["payload"] as? String ?? "").utf8)) as? [String: Any])
            change(&object)
            record["payload"] = String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
            return record
        }
        let bad = try await Self.validate("messages", [
            try broken(containing: "\"type\":\"session.started\"") { object in
                var body = object["body"] as? [String: Any] ?? [:]
                body["level"] = 4
                object["body"] = body
            },
            try broken(containing: "\"kind\":\"telemetry\"") { object in object["undescribed"] = 1 },
            try broken(containing: "\"online\":true") { object in object["online"] = "yes" },
        ])
        #expect(bad.status == 1, "\(bad.output)")
        #expect(bad.output.contains("body/level: 4 is greater than the maximum of 3"), "\(bad.output)")
        #expect(bad.output.contains("'undescribed' was unexpected"), "\(bad.output)")
        #expect(bad.output.contains("online: 'yes' is not of type 'boolean'"), "\(bad.output)")
    }

    @Test("everything an agent session, a signed config push, a stop and the aggregator put on a real broker matches the AsyncAPI document; every API answer matches the OpenAPI document")
    func liveTraffic() async throws {
        let keys = try TestEnvironment.temporaryDirectory("contract-keys")
        defer { try? FileManager.default.removeItem(at: keys) }
        let ctl = TestEnvironment.product("spectra-ctl")
        let generated = try await ChildProcess.run(ctl, ["keys", "generate", "--out", keys.path])
        #expect(generated.status == 0, "\(generated.stderr)")
        let harness = try await AgentTests.Harness(extra: "trust:\n  keys: [\(keys.path)/signing.pub]\n")
        let httpPort = try TestEnvironment.freePort()
        let database = harness.folder.appendingPathComponent("aggregator.sqlite").path
        let token = try await AggregatorAccess.token(database: database)
        let viewer = try await AggregatorAccess.token(database: database, role: "viewer")
        let aggregator = try ChildProcess(
            TestEnvironment.product("spectra-aggregator"),
            [
                "run", "--config", "\(TestEnvironment.packageRoot.path)/Config/aggregator.yaml",
                "--set", "mqtt.url=mqtt://127.0.0.1:\(harness.broker.port)", "--set", "http.port=\(httpPort)",
                "--set", "database=\(database)", "--set", "clientId=agg-contract", "--set", "stats.publishIntervalS=1",
            ])
        defer { aggregator.send(SIGKILL) }
        let base = "http://127.0.0.1:\(httpPort)"
        #expect(await eventually(timeout: 20) { (try? await AggregatorAccess.get(base + "/healthz", token: nil))?.status == 200 },
                "\(aggregator.standardError.suffix(2000))")

        try await harness.startAgent()
        let broker = "mqtt://127.0.0.1:\(harness.broker.port)"
        let body = keys.appendingPathComponent("config.yaml").path
        try "maxLevel: 2\ntelemetryIntervalS: 0.5\n".write(toFile: body, atomically: true, encoding: .utf8)
        let pushed = try await ChildProcess.run(
            ctl, ["config", "push", "--broker", broker, "--fleet", "demo", "--gateway", "gw-0001", "--file", body,
                  "--key", "\(keys.path)/signing.key", "--expires", "7d", "--wait", "--timeout", "20s"])
        #expect(pushed.status == 0, "\(pushed.stdout)\(pushed.stderr)")
        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        #expect(await eventually(timeout: 30) { harness.eventTypes().contains("session.completed") })
        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        try await Task.sleep(for: .milliseconds(500))
        let stopped = try await ChildProcess.run(ctl, ["stop", "--broker", broker, "--fleet", "demo", "--gateway", "gw-0001", "--reason", "contract test"])
        #expect(stopped.status == 0, "\(stopped.stderr)")
        #expect(await eventually(timeout: 20) { harness.eventTypes().contains("session.aborted") })
        #expect(await eventually(timeout: 20) {
            harness.received.elements.contains { $0.topic == "spectra/v1/demo/stats/summary" }
                && harness.received.elements.contains { $0.topic == "spectra/v1/demo/stats/gw/gw-0001" }
        }, "the aggregator's retained stats")

        // Everything on the broker, by the documents.
        let messages = harness.received.elements.map { message -> [String: Any] in
            ["topic": message.topic, "payload": String(decoding: message.payload, as: UTF8.self)]
        }
        let topics = Set(harness.received.elements.map(\.topic))
        for leaf in ["gw/gw-0001/status", "gw/gw-0001/state", "gw/gw-0001/event", "gw/gw-0001/telemetry", "gw/gw-0001/cmd/config", "gw/gw-0001/cmd/stop", "stats/summary", "stats/gw/gw-0001"] {
            #expect(topics.contains("spectra/v1/demo/" + leaf), "no message on \(leaf): \(topics.sorted())")
        }
        let traffic = try await Self.validate("messages", messages)
        #expect(traffic.status == 0, "\(traffic.output)")
        let types = Set(harness.eventTypes())
        #expect(types.isSuperset(of: ["session.started", "session.completed", "session.aborted", "config.applied"]), "\(types)")

        // Every API answer, by the documents: successes and each documented failure.
        var answers: [[String: Any]] = []
        func answer(_ path: String, token: String?) async throws {
            let (data, status) = try await AggregatorAccess.get(base + path, token: token)
            answers.append(["method": "GET", "path": path, "status": status, "body": String(decoding: data, as: UTF8.self)])
        }
        for path in [
            "/api/v1/fleet/summary?fleet=demo", "/api/v1/fleet/summary", "/api/v1/fleet/daily?fleet=demo",
            "/api/v1/gateways", "/api/v1/gateways?q=0001", "/api/v1/gateways/gw-0001", "/api/v1/gateways/gw-0001/sessions?limit=5",
            "/api/v1/me", "/healthz",
            "/api/v1/fleet/daily?from=2026-13-01", "/api/v1/gateways/gw-9999", "/api/v1/gateways/gw-9999/sessions",
        ] {
            try await answer(path, token: token)
        }
        try await answer("/api/v1/fleet/summary", token: nil)
        try await answer("/api/v1/gateways", token: viewer)
        let statuses = answers.compactMap { $0["status"] as? Int }
        #expect(Set(statuses) == [200, 400, 401, 403, 404], "\(statuses)")
        let api = try await Self.validate("responses", answers)
        #expect(api.status == 0, "\(api.output)")
        #expect(api.output.contains("\(answers.count) checked, 0 disagreement"), "\(api.output)")

        // The alerting rules and the Grafana dashboard ask only for series /metrics has.
        let (metricsBody, metricsStatus) = try await AggregatorAccess.get(base + "/metrics", token: token)
        #expect(metricsStatus == 200)
        let exported = Self.metricNames(in: String(decoding: metricsBody, as: UTF8.self))
        for file in ["Deploy/monitoring/alerts.yaml", "Deploy/monitoring/grafana-dashboard.json"] {
            let text = try String(contentsOf: TestEnvironment.packageRoot.appendingPathComponent(file), encoding: .utf8)
            let used = Self.metricNames(in: text)
            #expect(!used.isEmpty)
            #expect(used.isSubset(of: exported), "\(file) asks for series the aggregator does not export: \(used.subtracting(exported).sorted())")
        }

        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0)
    }

    /// Every `spectra_aggregator_...` name in `text`.
    static func metricNames(in text: String) -> Set<String> {
        var names = Set<String>()
        var rest = Substring(text)
        while let start = rest.range(of: "spectra_aggregator_") {
            let tail = rest[start.lowerBound...]
            let name = tail.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            names.insert(String(name))
            rest = tail.dropFirst(name.count)
        }
        return names
    }

    @Test("the alerting rules load and their unit tests pass (promtool); the Grafana dashboard is JSON with a query in every panel")
    func monitoring() async throws {
        let promtool = PythonBroker.environment.appendingPathComponent("bin/promtool").path
        let folder = TestEnvironment.packageRoot.appendingPathComponent("Deploy/monitoring")
        let checked = try await ChildProcess.run(promtool, ["check", "rules", folder.appendingPathComponent("alerts.yaml").path])
        #expect(checked.status == 0, "\(checked.stdout)\(checked.stderr)")
        let tested = try await ChildProcess.run(promtool, ["test", "rules", folder.appendingPathComponent("alerts.test.yaml").path])
        #expect(tested.status == 0, "\(tested.stdout)\(tested.stderr)")
        #expect(tested.stdout.contains("SUCCESS"), "\(tested.stdout)")
        let dashboard = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("grafana-dashboard.json"))) as? [String: Any]
        let panels = dashboard?["panels"] as? [[String: Any]] ?? []
        #expect(panels.count >= 8)
        for panel in panels {
            let targets = panel["targets"] as? [[String: Any]] ?? []
            #expect(!targets.isEmpty && targets.allSatisfy { ($0["expr"] as? String)?.isEmpty == false }, "\(panel["title"] ?? "?")")
        }
    }
}
