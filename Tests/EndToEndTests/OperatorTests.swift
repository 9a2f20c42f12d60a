import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Synchronization
import Testing

/// `spectra-ctl` against real agents (simulated headbands) on a real mosquitto.
@Suite("spectra-ctl", .serialized)
struct OperatorTests {
    /// Several real agents of fleet `demo`, an operator key pair they trust, and a witness.
    final class Fleet: Sendable {
        let broker: MosquittoBroker
        let folder: URL
        let privateKey: String
        let publicKey: String
        let witness: MQTTClient
        let received: Collector<MQTTMessage>
        let agents = Mutex<[String: ChildProcess]>([:])

        init() async throws {
            broker = try await MosquittoBroker()
            folder = try TestEnvironment.temporaryDirectory("fleet")
            let keys = folder.appendingPathComponent("keys").path
            let generated = try await ChildProcess.run(TestEnvironment.product("spectra-ctl"), ["keys", "generate", "--out", keys])
            guard generated.status == 0 else { throw TestEnvironmentError("keys generate failed: \(generated.stderr)") }
            privateKey = "\(keys)/signing.key"
            publicKey = "\(keys)/signing.pub"
            witness = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "witness", cleanStart: false, sessionExpirySeconds: 3600))
            received = Collector(witness.messages)
            try await witness.connect()
            try await witness.subscribe([Subscription("spectra/v1/demo/#")])
        }

        deinit { try? FileManager.default.removeItem(at: folder) }

        func config(_ gateway: String, groups: [String], faults: [String], trust: [String]? = nil, extra: String = "") throws -> String {
            let path = folder.appendingPathComponent("\(gateway).yaml").path
            try """
                fleet: demo
                gateway: \(gateway)
                groups: [\(groups.joined(separator: ", "))]
                dataDir: \(folder.path)/\(gateway)
                mqtt:
                  url: mqtt://127.0.0.1:\(broker.port)
                  keepaliveS: 5
                telemetry:
                  intervalS: 1
                  idleIntervalS: 60
                session:
                  profile: \(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml
                  timeScale: 300
                headband:
                  faults: [\(faults.joined(separator: ", "))]
                trust:
                  keys: [\((trust ?? [publicKey]).joined(separator: ", "))]
                \(extra)
                """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        /// Starts an agent and waits for its retained state.
        func start(_ gateway: String, groups: [String] = [], faults: [String] = [], trust: [String]? = nil, extra: String = "") async throws {
            let config = try config(gateway, groups: groups, faults: faults, trust: trust, extra: extra)
            let before = stateCount(gateway)
            let child = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
            agents.withLock { $0[gateway] = child }
            guard await eventually(timeout: 30, { self.stateCount(gateway) > before }) else {
                throw TestEnvironmentError("\(gateway) did not publish its state: \(child.standardError.suffix(400))")
            }
        }

        func stop(_ gateway: String) async {
            guard let child = agents.withLock({ $0.removeValue(forKey: gateway) }) else { return }
            child.send(SIGTERM)
            _ = await child.wait(timeout: 15)
        }

        func stopAll() async {
            for gateway in agents.withLock({ Array($0.keys) }) { await stop(gateway) }
            await witness.disconnect()
            await broker.stop()
        }

        func stateCount(_ gateway: String) -> Int {
            received.elements.filter { $0.topic == "spectra/v1/demo/gw/\(gateway)/state" }.count
        }

        func events(_ gateway: String) -> [Event] {
            received.elements.filter { $0.topic == "spectra/v1/demo/gw/\(gateway)/event" }.compactMap {
                if case .event(let event) = try? Envelope.decode(Data($0.payload)).message { event } else { nil }
            }
        }

        func ctl(_ arguments: [String]) async throws -> (status: Int32?, out: String, err: String) {
            let result = try await ChildProcess.run(
                TestEnvironment.product("spectra-ctl"), arguments, currentDirectory: folder.path, timeout: 120)
            return (result.status, result.stdout, result.stderr)
        }

        var brokerURL: String { "mqtt://127.0.0.1:\(broker.port)" }

        func writeBody(_ name: String, _ yaml: String) throws -> String {
            let path = folder.appendingPathComponent(name).path
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
    }

    @Test("config push: a group push reaches exactly that group; an offline gateway applies its push on reconnect; 1200 uA is refused twice")
    func configPushes() async throws {
        let fleet = try await Fleet()
        try await fleet.start("gw-a", groups: ["clinic-a"])
        try await fleet.start("gw-b", groups: ["clinic-a"])
        try await fleet.start("gw-c", groups: ["clinic-b"])
        let body = try fleet.writeBody("level2.yaml", "maxLevel: 2\nlevelUnlock: {level2AfterSessions: 3, level3AfterSessions: 10}\n")

        // A push to group clinic-a, waiting for the answers.
        let push = try await fleet.ctl([
            "config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--group", "clinic-a", "--file", body,
            "--key", fleet.privateKey, "--expires", "7d", "--wait", "--timeout", "20s",
        ])
        #expect(push.status == 0, "\(push.err)")
        #expect(push.out.contains("published group:clinic-a version 1"))
        #expect(push.out.contains("gw-a: applied") && push.out.contains("gw-b: applied"))
        #expect(!push.out.contains("gw-c"))
        try await Task.sleep(for: .milliseconds(500))
        func applied(_ gateway: String) -> [ConfigOutcome] {
            fleet.events(gateway).compactMap { if case .configApplied(let outcome) = $0 { outcome } else { nil } }
        }
        #expect(applied("gw-a").contains { $0.layer == "group:clinic-a" && $0.version == 1 })
        #expect(applied("gw-b").contains { $0.layer == "group:clinic-a" && $0.version == 1 })
        #expect(applied("gw-c").isEmpty, "gw-c is not in clinic-a")
        #expect(!push.out.contains("BEGIN") && !push.err.contains("PRIVATE KEY"), "never prints the key")

        // A second push to the same layer takes the next version.
        let again = try await fleet.ctl([
            "config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--group", "clinic-a", "--file", body, "--key", fleet.privateKey,
        ])
        #expect(again.out.contains("version 2"), "\(again.out) \(again.err)")

        // gw-c is offline while a push for it lands; it applies it when it comes back.
        await fleet.stop("gw-c")
        let offline = try await fleet.ctl([
            "config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--gateway", "gw-c", "--file", body, "--key", fleet.privateKey,
        ])
        #expect(offline.status == 0, "\(offline.err)")
        try await fleet.start("gw-c", groups: ["clinic-b"])
        #expect(await eventually(timeout: 15) { applied("gw-c").contains { $0.layer == "gateway" && $0.version == 1 } })

        // 1200 uA: spectra-ctl refuses before publishing anything.
        let unsafe = try fleet.writeBody("unsafe.yaml", "levels:\n  - {level: 1, peakMicroAmps: 1200}\n")
        let refused = try await fleet.ctl([
            "config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--all", "--file", unsafe, "--key", fleet.privateKey,
        ])
        #expect(refused.status != 0)
        #expect(refused.err.contains("1200") && refused.err.contains("nothing was published"), "\(refused.err)")
        #expect(refused.err.split(separator: "\n").count == 1, "one line: \(refused.err)")
        let show = try await fleet.ctl(["config", "show", "--broker", fleet.brokerURL, "--fleet", "demo", "--trust", fleet.publicKey])
        #expect(!show.out.contains("layer all") && !show.out.contains("\nall "), "no fleet layer was published: \(show.out)")
        #expect(show.out.contains("group:clinic-a  version 2  verified"), "\(show.out)")

        // Forced onto the broker by hand (signed with the trusted key), the agents refuse it.
        let key = try SigningKey(pem: String(contentsOfFile: fleet.privateKey, encoding: .utf8))
        let document = DocumentPayload(
            kind: .config, fleet: try Identifier("demo"), target: .all, version: 1, issuedAt: Date(),
            body: .config(ConfigBody(levels: [.init(level: 1, peakMicroAmps: 1200)])))
        let forcer = MQTTClient(MQTTConfiguration(port: fleet.broker.port, clientID: "forcer"))
        try await forcer.connect()
        try await forcer.publish(OutgoingMessage(
            topic: "spectra/v1/demo/all/cmd/config", payload: [UInt8](key.sign(document.encoded()).encoded()), retain: true))
        for gateway in ["gw-a", "gw-b", "gw-c"] {
            #expect(await eventually(timeout: 10) {
                fleet.events(gateway).contains { if case .configRejected(let o) = $0 { o.layer == "all" && (o.reason ?? "").contains("1200") } else { false } }
            }, "\(gateway) rejects the 1200 uA document")
        }
        await forcer.disconnect()

        // Emergency stop reaches a running session.
        let agentConfig = fleet.folder.appendingPathComponent("gw-a.yaml").path
        let started = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), ["session", "start", "--config", agentConfig])
        #expect(started.status == 0, "\(started.stderr)")
        let stop = try await fleet.ctl(["stop", "--broker", fleet.brokerURL, "--fleet", "demo", "--gateway", "gw-a", "--reason", "test"])
        #expect(stop.status == 0, "\(stop.err)")
        #expect(await eventually(timeout: 10) {
            fleet.events("gw-a").contains { if case .sessionAborted(let s) = $0 { s.reason == .remoteStop } else { false } }
        })
        await fleet.stopAll()
    }

    @Test("firmware rollout over 20 gateways with 3 scripted to fail halts at the wave that crosses the threshold")
    func rolloutHalts() async throws {
        let fleet = try await Fleet()
        let failing: Set<String> = ["gw-03", "gw-10", "gw-15"]
        for index in 0..<20 {
            let gateway = String(format: "gw-%02d", index)
            try await fleet.start(gateway, groups: ["pilot"], faults: failing.contains(gateway) ? ["fwfail@0"] : [])
        }
        let image = (0..<30_000).map { UInt8($0 % 253) }
        let server = try StaticHTTPServer(files: ["/sculpt-2.5.0.bin": image])
        let imagePath = fleet.folder.appendingPathComponent("sculpt-2.5.0.bin").path
        FileManager.default.createFile(atPath: imagePath, contents: Data(image))

        let publish = try await fleet.ctl([
            "firmware", "publish", "--file", imagePath, "--version", "2.5.0", "--url", server.url("/sculpt-2.5.0.bin"),
            "--key", fleet.privateKey, "--fleet", "demo", "--out", "fw.json",
        ])
        #expect(publish.status == 0, "\(publish.err)")
        let rollout = try await fleet.ctl([
            "firmware", "rollout", "--broker", fleet.brokerURL, "--manifest", "fw.json", "--waves", "1,5,25,100",
            "--max-failure-pct", "5", "--group", "pilot", "--soak", "1s", "--wave-timeout", "60s",
        ])
        // 20 gateways: waves reach 1, 1, 5 and 20 of them; gw-03 is among the first 5.
        #expect(rollout.status == 1, "\(rollout.out)\n\(rollout.err)")
        #expect(rollout.out.contains("HALTED at wave 3"), "\(rollout.out)")
        for index in 0..<20 {
            let gateway = String(format: "gw-%02d", index)
            func stages() -> [FirmwareProgress.Stage] {
                fleet.events(gateway).compactMap { if case .firmwareProgress(let p) = $0 { p.stage } else { nil } }
            }
            if index < 5 {
                // The halt does not interrupt installs already under way in the halted wave:
                // they finish (or roll back) on their own.
                let outcome: FirmwareProgress.Stage = failing.contains(gateway) ? .rolledBack : .installed
                #expect(await eventually(timeout: 30) { stages().contains(outcome) }, "\(gateway): \(stages())")
            } else {
                let stages = stages()
                #expect(stages.isEmpty, "\(gateway) is past the halted wave and never got the manifest: \(stages)")
            }
        }
        let status = try await fleet.ctl(["firmware", "status"])
        #expect(status.out.contains("demo 2.5.0: halted"), "\(status.out)")
        #expect(status.out.contains("gw-03"))
        // Running it again does not resume a halted rollout.
        let again = try await fleet.ctl(["firmware", "rollout", "--broker", fleet.brokerURL, "--manifest", "fw.json", "--group", "pilot"])
        #expect(again.status == 1)
        #expect(again.out.contains("already halted"))
        await fleet.stopAll()
    }

    @Test("every command has --help with an example and refuses bad input with one line")
    func helpAndErrors() async throws {
        let ctl = TestEnvironment.product("spectra-ctl")
        for command in [
            ["keys", "generate"], ["keys", "id"], ["config", "push"], ["config", "show"], ["config", "clear"], ["firmware", "publish"],
            ["firmware", "rollout"], ["firmware", "status"], ["stop"], ["gateways"], ["stats"], ["sessions"], ["watch"],
        ] {
            let help = try await ChildProcess.run(ctl, command + ["--help"])
            #expect(help.status == 0)
            #expect(help.stdout.contains("Example") && help.stdout.contains("spectra-ctl \(command[0])"), "\(command) help shows an example")
        }
        let folder = try TestEnvironment.temporaryDirectory("ctl")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cases: [[String]] = [
            ["config", "push", "--fleet", "demo", "--file", "nope.yaml", "--key", "nope.key", "--all"],
            ["config", "push", "--fleet", "demo", "--group", "a", "--all", "--file", "x", "--key", "y"],
            ["firmware", "rollout", "--manifest", "m.json", "--waves", "5,1"],
            ["stop", "--gateway", "bad/id"],
            ["gateways", "--aggregator", "http://127.0.0.1:1"],
            ["watch", "--type", "session.exploded"],
        ]
        for arguments in cases {
            let result = try await ChildProcess.run(ctl, arguments, currentDirectory: folder.path)
            #expect(result.status != 0, "\(arguments)")
            let lines = result.stderr.split(separator: "\n").filter { !$0.hasPrefix("Usage:") && !$0.hasPrefix("  See") && !$0.isEmpty }
            #expect(lines.count == 1, "\(arguments): \(result.stderr)")
        }
    }
}

