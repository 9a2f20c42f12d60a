import Foundation
import SpectraTesting
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `spectra-fleetsim` against a real mosquitto and the real aggregator: what the simulator says
/// it did is what the aggregator counted, with nothing lost.
@Suite("spectra-fleetsim")
struct FleetSimTests {
    @Test("a simulated fleet's sessions all reach the aggregator, counted once, with complete seqs")
    func simulatedFleetIsCountedExactly() async throws {
        let broker = try await MosquittoBroker(extraConfig: "max_queued_messages 0\n")
        let folder = try TestEnvironment.temporaryDirectory("fleetsim")
        defer { try? FileManager.default.removeItem(at: folder) }
        let httpPort = try TestEnvironment.freePort()
        let aggregator = try ChildProcess(
            TestEnvironment.product("spectra-aggregator"),
            [
                "run", "--set", "mqtt.url=\(broker.url)", "--set", "http.port=\(httpPort)",
                "--set", "database=\(folder.path)/aggregator.sqlite", "--set", "clientId=agg-fleetsim",
            ])
        let base = "http://127.0.0.1:\(httpPort)"
        func get(_ path: String) async -> [String: Any]? {
            guard let (data, _) = try? await URLSession.shared.data(from: URL(string: base + path)!) else { return nil }
            return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
        }
        #expect(await eventually(timeout: 20) { (await get("/healthz"))?["broker"] as? String == "connected" })

        let sim = try await ChildProcess.run(
            TestEnvironment.product("spectra-fleetsim"),
            [
                "--gateways", "12", "--days", "4", "--speed", "43200", "--seed", "5", "--broker", broker.url,
                "--data-dir", "\(folder.path)/fleet", "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml",
                "--idle-telemetry-interval", "0.5",
            ], timeout: 240)
        #expect(sim.status == 0, "\(sim.stderr.suffix(500))")
        // done: N sessions started, C completed, A aborted, M messages
        let done = try #require(sim.stdout.split(separator: "\n").last { $0.hasPrefix("done:") }.map(String.init))
        let numbers = done.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        #expect(numbers.count == 4, "\(done)")
        let (started, completed, aborted, messages) = (numbers[0], numbers[1], numbers[2], numbers[3])
        #expect(started > 0 && completed > 0)

        let settled = await eventually(timeout: 30) {
            let completeness = (await get("/api/v1/fleet/summary?fleet=demo"))?["completeness"] as? [String: Any]
            return completeness?["received"] as? Int == messages
        }
        let summary = await get("/api/v1/fleet/summary?fleet=demo")
        #expect(settled, "every enqueued message arrives: \(String(describing: summary?["completeness"]))")
        let sessions = summary?["sessions"] as? [String: Any]
        #expect(sessions?["started"] as? Int == started)
        #expect(sessions?["completed"] as? Int == completed)
        #expect(sessions?["aborted"] as? Int == aborted)
        #expect((summary?["completeness"] as? [String: Any])?["ratio"] as? Double == 1)
        #expect(summary?["gateways"] as? Int == 12)
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0)
        await broker.stop()
    }
    @Test("two simulator processes share one fleet with --first-gateway, each with its own gateways")
    func processesShareAFleet() async throws {
        let broker = try await MosquittoBroker(extraConfig: "max_queued_messages 0\n")
        let folder = try TestEnvironment.temporaryDirectory("fleetsim")
        defer { try? FileManager.default.removeItem(at: folder) }
        let httpPort = try TestEnvironment.freePort()
        let aggregator = try ChildProcess(
            TestEnvironment.product("spectra-aggregator"),
            [
                "run", "--set", "mqtt.url=\(broker.url)", "--set", "http.port=\(httpPort)",
                "--set", "database=\(folder.path)/aggregator.sqlite", "--set", "clientId=agg-fleetsim-2",
            ])
        func get(_ path: String) async -> Any? {
            guard let (data, _) = try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(httpPort)" + path)!) else { return nil }
            return try? JSONSerialization.jsonObject(with: data)
        }
        #expect(await eventually(timeout: 20) { (await get("/healthz") as? [String: Any])?["broker"] as? String == "connected" })
        func simulate(first: Int) async throws -> (status: Int32?, stdout: String, stderr: String) {
            try await ChildProcess.run(
                TestEnvironment.product("spectra-fleetsim"),
                [
                    "--gateways", "3", "--first-gateway", "\(first)", "--days", "1", "--speed", "43200", "--broker", broker.url,
                    "--data-dir", "\(folder.path)/fleet", "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml",
                    "--idle-telemetry-interval", "0.5",
                ], timeout: 120)
        }
        async let first = simulate(first: 1)
        async let second = simulate(first: 4)
        let results = try await [first, second]
        for result in results { #expect(result.status == 0, "\(result.stderr.suffix(500))") }
        #expect(results[1].stdout.contains("3 gateways (from gw-00004)"))
        let expected = (1...6).map { String(format: "gw-%05d", $0) }
        let listed = await eventually(timeout: 20) {
            let rows = await get("/api/v1/gateways?fleet=demo") as? [[String: Any]]
            return rows?.compactMap { $0["gateway"] as? String }.sorted() == expected
        }
        let rows = await get("/api/v1/gateways?fleet=demo")
        #expect(listed, "\(String(describing: rows))")
        aggregator.send(SIGTERM)
        #expect(await aggregator.wait(timeout: 15) == 0)
        await broker.stop()
    }
}
