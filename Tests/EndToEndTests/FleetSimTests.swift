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
    /// A real aggregator on a free port, fed by `broker`, with its database in `folder`.
    struct Aggregator {
        let process: ChildProcess
        let base: String
        /// An operator's API token for its database.
        let token: String

        init(broker: MosquittoBroker, folder: URL, settings: [String] = []) async throws {
            let httpPort = try TestEnvironment.freePort()
            base = "http://127.0.0.1:\(httpPort)"
            token = try await AggregatorAccess.token(database: "\(folder.path)/aggregator.sqlite")
            process = try ChildProcess(
                TestEnvironment.product("spectra-aggregator"),
                [
                    "run", "--set", "mqtt.url=\(broker.url)", "--set", "http.port=\(httpPort)",
                    "--set", "database=\(folder.path)/aggregator.sqlite", "--set", "clientId=agg-\(UUID().uuidString.prefix(8))",
                ] + settings.flatMap { ["--set", $0] })
        }

        /// The decoded JSON at `path`, nil while the aggregator does not answer.
        func get(_ path: String) async -> Any? {
            guard let (data, _) = try? await AggregatorAccess.get(base + path, token: token) else { return nil }
            return try? JSONSerialization.jsonObject(with: data)
        }

        func connected() async -> Bool {
            await eventually(timeout: 20) { (await get("/healthz") as? [String: Any])?["broker"] as? String == "connected" }
        }

        func stop() async -> Int32? {
            process.send(SIGTERM)
            return await process.wait(timeout: 15)
        }
    }

    /// Runs `spectra-fleetsim` at 43,200x against `broker`, its data in `folder`, with `arguments` added.
    static func simulate(
        _ arguments: [String], broker: MosquittoBroker, folder: URL, timeout: Double
    ) async throws -> (status: Int32?, stdout: String, stderr: String) {
        try await ChildProcess.run(
            TestEnvironment.product("spectra-fleetsim"),
            arguments + [
                "--speed", "43200", "--broker", broker.url, "--data-dir", "\(folder.path)/fleet",
                "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml", "--idle-telemetry-interval", "0.5",
            ], timeout: timeout)
    }

    @Test("a simulator whose broker refuses it says how much was not delivered and exits 1, not 0 with a done line")
    func refusedFleetFails() async throws {
        let broker = try await MosquittoBroker(extraConfig: "allow_anonymous false\n")
        let folder = try TestEnvironment.temporaryDirectory("fleetsim-refused")
        defer { try? FileManager.default.removeItem(at: folder) }
        let sim = try await Self.simulate(["--gateways", "2", "--days", "2", "--seed", "3"], broker: broker, folder: folder, timeout: 120)
        #expect(sim.status == 1, "\(sim.stderr.suffix(500))")
        #expect(sim.stderr.contains("were not delivered"), "\(sim.stderr.suffix(500))")
        let done = sim.stdout.split(separator: "\n").last { $0.hasPrefix("done:") }
        #expect(done?.hasSuffix(" 0 delivered") == true, "\(String(describing: done))")
        await broker.stop()
    }

    @Test("the simulator authenticates with the other binaries' mqtt.* settings: a user name from --set, the password from the environment")
    func credentials() async throws {
        let folder = try TestEnvironment.temporaryDirectory("fleetsim-auth")
        defer { try? FileManager.default.removeItem(at: folder) }
        let passwords = folder.appendingPathComponent("passwd").path
        let tool = try #require(TestEnvironment.executable("mosquitto_passwd"))
        #expect(try await ChildProcess.run(tool, ["-b", "-c", passwords, "fleet", "s3cret"]).status == 0)
        let broker = try await MosquittoBroker(extraConfig: "allow_anonymous false\npassword_file \(passwords)\n")
        let sim = try await ChildProcess.run(
            TestEnvironment.product("spectra-fleetsim"),
            [
                "--gateways", "2", "--days", "1", "--seed", "4", "--speed", "43200", "--broker", broker.url, "--set", "mqtt.username=fleet",
                "--data-dir", "\(folder.path)/fleet", "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml",
            ],
            environment: ["SPECTRA_MQTT_PASSWORD": "s3cret"], timeout: 120)
        #expect(sim.status == 0, "\(sim.stderr.suffix(800))")
        let done = sim.stdout.split(separator: "\n").last { $0.hasPrefix("done:") }
        let numbers = done.map { $0.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) } } ?? []
        #expect(numbers.count == 5 && numbers[3] > 0 && numbers[3] == numbers[4], "\(String(describing: done))")
        await broker.stop()
    }

    @Test("a simulated fleet's sessions all reach the aggregator, counted once, with complete seqs")
    func simulatedFleetIsCountedExactly() async throws {
        let broker = try await MosquittoBroker(extraConfig: "max_queued_messages 0\n")
        let folder = try TestEnvironment.temporaryDirectory("fleetsim")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await Aggregator(broker: broker, folder: folder)
        func get(_ path: String) async -> [String: Any]? { await aggregator.get(path) as? [String: Any] }
        #expect(await aggregator.connected())

        let sim = try await Self.simulate(["--gateways", "12", "--days", "4", "--seed", "5"], broker: broker, folder: folder, timeout: 240)
        #expect(sim.status == 0, "\(sim.stderr.suffix(500))")
        // done: N sessions started, C completed, A aborted, M messages, D delivered
        let done = try #require(sim.stdout.split(separator: "\n").last { $0.hasPrefix("done:") }.map(String.init))
        let numbers = done.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        #expect(numbers.count == 5, "\(done)")
        let (started, completed, aborted, messages) = (numbers[0], numbers[1], numbers[2], numbers[3])
        #expect(numbers[4] == messages, "every message delivered: \(done)")
        #expect(started > 0 && completed > 0)

        let settled = await eventually(timeout: 30) {
            let completeness = (await get("/api/v1/fleet/summary?fleet=demo"))?["completeness"] as? [String: Any]
            return completeness?["received"] as? Int == messages
        }
        let summary = await get("/api/v1/fleet/summary?fleet=demo")
        let refusals = (try? await AggregatorAccess.get(aggregator.base + "/metrics", token: aggregator.token)).map {
            String(decoding: $0.0, as: UTF8.self).split(separator: "\n").filter { $0.hasPrefix("spectra_aggregator_parse_failures_total") }
        } ?? []
        #expect(settled, "every enqueued message arrives: \(String(describing: summary?["completeness"])); refused: \(refusals)")
        let sessions = summary?["sessions"] as? [String: Any]
        #expect(sessions?["started"] as? Int == started)
        #expect(sessions?["completed"] as? Int == completed)
        #expect(sessions?["aborted"] as? Int == aborted)
        #expect((summary?["completeness"] as? [String: Any])?["ratio"] as? Double == 1)
        #expect(summary?["gateways"] as? Int == 12)
        #expect(await aggregator.stop() == 0)
        await broker.stop()
    }

    @Test("two simulator processes share one fleet with --first-gateway, each with its own gateways")
    func processesShareAFleet() async throws {
        let broker = try await MosquittoBroker(extraConfig: "max_queued_messages 0\n")
        let folder = try TestEnvironment.temporaryDirectory("fleetsim")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await Aggregator(broker: broker, folder: folder)
        #expect(await aggregator.connected())
        func simulate(first: Int) async throws -> (status: Int32?, stdout: String, stderr: String) {
            try await Self.simulate(["--gateways", "3", "--first-gateway", "\(first)", "--days", "1"], broker: broker, folder: folder, timeout: 120)
        }
        async let first = simulate(first: 1)
        async let second = simulate(first: 4)
        let results = try await [first, second]
        for result in results { #expect(result.status == 0, "\(result.stderr.suffix(500))") }
        #expect(results[1].stdout.contains("3 gateways (from gw-00004)"))
        let expected = (1...6).map { String(format: "gw-%05d", $0) }
        let listed = await eventually(timeout: 20) {
            let rows = await aggregator.get("/api/v1/gateways?fleet=demo") as? [[String: Any]]
            return rows?.compactMap { $0["gateway"] as? String }.sorted() == expected
        }
        let rows = await aggregator.get("/api/v1/gateways?fleet=demo")
        #expect(listed, "\(String(describing: rows))")
        #expect(await aggregator.stop() == 0)
        await broker.stop()
    }

    @Test("a live fleet stopped while its broker is down exits after its bounded drain wait, saying what was not delivered")
    func stopsWithoutABroker() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("fleetsim")
        defer { try? FileManager.default.removeItem(at: folder) }
        let sim = try ChildProcess(
            TestEnvironment.product("spectra-fleetsim"),
            [
                "--gateways", "24", "--days", "0", "--live", "--telemetry-interval", "1", "--idle-telemetry-interval", "1",
                "--broker", broker.url, "--data-dir", "\(folder.path)/fleet",
                "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml",
            ])
        let online = await sim.waitForLine(timeout: 20) { $0.contains("online 24/24") }
        #expect(online != nil, "\(sim.lines.suffix(3)) \(sim.standardError.suffix(300))")
        await broker.stop()
        try await Task.sleep(for: .seconds(1))
        let stoppedAt = ContinuousClock.now
        sim.send(SIGTERM)
        // Each gateway waits up to 15 s for a broker to take its backlog, all at once, then
        // closes its outbox (up to 2 s). A shutdown whose waits spun in the cancelled task took
        // 15 s per gateway per core: three minutes for these 24.
        let status = await sim.wait(timeout: 40)
        if status == nil { sim.send(SIGKILL) }
        // It exits 1: what the gateways made while the broker was gone was never delivered.
        #expect(status == 1, "exited \(String(describing: status)) after \(ContinuousClock.now - stoppedAt)")
        #expect(sim.standardError.contains("were not delivered"), "\(sim.standardError.suffix(300))")
    }

    /// The scale script's light load (`LOAD=light`) must itself lose nothing, or its storm
    /// figures would be wrong: what waits while the broker is away goes when it is back.
    @Test("the light load generator's gateways reach the aggregator whole, across a broker outage")
    func lightLoadIsCountedWhole() async throws {
        let broker = try await MosquittoBroker(extraConfig: "max_queued_messages 0\n")
        let folder = try TestEnvironment.temporaryDirectory("fleetload")
        defer { try? FileManager.default.removeItem(at: folder) }
        // Plain subscriptions: mosquitto 2.0 does not restore shared ones after a restart.
        let aggregator = try await Aggregator(broker: broker, folder: folder, settings: ["shareGroup="])
        #expect(await aggregator.connected())
        func summary() async -> [String: Any]? { await aggregator.get("/api/v1/fleet/summary?fleet=load") as? [String: Any] }
        let port = try #require(broker.url.split(separator: ":").last.map(String.init))
        let load = try ChildProcess(
            TestEnvironment.product("spectra-bench"), ["fleet-load", "--port", port, "--gateways", "20", "--interval", "0.2", "--fleet", "load"])
        #expect(await eventually(timeout: 20) { await summary()?["online"] as? Int == 20 }, "\(load.standardError.suffix(300))")
        await broker.stop()
        try await Task.sleep(for: .seconds(2))
        try await broker.start()
        // Each client comes back on its own jittered reconnect schedule, on a machine the whole
        // suite shares: a minute, not the 20 s a quiet machine needs.
        #expect(await eventually(timeout: 60) { await summary()?["online"] as? Int == 20 }, "all born again after the outage")
        try await Task.sleep(for: .seconds(2))
        load.send(SIGTERM)
        #expect(await load.wait(timeout: 20) == 0, "\(load.standardError.suffix(300))")
        // "fleet-load: 0 of 20 connected, messages M made, S sent, A acknowledged, Q not yet acknowledged"
        let last = try #require(load.standardError.split(separator: "\n").last { $0.contains("acknowledged,") })
        let numbers = last.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        #expect(numbers.count == 6, "\(last)")
        let acknowledged = numbers.count == 6 ? numbers[4] : .max
        // Every message the broker acknowledged is counted, and none before the last one
        // counted is missing: those made while the broker was away went once it was back.
        let whole = await eventually(timeout: 20) {
            let completeness = await summary()?["completeness"] as? [String: Any]
            guard let received = completeness?["received"] as? Int, let expected = completeness?["expected"] as? Int else { return false }
            return received == expected && received >= acknowledged && received >= 100
        }
        let completeness = await summary()?["completeness"]
        #expect(whole, "\(String(describing: completeness))")
        // The offline statuses were acknowledged by the broker before the generator exited;
        // the aggregator may still be committing them.
        #expect(await eventually(timeout: 10) { await summary()?["online"] as? Int == 0 }, "offline once stopped")
        #expect(await aggregator.stop() == 0)
        await broker.stop()
    }
}