extension OperatorTests {
    @Test("a rollout whose driver is killed mid-soak resumes from its state file and completes")
    func rolloutResumes() async throws {
        let fleet = try await Fleet()
        for index in 0..<5 { try await fleet.start(String(format: "gw-%02d", index), groups: ["pilot"]) }
        let image = (0..<20_000).map { UInt8($0 % 241) }
        let server = try StaticHTTPServer(files: ["/fw.bin": image])
        let imagePath = fleet.folder.appendingPathComponent("fw.bin").path
        FileManager.default.createFile(atPath: imagePath, contents: Data(image))
        let publish = try await fleet.ctl([
            "firmware", "publish", "--file", imagePath, "--version", "3.0.0", "--url", server.url("/fw.bin"), "--key", fleet.privateKey,
            "--fleet", "demo", "--out", "fw3.json",
        ])
        #expect(publish.status == 0, "\(publish.err)")
        let arguments = [
            "firmware", "rollout", "--broker", fleet.brokerURL, "--manifest", "fw3.json", "--waves", "20,100", "--max-failure-pct", "0",
            "--soak", "8s", "--wave-timeout", "60s",
        ]
        let first = try ChildProcess(TestEnvironment.product("spectra-ctl"), arguments, currentDirectory: fleet.folder.path)
        #expect(await first.waitForLine(timeout: 30) { $0.contains("soaking") } != nil, "\(first.lines)")
        first.send(SIGKILL)
        _ = await first.wait(timeout: 10)
        let state = try String(contentsOfFile: fleet.folder.appendingPathComponent("var/rollouts/demo-3.0.0.json").path, encoding: .utf8)
        #expect(state.contains("\"status\" : \"running\""), "the state file survived the kill: \(state)")

        // The same command again: the plan (waves, soak, threshold) comes from the state file.
        let resumed = try await fleet.ctl(arguments)
        #expect(resumed.status == 0, "\(resumed.out)\n\(resumed.err)")
        #expect(resumed.out.contains("resuming the rollout of 3.0.0 at wave 1"), "\(resumed.out)")
        #expect(resumed.out.contains("completed: 5 of 5 installed"), "\(resumed.out)")
        for index in 0..<5 {
            let gateway = String(format: "gw-%02d", index)
            let installs = fleet.events(gateway).filter { if case .firmwareProgress(let p) = $0 { p.stage == .installed } else { false } }
            #expect(installs.count == 1, "\(gateway) installed once, not twice")
        }
        await fleet.stopAll()
    }
}

