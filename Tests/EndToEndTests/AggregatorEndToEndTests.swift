import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The real `spectra-agent` and `spectra-aggregator` binaries against a real mosquitto.
@Suite("spectra-aggregator run")
struct AggregatorEndToEndTests {
    static func get(_ url: String) async throws -> [String: Any] {
        let (data, _) = try await URLSession.shared.data(from: URL(string: url)!)
        return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
    }

    @Test("a session run on a real agent shows up in the aggregator's API; SIGTERM stops it cleanly")
    func agentToAggregator() async throws {
        let harness = try await AgentTests.Harness()
        let httpPort = try TestEnvironment.freePort()
        let database = harness.folder.appendingPathComponent("aggregator.sqlite").path
        let aggregator = try ChildProcess(
            TestEnvironment.product("spectra-aggregator"),
            [
                "run", "--config", "\(TestEnvironment.packageRoot.path)/Config/aggregator.yaml",
                "--set", "mqtt.url=mqtt://127.0.0.1:\(harness.broker.port)", "--set", "http.port=\(httpPort)",
                "--set", "database=\(database)", "--set", "clientId=agg-e2e", "--set", "stats.publishIntervalS=1",
            ])
        let base = "http://127.0.0.1:\(httpPort)"
        #expect(await eventually(timeout: 20) { ((try? await Self.get(base + "/healthz"))?["broker"] as? String) == "connected" },
                "aggregator did not come up: \(aggregator.standardError)")

        try await harness.startAgent()
        let ctl = TestEnvironment.product("spectra-ctl")
        let watcher = try ChildProcess(
            ctl, ["watch", "--broker", "mqtt://127.0.0.1:\(harness.broker.port)", "--fleet", "demo", "--type", "session.completed", "--count", "1"])
        try await Task.sleep(for: .milliseconds(500))
        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        #expect(await eventually(timeout: 20) { harness.eventTypes().contains("session.completed") })

        let settled = await eventually(timeout: 15) {
            let summary = try? await Self.get(base + "/api/v1/fleet/summary?fleet=demo")
            return ((summary?["sessions"] as? [String: Any])?["completed"] as? Int) == 1 && (summary?["online"] as? Int) == 1
        }
        #expect(settled, "the aggregator counts the agent's completed session and sees it online")
        let summary = try await Self.get(base + "/api/v1/fleet/summary?fleet=demo")
        #expect(((summary["completeness"] as? [String: Any])?["ratio"] as? Double) == 1, "every seq arrived")
        let gateway = try await Self.get(base + "/api/v1/gateways/gw-0001")
        #expect(((gateway["gateway"] as? [String: Any])?["firmware"] as? String) != nil, "the retained state's firmware is known")
        let sessions = (gateway["recentSessions"] as? [[String: Any]]) ?? []
        #expect(sessions.count == 1)
        #expect(sessions.first?["outcome"] as? String == "completed")
        #expect(sessions.first?["regimenDay"] as? Int == 1)

        // The operator's view of the same figures.
        #expect(await watcher.wait(timeout: 10) == 0, "watch exits after one session.completed")
        #expect(watcher.lines.contains { $0.contains("gw-0001") && $0.contains("session.completed") }, "\(watcher.lines)")
        let gateways = try await ChildProcess.run(ctl, ["gateways", "--aggregator", base])
        #expect(gateways.status == 0, "\(gateways.stderr)")
        #expect(gateways.stdout.contains("GATEWAY") && gateways.stdout.contains("gw-0001"), "\(gateways.stdout)")
        let sessionsJSON = try await ChildProcess.run(ctl, ["sessions", "gw-0001", "--aggregator", base, "--json"])
        let parsed = try JSONSerialization.jsonObject(with: Data(sessionsJSON.stdout.utf8)) as? [[String: Any]]
        #expect(parsed?.first?["outcome"] as? String == "completed")
        let stats = try await ChildProcess.run(ctl, ["stats", "--aggregator", base, "--fleet", "demo"])
        #expect(stats.stdout.contains("completed 1"), "\(stats.stdout)")
        let missing = try await ChildProcess.run(ctl, ["sessions", "gw-9999", "--aggregator", base])
        #expect(missing.status != 0 && missing.stderr.contains("404"), "\(missing.stderr)")

        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
        // The agent's clean offline status reaches the aggregator.
        #expect(await eventually(timeout: 10) { ((try? await Self.get(base + "/api/v1/fleet/summary?fleet=demo"))?["online"] as? Int) == 0 })
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0, "aggregator exits 0 on SIGTERM: \(aggregator.standardError.suffix(500))")
    }
}