extension FleetSimTests {
    /// libmosquitto opens a wake-up socket pair per client that only its own loop thread reads;
    /// the client makes its handles where that fails, so a simulated gateway holds one socket.
    @Test("a simulated gateway holds one socket (its TCP connection), not libmosquitto's unused socket pair besides")
    func oneSocketPerGateway() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("fleetsim")
        defer { try? FileManager.default.removeItem(at: folder) }
        let gateways = 40
        let sim = try ChildProcess(
            TestEnvironment.product("spectra-fleetsim"),
            [
                "--gateways", "\(gateways)", "--days", "0", "--live", "--broker", broker.url, "--data-dir", "\(folder.path)/fleet",
                "--profile", "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml",
            ])
        defer { sim.send(SIGKILL) }
        #expect(await sim.waitForLine(timeout: 20) { $0.contains("online \(gateways)/\(gateways)") } != nil, "\(sim.standardError.suffix(300))")
        // Unix-domain sockets are listed with their inodes in /proc/net/unix.
        let unixInodes = Set(try String(contentsOfFile: "/proc/net/unix", encoding: .utf8).split(separator: "\n").dropFirst().compactMap {
            $0.split(separator: " ", omittingEmptySubsequences: true).dropFirst(6).first.map(String.init)
        })
        let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(sim.pid)/fd")
        let sockets = descriptors.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(sim.pid)/fd/\($0)") }
            .filter { $0.hasPrefix("socket:[") }
            .map { String($0.dropFirst("socket:[".count).dropLast()) }
        let unix = sockets.filter(unixInodes.contains)
        #expect(sockets.count - unix.count >= gateways, "a TCP connection per gateway: \(sockets.count - unix.count)")
        #expect(unix.count < 8, "\(unix.count) Unix-domain sockets for \(gateways) gateways (libmosquitto's pairs would make \(2 * gateways))")
        sim.send(SIGTERM)
        _ = await sim.wait(timeout: 30)
        await broker.stop()
    }
}