extension OperatorTests {
    @Test("a signed document cannot freeze a layer: version 2^63-1 is refused by the agent, spectra-ctl refuses to count past it without trapping, and --reset recovers")
    func frozenLayerRefused() async throws {
        let fleet = try await Fleet()
        try await fleet.start("gw-f", groups: ["clinic-a"])
        let key = try SigningKey(pem: String(contentsOfFile: fleet.privateKey, encoding: .utf8))
        // What an attacker with the key (or a mistaken script) publishes.
        let frozen = key.sign(DocumentPayload(
            kind: .config, fleet: try Identifier("demo"), target: .group(try Identifier("clinic-a")), version: Int.max, issuedAt: Date(),
            body: .config(ConfigBody(maxLevel: 1))).encoded())
        try await fleet.witness.publish(OutgoingMessage(
            topic: "spectra/v1/demo/group/clinic-a/cmd/config", payload: [UInt8](frozen.encoded()), retain: true))
        func rejected() -> [ConfigOutcome] {
            fleet.events("gw-f").compactMap { if case .configRejected(let outcome) = $0 { outcome } else { nil } }
        }
        #expect(await eventually(timeout: 15) { rejected().contains { $0.reason?.hasPrefix("versionTooHigh") == true } }, "\(rejected())")

        let body = try fleet.writeBody("level2.yaml", "maxLevel: 2\n")
        let push = ["config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--group", "clinic-a", "--file", body, "--key", fleet.privateKey]
        let refused = try await fleet.ctl(push)
        #expect(refused.status != 0 && refused.err.contains("--reset"), "no trap, one line saying what to do: \(refused)")
        let reset = try await fleet.ctl(push + ["--reset"])
        #expect(reset.status == 0 && reset.out.contains("published a reset of group:clinic-a version 1"), "\(reset)")
        func applied() -> [ConfigOutcome] {
            fleet.events("gw-f").compactMap { if case .configApplied(let outcome) = $0 { outcome } else { nil } }
        }
        #expect(await eventually(timeout: 15) { applied().contains { $0.layer == "group:clinic-a" && $0.version == 1 } }, "\(applied())")
        let next = try await fleet.ctl(push)
        #expect(next.status == 0 && next.out.contains("version 2"), "\(next)")
        #expect(await eventually(timeout: 15) { applied().contains { $0.layer == "group:clinic-a" && $0.version == 2 } }, "\(applied())")
        await fleet.stopAll()
    }
}

extension OperatorTests {
    @Test("trust is re-checked: a layer whose key left trust.keys stops applying at the next start, and an expired layer stops applying, each reported")
    func trustReevaluated() async throws {
        let fleet = try await Fleet()
        func rejected(_ gateway: String) -> [ConfigOutcome] {
            fleet.events(gateway).compactMap { if case .configRejected(let outcome) = $0 { outcome } else { nil } }
        }
        func applied(_ gateway: String) -> [ConfigOutcome] {
            fleet.events(gateway).compactMap { if case .configApplied(let outcome) = $0 { outcome } else { nil } }
        }
        let body = try fleet.writeBody("level1.yaml", "maxLevel: 1\n")

        // A layer signed by a key that is later dropped from trust.keys.
        try await fleet.start("gw-t")
        let pushed = try await fleet.ctl([
            "config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--gateway", "gw-t", "--file", body, "--key", fleet.privateKey,
        ])
        #expect(pushed.status == 0, "\(pushed)")
        #expect(await eventually(timeout: 15) { applied("gw-t").contains { $0.layer == "gateway" } })
        await fleet.stop("gw-t")
        let other = fleet.folder.appendingPathComponent("other-keys").path
        #expect(try await fleet.ctl(["keys", "generate", "--out", other]).status == 0)
        try await fleet.start("gw-t", trust: ["\(other)/signing.pub"])
        #expect(
            await eventually(timeout: 15) { rejected("gw-t").contains { $0.layer == "gateway" && $0.reason?.hasPrefix("untrustedKey") == true } },
            "\(rejected("gw-t"))")

        // A layer that expires, on a gateway whose clock counts as synchronised.
        try await fleet.start("gw-e", extra: "clock:\n  synced: always\n")
        let expiring = try await fleet.ctl([
            "config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--gateway", "gw-e", "--file", body, "--key", fleet.privateKey,
            "--expires", "3s",
        ])
        #expect(expiring.status == 0, "\(expiring)")
        #expect(await eventually(timeout: 15) { applied("gw-e").contains { $0.layer == "gateway" } })
        #expect(
            await eventually(timeout: 20) { rejected("gw-e").contains { $0.layer == "gateway" && $0.reason?.hasPrefix("expired") == true } },
            "\(rejected("gw-e"))")
        await fleet.stopAll()
    }
}

extension OperatorTests {
    @Test("a signed config's telemetry intervals govern the agent; a level table pushed during a session governs the next one; a flood is refused")
    func signedSettingsTakeEffect() async throws {
        let fleet = try await Fleet()
        try await fleet.start("gw-s")  // idle telemetry every 60 s from its file
        func telemetry() -> Int { fleet.received.elements.filter { $0.topic == "spectra/v1/demo/gw/gw-s/telemetry" }.count }
        func outcomes() -> [(applied: Bool, outcome: ConfigOutcome)] {
            fleet.events("gw-s").compactMap {
                switch $0 {
                case .configApplied(let outcome): (true, outcome)
                case .configRejected(let outcome): (false, outcome)
                default: nil
                }
            }
        }
        let push = ["config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--gateway", "gw-s", "--key", fleet.privateKey]
        let fast = try fleet.writeBody("fast.yaml", "idleTelemetryIntervalS: 1\n")
        #expect(try await fleet.ctl(push + ["--file", fast]).status == 0)
        #expect(await eventually(timeout: 15) { outcomes().contains { $0.applied && $0.outcome.version == 1 } }, "\(outcomes())")
        let before = telemetry()
        try await Task.sleep(for: .seconds(5))
        #expect(telemetry() - before >= 3, "idle telemetry every second now: \(telemetry() - before) in 5 s")

        // A level table pushed during a session: the running session keeps its settings, the
        // next one has the new ones (they were dropped before: set while a session ran).
        func peaks(_ session: Identifier) -> [Double] {
            fleet.received.elements.filter { $0.topic == "spectra/v1/demo/gw/gw-s/telemetry" }.compactMap { message -> [Double]? in
                guard let envelope = try? Envelope.decode(Data(message.payload)), case .telemetry(let body) = envelope.message,
                      body.sessionId == session else { return nil }
                return body.channels.map(\.peakMicroAmps)
            }.flatMap { $0 }
        }
        func sessions() -> [Identifier] {
            fleet.events("gw-s").compactMap { if case .sessionCompleted(let summary) = $0 { summary.sessionId } else { nil } }
        }
        let agentConfig = fleet.folder.appendingPathComponent("gw-s.yaml").path
        func startSession() async throws {
            let started = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), ["session", "start", "--level", "1", "--config", agentConfig])
            #expect(started.status == 0, "\(started.stderr)")
        }
        try await startSession()
        let gentle = try fleet.writeBody("gentle.yaml", "levels:\n  - { level: 1, peakMicroAmps: 100 }\n")
        #expect(try await fleet.ctl(push + ["--file", gentle]).status == 0)
        #expect(await eventually(timeout: 15) { outcomes().contains { $0.applied && $0.outcome.version == 2 } }, "\(outcomes())")
        #expect(await eventually(timeout: 30) { sessions().count == 1 })
        try await startSession()
        #expect(await eventually(timeout: 30) { sessions().count == 2 })
        let (first, second) = (peaks(sessions()[0]), peaks(sessions()[1]))
        #expect((first.max() ?? 0) > 150, "the running session kept 200 uA: \(first)")
        #expect(!second.isEmpty && second.allSatisfy { $0 <= 120 }, "the next session has 100 uA: \(second)")

        // A flood: spectra-ctl refuses to sign it; signed anyway, the agent refuses it too.
        let floodFile = try fleet.writeBody("flood.yaml", "idleTelemetryIntervalS: 0.01\n")
        #expect(try await fleet.ctl(push + ["--file", floodFile]).status != 0)
        let key = try SigningKey(pem: String(contentsOfFile: fleet.privateKey, encoding: .utf8))
        let signed = key.sign(DocumentPayload(
            kind: .config, fleet: try Identifier("demo"), target: .gateway(try Identifier("gw-s")), version: 3, issuedAt: Date(),
            body: .config(ConfigBody(idleTelemetryIntervalS: 0.01))).encoded())
        try await fleet.witness.publish(OutgoingMessage(
            topic: "spectra/v1/demo/gw/gw-s/cmd/config", payload: [UInt8](signed.encoded()), retain: true))
        #expect(
            await eventually(timeout: 15) { outcomes().contains { !$0.applied && $0.outcome.version == 3 && $0.outcome.reason?.contains("idleTelemetryIntervalS") == true } },
            "\(outcomes())")
        await fleet.stopAll()
    }
}

extension OperatorTests {
    @Test("spectra-ctl trusts the broker no further than its keys: a retained document it cannot verify is not built on without --force, a lost one does not make the next version stale, and every push and stop is in the audit log")
    func operatorToolVerifies() async throws {
        let fleet = try await Fleet()
        try await fleet.start("gw-v", groups: ["clinic-v"])
        func applied() -> [ConfigOutcome] {
            fleet.events("gw-v").compactMap { if case .configApplied(let outcome) = $0 { outcome } else { nil } }
        }
        let body = try fleet.writeBody("v.yaml", "maxLevel: 2\n")
        let push = ["config", "push", "--broker", fleet.brokerURL, "--fleet", "demo", "--group", "clinic-v", "--file", body, "--key", fleet.privateKey]
        #expect(try await fleet.ctl(push).status == 0)
        #expect(await eventually(timeout: 15) { applied().contains { $0.version == 1 } })

        // The broker loses its retained document: the gateways' reported version still counts.
        try await fleet.witness.publish(OutgoingMessage(topic: "spectra/v1/demo/group/clinic-v/cmd/config", payload: [], retain: true))
        #expect(await eventually(timeout: 15) { fleet.received.elements.contains { $0.topic.hasSuffix("/state") && $0.topic.contains("gw-v") } })
        let again = try await fleet.ctl(push)
        #expect(again.status == 0 && again.out.contains("version 2"), "\(again)")
        #expect(await eventually(timeout: 15) { applied().contains { $0.version == 2 } }, "\(applied())")

        // A retained document signed by a key the operator does not know.
        let stranger = SigningKey()
        let forged = stranger.sign(DocumentPayload(
            kind: .config, fleet: try Identifier("demo"), target: .group(try Identifier("clinic-v")), version: 50, issuedAt: Date(),
            body: .config(ConfigBody(maxLevel: 1))).encoded())
        try await fleet.witness.publish(OutgoingMessage(
            topic: "spectra/v1/demo/group/clinic-v/cmd/config", payload: [UInt8](forged.encoded()), retain: true))
        let refused = try await fleet.ctl(push)
        #expect(refused.status != 0 && refused.err.contains("does not verify") && refused.err.contains("--force"), "\(refused)")
        let forced = try await fleet.ctl(push + ["--force"])
        #expect(forced.status == 0 && forced.out.contains("version 51"), "\(forced)")
        #expect(await eventually(timeout: 15) { applied().contains { $0.version == 51 } }, "\(applied())")

        #expect(try await fleet.ctl(["stop", "--broker", fleet.brokerURL, "--fleet", "demo", "--gateway", "gw-v", "--reason", "audit"]).status == 0)
        let log = try String(contentsOfFile: fleet.folder.appendingPathComponent("var/audit.jsonl").path, encoding: .utf8)
        let records = log.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(records.map { $0["action"] as? String ?? "" } == ["config.push", "config.push", "config.push", "stop"], "\(log)")
        #expect(records.prefix(3).map { $0["version"] as? Int ?? 0 } == [1, 2, 51])
        #expect(records.allSatisfy { ($0["sha256"] as? String)?.count == 64 && ($0["user"] as? String)?.contains("uid") == true }, "\(log)")
        #expect(records.last?["target"] as? String == "gateway:gw-v" && records.last?["detail"] as? String == "audit")
        #expect(records[2]["detail"] as? String == "published over an unverified retained document (--force)")
        await fleet.stopAll()
    }
}

extension OperatorTests {
    @Test("firmware publish signs manifests that expire (30 days unless --expires) and marks deliberate downgrades")
    func firmwareManifestsExpire() async throws {
        let folder = try TestEnvironment.temporaryDirectory("manifest")
        defer { try? FileManager.default.removeItem(at: folder) }
        let ctl = TestEnvironment.product("spectra-ctl")
        #expect(try await ChildProcess.run(ctl, ["keys", "generate", "--out", folder.path]).status == 0)
        let image = folder.appendingPathComponent("fw.bin")
        try Data((0..<1000).map { UInt8($0 % 256) }).write(to: image)
        func publish(_ extra: [String]) async throws -> DocumentPayload {
            let out = folder.appendingPathComponent("m-\(extra.count).json").path
            let result = try await ChildProcess.run(ctl, [
                "firmware", "publish", "--file", image.path, "--version", "2.6.0", "--url", "https://updates.example/fw.bin",
                "--key", folder.appendingPathComponent("signing.key").path, "--out", out,
            ] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            let signed = try SignedDocument.decode(try Data(contentsOf: URL(fileURLWithPath: out)))
            return try WireFormat.decode(DocumentPayload.self, from: try #require(Data(base64Encoded: signed.payload)))
        }
        let plain = try await publish([])
        let days = (plain.expiresAt?.timeIntervalSince(plain.issuedAt) ?? 0) / 86_400
        #expect(abs(days - 30) < 0.01, "\(String(describing: plain.expiresAt))")
        guard case .firmware(let manifest)? = plain.body else { Issue.record("not a manifest"); return }
        #expect(!manifest.allowDowngrade)
        let downgrade = try await publish(["--expires", "2h", "--allow-downgrade"])
        #expect(downgrade.expiresAt.map { abs($0.timeIntervalSince(downgrade.issuedAt) - 7200) < 1 } == true)
        if case .firmware(let manifest)? = downgrade.body { #expect(manifest.allowDowngrade) }
    }
}
