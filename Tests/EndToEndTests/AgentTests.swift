import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real `spectra-agent` binary against a real mosquitto, watched from a subscriber's side.
@Suite("spectra-agent run")
struct AgentTests {
    /// A running agent with its own folder and config, and a witness on the fleet's topics.
    final class Harness: Sendable {
        let broker: MosquittoBroker
        let folder: URL
        let config: String
        let witness: MQTTClient
        let received: Collector<MQTTMessage>
        let witnessStates: Collector<ConnectionState>
        let agent: Mutex<ChildProcess?> = Mutex(nil)

        init(timeScale: Int = 300, extra: String = "", profile: String? = nil, idleIntervalS: Double = 1) async throws {
            broker = try await MosquittoBroker()
            folder = try TestEnvironment.temporaryDirectory("agent")
            config = folder.appendingPathComponent("agent.yaml").path
            let root = TestEnvironment.packageRoot.path
            try """
                fleet: demo
                gateway: gw-0001
                groups: [clinic-a]
                dataDir: \(folder.path)/var
                mqtt:
                  url: mqtt://127.0.0.1:\(broker.port)
                  keepaliveS: 5
                telemetry:
                  intervalS: 0.5
                  idleIntervalS: \(idleIntervalS)
                session:
                  profile: \(profile ?? "\(root)/Config/calibration/default.yaml")
                  timeScale: \(timeScale)
                \(extra)
                """.write(toFile: config, atomically: true, encoding: .utf8)
            witness = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "witness", cleanStart: false, sessionExpirySeconds: 3600))
            received = Collector(witness.messages)
            witnessStates = Collector(witness.connectionEvents)
            try await witness.connect()
            try await witness.subscribe([Subscription("spectra/v1/demo/#")])
        }

        deinit { try? FileManager.default.removeItem(at: folder) }

        func startAgent() async throws {
            let earlier = Set(statusLines().map(\.boot))
            let child = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
            agent.withLock { $0 = child }
            #expect(
                await eventually(timeout: 20) { self.statusLines().contains { $0.online && !earlier.contains($0.boot) } },
                "no birth: \(child.standardError)")
        }

        func control(_ arguments: [String]) async throws -> (Int32?, String, String) {
            let result = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), arguments + ["--config", config])
            return (result.status, result.stdout, result.stderr)
        }

        /// The events received, in arrival order, with their seq and whether they were replayed.
        private func receivedEvents() -> [(epoch: UUID, seq: UInt64, event: Event, historical: Bool)] {
            received.elements.filter { $0.topic.hasSuffix("/event") }.compactMap { message in
                guard let envelope = try? Envelope.decode(Data(message.payload)), case .event(let event) = envelope.message else { return nil }
                return (envelope.epoch, envelope.seq, event, message.userProperty("historical") == "true")
            }
        }

        /// The events received, in the agent's order (by seq), each once.
        ///
        /// A message replayed after a reconnect may arrive after newer live ones, by design
        /// (live messages go first). And QoS 1 may deliver one twice: when the broker stops
        /// before it has the witness's PUBACK, the resumed session sends it again. Consumers
        /// dedupe on (epoch, seq), as the aggregator does, and so does this view.
        func events() -> [Event] {
            var seen = Set<String>()
            return receivedEvents().sorted { $0.seq < $1.seq }
                .filter { seen.insert("\($0.epoch)/\($0.seq)").inserted }
                .map(\.event)
        }

        /// The events in arrival order, with their seq and whether they were replayed.
        func arrivals() -> String {
            receivedEvents().map { "\($0.event.type.rawValue)#\($0.seq)\($0.historical ? " (historical)" : "")" }.joined(separator: ", ")
        }

        func eventTypes() -> [String] { events().map(\.type.rawValue) }

        /// What a failed expectation needs to be explained: the arrivals, the witness's
        /// connection history and the agent's log.
        func diagnostics() -> String {
            let states = witnessStates.elements.map { state -> String in
                switch state {
                case .connected(let sessionPresent): "connected(sessionPresent: \(sessionPresent))"
                case .disconnected(let reason): "disconnected(\(reason))"
                default: "\(state)"
                }
            }
            return "arrived: \(arrivals())\nwitness: \(states.joined(separator: ", "))\nagent log:\n\(process?.standardError.suffix(4000) ?? "")"
        }

        func statusLines() -> [GatewayStatus] {
            received.elements.filter { $0.topic.hasSuffix("/status") }.compactMap { try? WireFormat.decode(GatewayStatus.self, from: Data($0.payload)) }
        }

        var process: ChildProcess? { agent.withLock { $0 } }
    }

    @Test("a full session from the control socket: started, completed, telemetry between, regimen counted")
    func fullSession() async throws {
        let harness = try await Harness()
        try await harness.startAgent()
        let (status, out, err) = try await harness.control(["session", "start", "--level", "1"])
        #expect(status == 0, "\(err)")
        #expect(out.hasPrefix("started session s-"))
        #expect(await eventually(timeout: 20) { harness.eventTypes().contains("session.completed") })
        #expect(harness.eventTypes() == ["session.started", "session.completed"])
        let telemetry = harness.received.elements.filter { $0.topic.hasSuffix("/telemetry") }.compactMap { try? Envelope.decode(Data($0.payload)) }
        #expect(telemetry.contains { if case .telemetry(let body) = $0.message { body.sessionId != nil } else { false } })
        let seqs = harness.received.elements.filter { !$0.retain && ($0.topic.hasSuffix("/event") || $0.topic.hasSuffix("/telemetry")) }
            .compactMap { try? Envelope.decode(Data($0.payload)).seq }
        #expect(Set(seqs).count == seqs.count && seqs == seqs.sorted(), "seq unique and increasing")
        let (_, json, _) = try await harness.control(["status", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect(object?["completedSessions"] as? Int == 1)
        // A control command needs only where the agent keeps its socket, not a whole config.
        let bare = try await ChildProcess.run(
            TestEnvironment.product("spectra-agent"), ["status", "--json", "--set", "dataDir=\(harness.folder.path)/var"])
        #expect(bare.status == 0, "\(bare.stderr)")
        #expect((try JSONSerialization.jsonObject(with: Data(bare.stdout.utf8)) as? [String: Any])?["completedSessions"] as? Int == 1)
        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
    }

    @Test("in-session telemetry begins within one telemetry interval of the start, however long the idle interval; idle telemetry resumes after")
    func telemetryFollowsTheSession() async throws {
        let harness = try await Harness(timeScale: 1, idleIntervalS: 60)
        try await harness.startAgent()
        func telemetry() -> [Telemetry] {
            harness.received.elements.filter { $0.topic.hasSuffix("/telemetry") }.compactMap { message in
                guard case .telemetry(let body) = (try? Envelope.decode(Data(message.payload)))?.message else { return nil }
                return body
            }
        }
        #expect(await eventually(timeout: 10) { !telemetry().isEmpty }, "the first idle telemetry goes at start")
        try await Task.sleep(for: .seconds(1))
        let (status, _, err) = try await harness.control(["session", "start", "--level", "1"])
        #expect(status == 0, "\(err)")
        #expect(await eventually(timeout: 10) { telemetry().contains { $0.sessionId != nil } })
        // On the agent's own clock (the envelopes' timestamps), so that the delivery of a busy
        // machine does not count: the first in-session telemetry within an interval (0.5 s) or
        // so of session.started.
        let envelopes = harness.received.elements.compactMap { try? Envelope.decode(Data($0.payload)) }
        let startedAt = envelopes.first { if case .event(.sessionStarted) = $0.message { true } else { false } }?.timestamp
        let firstAt = envelopes.first { if case .telemetry(let body) = $0.message { body.sessionId != nil } else { false } }?.timestamp
        var delay: Double?
        if let startedAt, let firstAt { delay = firstAt.timeIntervalSince(startedAt) }
        #expect(delay.map { $0 < 1.5 } == true, "the first in-session telemetry was made \(String(describing: delay)) s after session.started (interval 0.5 s)")
        let (_, text, _) = try await harness.control(["status"])
        #expect(text.contains("connected: true") && text.contains("running: true"), "booleans print as words: \(text)")
        let (stopped, _, stopError) = try await harness.control(["session", "stop"])
        #expect(stopped == 0, "\(stopError)")
        #expect(await eventually(timeout: 15) { harness.eventTypes().contains("session.aborted") })
        // Within seconds, not the 60 s idle interval: telemetry after the session's last says idle.
        #expect(await eventually(timeout: 5) {
            let all = telemetry()
            guard let lastInSession = all.lastIndex(where: { $0.sessionId != nil }) else { return false }
            return all.indices.contains(lastInSession + 1)
        }, "idle telemetry goes as the session ends: \(telemetry().suffix(4).map { $0.sessionId?.rawValue ?? "idle" })")
        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
    }

    @Test("a safety trip is reported once per violation, not at every check of the ramp down after it")
    func oneTripPerViolation() async throws {
        let harness = try await Harness(timeScale: 100, extra: "headband:\n  faults: [short@session+20]\n")
        try await harness.startAgent()
        let (status, _, err) = try await harness.control(["session", "start", "--level", "1"])
        #expect(status == 0, "\(err)")
        #expect(await eventually(timeout: 20) { harness.eventTypes().contains("session.aborted") }, "\(harness.eventTypes())")
        try await Task.sleep(for: .milliseconds(500))
        let trips = harness.events().compactMap { event -> SafetyTrip? in if case .safetyTrip(let trip) = event { trip } else { nil } }
        #expect(trips.count == 1, "\(trips)")
        #expect(trips.first?.rule == "short")
        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
    }

    @Test("level change, pause on a scripted lift-off, resume, completed; the broker down for part of it loses nothing")
    func sessionThroughTrouble() async throws {
        let root = TestEnvironment.packageRoot.path
        let profileFolder = try TestEnvironment.temporaryDirectory("profile")
        defer { try? FileManager.default.removeItem(at: profileFolder) }
        let profilePath = profileFolder.appendingPathComponent("unlocked.yaml").path
        try String(contentsOfFile: "\(root)/Config/calibration/default.yaml", encoding: .utf8)
            .replacingOccurrences(of: "level2AfterSessions: 7, level3AfterSessions: 21", with: "level2AfterSessions: 0, level3AfterSessions: 0")
            .write(toFile: profilePath, atomically: true, encoding: .utf8)
        // The lift-off is timed from the session's start, so a slow agent start-up cannot move it
        // out of the session.
        let harness = try await Harness(timeScale: 100, extra: "headband:\n  faults: [liftoff@session+700+3]\n", profile: profilePath)
        try await harness.startAgent()
        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        try await Task.sleep(for: .seconds(1))
        let (status, out, err) = try await harness.control(["session", "level", "2"])
        #expect(status == 0, "\(err)")
        #expect(out.contains("level 2"))
        try await Task.sleep(for: .seconds(3))
        await harness.broker.stop()
        try await Task.sleep(for: .seconds(2))
        try await harness.broker.start()
        #expect(await eventually(timeout: 30) { harness.eventTypes().contains("session.completed") })
        // The level change lands whenever the control command gets through: on a loaded machine
        // that can be after the lift-off (700 s into the session is 7 s here), so its place is not fixed.
        let types = harness.eventTypes()
        #expect(
            types.filter { $0 != "session.level_changed" } == ["session.started", "session.paused", "session.resumed", "session.completed"]
                && types.filter { $0 == "session.level_changed" }.count == 1 && types.first == "session.started",
            "\(harness.diagnostics())")
        let events = harness.events()
        let change = events.lazy.compactMap { if case .sessionLevelChanged(let change) = $0 { change } else { nil } }.first
        #expect(change?.from == 1 && change?.to == 2)
        let pause = events.lazy.compactMap { if case .sessionPaused(let pause) = $0 { pause } else { nil } }.first
        #expect(pause?.reason == "contact_lost")
        // Nothing lost: every seq of this epoch up to the last one arrived (telemetry included).
        let envelopes = harness.received.elements.filter { $0.topic.hasSuffix("/event") || $0.topic.hasSuffix("/telemetry") }
            .compactMap { try? Envelope.decode(Data($0.payload)) }
        let seqs = Set(envelopes.map(\.seq))
        let highest = try #require(seqs.max())
        #expect(seqs == Set(1...highest), "missing: \(Set(1...highest).subtracting(seqs).sorted().prefix(10))")
        #expect(
            harness.received.elements.contains { $0.userProperty("historical") == "true" },
            "what queued during the outage is flagged historical")
        harness.process?.send(SIGTERM)
        await harness.process?.wait()
    }

    @Test("firmware: a wrong hash is refused; a good image installs only after the running session ends")
    func firmware() async throws {
        let keyFolder = try TestEnvironment.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: keyFolder) }
        let key = SigningKey()
        let publicPath = keyFolder.appendingPathComponent("operator.pub").path
        try key.verifyingKey.pem.write(toFile: publicPath, atomically: true, encoding: .utf8)
        let image = (0..<50_000).map { UInt8($0 % 251) }
        let server = try StaticHTTPServer(files: ["/sculpt-2.5.0.bin": image])
        let harness = try await Harness(timeScale: 60, extra: "trust:\n  keys: [\(publicPath)]\n")
        try await harness.startAgent()
        let publisher = MQTTClient(MQTTConfiguration(port: harness.broker.port, clientID: "operator"))
        try await publisher.connect()
        let fleet = try Identifier("demo")
        let gateway = try Identifier("gw-0001")
        func push(sha256: String, version: Int) async throws {
            let manifest = FirmwareManifest(
                version: "2.5.0", url: server.url("/sculpt-2.5.0.bin"), sha256: sha256, sizeBytes: image.count, hardware: "sculpt-r2")
            let payload = DocumentPayload(kind: .firmware, fleet: fleet, target: .gateway(gateway), version: version, issuedAt: Date(), body: .firmware(manifest))
            try await publisher.publish(OutgoingMessage(
                topic: Topic.firmware(fleet: fleet, gateway: gateway).path, payload: [UInt8](key.sign(payload.encoded()).encoded()), retain: true))
        }
        func progress() -> [FirmwareProgress] {
            harness.events().compactMap { if case .firmwareProgress(let p) = $0 { p } else { nil } }
        }
        func mapsHTTPStack() throws -> Bool {
            let pid = try #require(harness.process?.pid)
            // Read to the end: /proc files report a size of 0.
            let maps = try #require(FileHandle(forReadingAtPath: "/proc/\(pid)/maps")).readToEnd() ?? Data()
            return String(decoding: maps, as: UTF8.self).contains("libcurl")
        }
        #expect(try !mapsHTTPStack(), "an agent that has downloaded nothing does not carry the HTTP stack")
        try await push(sha256: String(repeating: "0", count: 64), version: 1)
        #expect(await eventually { progress().contains { $0.stage == .rejected } })
        #expect(try mapsHTTPStack(), "it is loaded for the first download")
        #expect(progress().last?.detail?.contains("sha256 mismatch") == true)

        #expect(try await harness.control(["session", "start"]).0 == 0)
        try await push(sha256: await Self.sha256(image), version: 2)
        #expect(await eventually { progress().contains { $0.stage == .verified } })
        try await Task.sleep(for: .milliseconds(500))
        #expect(!progress().contains { $0.stage == .installing }, "no install while a session runs")
        #expect(await eventually(timeout: 30) { progress().contains { $0.stage == .installed } })
        let all = progress().map(\.stage)
        #expect(all == [.received, .downloading, .rejected, .received, .downloading, .verified, .installing, .installed])
        let sessionEnd = try #require(harness.eventTypes().firstIndex(of: "session.completed"))
        let installing = try #require(harness.events().firstIndex { if case .firmwareProgress(let p) = $0 { p.stage == .installing } else { false } })
        #expect(installing > sessionEnd)
        #expect(await eventually {
            harness.received.elements.filter { $0.topic.hasSuffix("/state") }
                .compactMap { try? WireFormat.decode(ReportedState.self, from: Data($0.payload)) }.last?.firmware == "2.5.0"
        }, "the retained state reports the new firmware")
        harness.process?.send(SIGTERM)
        await harness.process?.wait()
    }

    @Test("firmware: an install that fails its boot check rolls back and the old version keeps running")
    func firmwareRollback() async throws {
        let keyFolder = try TestEnvironment.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: keyFolder) }
        let key = SigningKey()
        let publicPath = keyFolder.appendingPathComponent("operator.pub").path
        try key.verifyingKey.pem.write(toFile: publicPath, atomically: true, encoding: .utf8)
        let image = (0..<20_000).map { UInt8($0 % 7) }
        let server = try StaticHTTPServer(files: ["/bad.bin": image])
        let harness = try await Harness(extra: "trust:\n  keys: [\(publicPath)]\nheadband:\n  faults: [fwfail@0]\n")
        try await harness.startAgent()
        let publisher = MQTTClient(MQTTConfiguration(port: harness.broker.port, clientID: "operator"))
        try await publisher.connect()
        let fleet = try Identifier("demo")
        let gateway = try Identifier("gw-0001")
        let manifest = FirmwareManifest(version: "9.9.9", url: server.url("/bad.bin"), sha256: try await Self.sha256(image), sizeBytes: image.count, hardware: "sculpt-r2")
        let payload = DocumentPayload(kind: .firmware, fleet: fleet, target: .gateway(gateway), version: 1, issuedAt: Date(), body: .firmware(manifest))
        try await publisher.publish(OutgoingMessage(
            topic: Topic.firmware(fleet: fleet, gateway: gateway).path, payload: [UInt8](key.sign(payload.encoded()).encoded()), retain: true))
        func stages() -> [FirmwareProgress.Stage] {
            harness.events().compactMap { if case .firmwareProgress(let p) = $0 { p.stage } else { nil } }
        }
        #expect(await eventually(timeout: 20) { stages().contains(.rolledBack) })
        #expect(stages() == [.received, .downloading, .verified, .installing, .failed, .rolledBack])
        let (_, json, _) = try await harness.control(["status", "--json"])
        #expect(json.contains("\"ok\":true"))
        let lastState = harness.received.elements.filter { $0.topic.hasSuffix("/state") }
            .compactMap { try? WireFormat.decode(ReportedState.self, from: Data($0.payload)) }.last
        #expect(lastState?.firmware == "2.4.0")
        harness.process?.send(SIGTERM)
        await harness.process?.wait()
    }

    static func sha256(_ bytes: [UInt8]) async throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("img-\(UUID().uuidString)")
        try Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        return String(try await ChildProcess.run("/usr/bin/sha256sum", [file.path]).stdout.prefix(64))
    }

    @Test("a short press on the headband's button starts a session (the local start besides the control socket)")
    func buttonStarts() async throws {
        let harness = try await Harness(timeScale: 100, extra: "headband:\n  faults: [press@100]\n")
        try await harness.startAgent()
        #expect(await eventually(timeout: 15) { harness.eventTypes().contains("session.started") })
        if case .sessionStarted(let body)? = harness.events().first(where: { $0.type.rawValue == "session.started" }) {
            #expect(body.requestedBy == "button", "who asked is recorded")
        }
        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
        #expect(await eventually { harness.eventTypes().last == "session.aborted" })
        if case .sessionAborted(let summary) = harness.events().last { #expect(summary.reason == .agentShutdown) }
    }

    @Test("the control socket is the agent's user's alone (0600, peer credentials checked), and every start, level change and stop records who asked")
    func localControlIsOwned() async throws {
        let profileFolder = try TestEnvironment.temporaryDirectory("profile")
        defer { try? FileManager.default.removeItem(at: profileFolder) }
        let profilePath = profileFolder.appendingPathComponent("unlocked.yaml").path
        try String(contentsOfFile: "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml", encoding: .utf8)
            .replacingOccurrences(of: "level2AfterSessions: 7, level3AfterSessions: 21", with: "level2AfterSessions: 0, level3AfterSessions: 0")
            .write(toFile: profilePath, atomically: true, encoding: .utf8)
        let harness = try await Harness(timeScale: 20, profile: profilePath)
        try await harness.startAgent()
        let socket = harness.folder.appendingPathComponent("var/agent.sock").path
        let attributes = try FileManager.default.attributesOfItem(atPath: socket)
        #expect((attributes[.posixPermissions] as? Int).map { $0 & 0o777 } == 0o600)
        let me = "local:uid=\(getuid())"

        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await harness.control(["session", "level", "2"]).0 == 0)
        #expect(await eventually(timeout: 15) { harness.eventTypes().contains("session.level_changed") })
        #expect(try await harness.control(["session", "stop"]).0 == 0)
        #expect(await eventually(timeout: 15) { harness.eventTypes().contains("session.aborted") }, "\(harness.diagnostics())")
        for event in harness.events() {
            switch event {
            case .sessionStarted(let body): #expect(body.requestedBy == me)
            case .sessionLevelChanged(let body): #expect(body.requestedBy == me)
            case .sessionAborted(let summary): #expect(summary.reason == .userStop && summary.requestedBy == me)
            default: break
            }
        }
        #expect(harness.process?.standardError.contains("by=\(me)") == true, "and the log says who")

        // Another user cannot even start a command.
        if getuid() == 0, let setpriv = TestEnvironment.executable("setpriv") {
            let stranger = try await ChildProcess.run(
                setpriv, ["--reuid", "65534", "--regid", "65534", "--clear-groups", TestEnvironment.product("spectra-agent"), "session", "start",
                          "--config", harness.config])
            #expect(stranger.status != 0, "\(stranger)")
            #expect(!harness.eventTypes().dropFirst(3).contains("session.started"))
        }
        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
    }

    @Test("SIGTERM mid-session ends it as agent_shutdown and marks the gateway offline; SIGKILL gives agent_restart on the next start")
    func shutdownAndKill() async throws {
        let harness = try await Harness(timeScale: 5)
        try await harness.startAgent()
        #expect(try await harness.control(["session", "start"]).0 == 0)
        try await Task.sleep(for: .milliseconds(500))
        harness.process?.send(SIGTERM)
        #expect(await harness.process?.wait(timeout: 15) == 0)
        #expect(await eventually { harness.eventTypes().contains("session.aborted") })
        if case .sessionAborted(let summary) = harness.events().last { #expect(summary.reason == .agentShutdown) }
        #expect(harness.statusLines().last?.online == false)

        try await harness.startAgent()
        #expect(try await harness.control(["session", "start"]).0 == 0)
        try await Task.sleep(for: .seconds(7))  // past the journal's first checkpoint
        harness.process?.send(SIGKILL)
        await harness.process?.wait()
        #expect(await eventually { harness.statusLines().last?.reason == "lost" }, "the Will marks it offline")
        try await harness.startAgent()
        #expect(await eventually { harness.events().contains { if case .sessionAborted(let s) = $0 { s.reason == .agentRestart } else { false } } })
        let (_, json, _) = try await harness.control(["status", "--json"])
        #expect((try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])?["running"] as? Bool == false, "never resumes by itself")
        harness.process?.send(SIGTERM)
        await harness.process?.wait()
    }

    @Test("remote stop from the broker; a signed config applies, an unknown key and 1200 uA are rejected")
    func remoteControl() async throws {
        let keyFolder = try TestEnvironment.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: keyFolder) }
        let key = SigningKey()
        let publicPath = keyFolder.appendingPathComponent("operator.pub").path
        try key.verifyingKey.pem.write(toFile: publicPath, atomically: true, encoding: .utf8)
        let harness = try await Harness(timeScale: 5, extra: "trust:\n  keys: [\(publicPath)]\n")
        try await harness.startAgent()
        let publisher = MQTTClient(MQTTConfiguration(port: harness.broker.port, clientID: "operator"))
        try await publisher.connect()
        let fleet = try Identifier("demo")
        let gateway = try Identifier("gw-0001")
        func push(_ body: ConfigBody, version: Int, signer: SigningKey) async throws {
            let payload = DocumentPayload(kind: .config, fleet: fleet, target: .gateway(gateway), version: version, issuedAt: Date(), body: .config(body))
            try await publisher.publish(OutgoingMessage(
                topic: Topic.gatewayConfig(fleet: fleet, gateway: gateway).path, payload: [UInt8](signer.sign(payload.encoded()).encoded()), retain: true))
        }
        try await push(ConfigBody(maxLevel: 1), version: 1, signer: SigningKey())
        try await push(ConfigBody(levels: [.init(level: 3, peakMicroAmps: 1200)]), version: 2, signer: key)
        try await push(ConfigBody(maxLevel: 2), version: 3, signer: key)
        #expect(await eventually { harness.eventTypes().filter { $0.hasPrefix("config.") }.count == 3 })
        let outcomes = harness.events().compactMap { event -> (String, Int, String?)? in
            switch event {
            case .configApplied(let o): ("applied", o.version, nil)
            case .configRejected(let o): ("rejected", o.version, o.reason)
            default: nil
            }
        }
        #expect(outcomes.map(\.0) == ["rejected", "rejected", "applied"])
        #expect(outcomes[0].2?.contains("unknownKeyID") == true)
        #expect(outcomes[1].2?.contains("1000 uA") == true)
        #expect(outcomes[2].1 == 3)

        #expect(try await harness.control(["session", "start"]).0 == 0)
        try await Task.sleep(for: .milliseconds(300))
        try await publisher.publish(OutgoingMessage(
            topic: Topic.stop(fleet: fleet, gateway: gateway).path, payload: [UInt8](WireFormat.encode(StopCommand(reason: "operator")))))
        #expect(await eventually { harness.eventTypes().contains("session.aborted") })
        if case .sessionAborted(let summary) = harness.events().last { #expect(summary.reason == .remoteStop) }
        harness.process?.send(SIGTERM)
        await harness.process?.wait()
    }
}

import Synchronization

extension AgentTests {
    @Test("a broker that refuses the agent: the log says why once, not at every retry, and status shows the link down with the reason")
    func refusedByBroker() async throws {
        let broker = try await MosquittoBroker(extraConfig: "allow_anonymous false\n")
        let folder = try TestEnvironment.temporaryDirectory("agent-refused")
        defer { try? FileManager.default.removeItem(at: folder) }
        let config = try writeAgentConfig(in: folder, broker: broker.url)
        let agent = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        func said() -> [Substring] { agent.standardError.split(separator: "\n").filter { $0.contains("cannot connect to the broker") } }
        #expect(await eventually(timeout: 15) { !said().isEmpty }, "\(agent.standardError)")
        try await Task.sleep(for: .seconds(4))  // several retries with the same cause
        #expect(said().count == 1, "\(said())")
        #expect(said().first?.contains("not authori") == true, "the reason is the broker's: \(said())")
        let status = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), ["status", "--config", config])
        #expect(status.stdout.contains("link: down") && status.stdout.contains("connected: false"), "\(status.stdout)")
        #expect(status.stdout.contains("lastError:") && status.stdout.contains("not authori"), "\(status.stdout)")
        agent.send(SIGTERM)
        #expect(await agent.wait(timeout: 15) == 0)
        await broker.stop()
    }
}

extension AgentTests {
    @Test("messages the broker refuses are set aside, counted, said once per cause, reported in status and the retained state, and delivered after the ACL is fixed and the agent restarted")
    func refusedPublishesAreKept() async throws {
        let folder = try TestEnvironment.temporaryDirectory("agent-acl")
        defer { try? FileManager.default.removeItem(at: folder) }
        let acl = folder.appendingPathComponent("acl").path
        // The gateway may publish its presence, nothing else; the witness reads everything.
        try """
            topic read spectra/v1/demo/#
            topic write spectra/v1/demo/gw/gw-0001/status
            topic write spectra/v1/demo/gw/gw-0001/state

            """.write(toFile: acl, atomically: true, encoding: .utf8)
        let broker = try await MosquittoBroker(extraConfig: "acl_file \(acl)\n")
        let config = try writeAgentConfig(
            in: folder, broker: broker.url, mqtt: ["keepaliveS: 5"], telemetry: (0.2, 1), timeScale: 300)
        let witness = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "witness", cleanStart: false, sessionExpirySeconds: 3600))
        let received = Collector(witness.messages)
        try await witness.connect()
        try await witness.subscribe([Subscription("spectra/v1/demo/#")])
        func control(_ arguments: [String]) async throws -> String {
            try await ChildProcess.run(TestEnvironment.product("spectra-agent"), arguments + ["--config", config]).stdout
        }
        let first = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { first.send(SIGKILL) }
        #expect(await eventually(timeout: 20) { (try? await control(["status"]))?.contains("link: up") == true })
        _ = try await control(["session", "start", "--level", "1"])
        var status = ""
        let counted = await eventually(timeout: 30) {
            status = (try? await control(["status"])) ?? ""
            return status.contains("outboxRefusedStored:") && !status.contains("outboxRefusedStored: 0")
        }
        #expect(counted, "\(status)\n\(first.standardError.suffix(2000))")
        #expect(status.contains("lastRefusal: Not authorized"), "\(status)")
        try await Task.sleep(for: .seconds(4))  // a session's events and many telemetry messages, all refused
        let said = first.standardError.split(separator: "\n").filter { $0.contains("the broker refused a message") }
        #expect(said.count == 2, "once per reason and topic (event, telemetry): \(said)")
        let states = received.elements.filter { $0.topic.hasSuffix("/state") }.compactMap {
            try? WireFormat.decode(ReportedState.self, from: Data($0.payload))
        }
        #expect(states.contains { ($0.outboxRefused ?? 0) > 0 && $0.lastRefusal?.contains("Not authorized") == true }, "\(states)")
        #expect(!received.elements.contains { $0.topic.hasSuffix("/event") }, "nothing got through the ACL")
        first.send(SIGTERM)
        #expect(await first.wait(timeout: 20) == 0)

        // The ACL fixed and the agent started again: what was refused is delivered.
        try "topic readwrite spectra/v1/demo/#\n".write(toFile: acl, atomically: true, encoding: .utf8)
        try await broker.restart()
        #expect(await eventually(timeout: 30) { witness.isConnected })
        let second = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { second.send(SIGKILL) }
        func eventTypes() -> [String] {
            received.elements.filter { $0.topic.hasSuffix("/event") }.compactMap { message in
                guard let envelope = try? Envelope.decode(Data(message.payload)), case .event(let event) = envelope.message else { return nil }
                return event.type.rawValue
            }
        }
        // The session ended while refused: completed, or aborted by the SIGTERM when the machine is slow.
        let delivered = await eventually(timeout: 30) {
            eventTypes().contains("session.started") && !Set(eventTypes()).isDisjoint(with: ["session.completed", "session.aborted"])
        }
        #expect(delivered, "\(eventTypes())\n\(second.standardError.suffix(2000))")
        #expect(second.standardError.contains("messages the broker had refused are queued again"), "\(second.standardError.suffix(2000))")
        second.send(SIGTERM)
        let secondStopped = ContinuousClock.now
        let exitStatus = await second.wait(timeout: 20)
        #expect(exitStatus == 0, "exit \(exitStatus.map(String.init) ?? "none: killed after 20 s"), \(ContinuousClock.now - secondStopped)\n\(second.standardError.suffix(3000))")
        await witness.disconnect()
        await broker.stop()
    }
}

extension AgentTests {
    @Test("firmware integrity: an older image is refused unless signed as a downgrade; a download that fails is retried; a manifest arriving during an update is kept; the staged name is sanitised and old images removed")
    func firmwareIntegrity() async throws {
        let keyFolder = try TestEnvironment.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: keyFolder) }
        let key = SigningKey()
        let publicPath = keyFolder.appendingPathComponent("operator.pub").path
        try key.verifyingKey.pem.write(toFile: publicPath, atomically: true, encoding: .utf8)
        let image = (0..<40_000).map { UInt8($0 % 253) }
        let older = (0..<30_000).map { UInt8($0 % 241) }
        // The new image's server is down for its first two requests.
        let server = try StaticHTTPServer(routes: ["/new.bin": .unavailable(failures: 2, then: image), "/old.bin": .body(older)])
        let harness = try await Harness(extra: "trust:\n  keys: [\(publicPath)]\n")
        try await harness.startAgent()
        let publisher = MQTTClient(MQTTConfiguration(port: harness.broker.port, clientID: "operator"))
        try await publisher.connect()
        let fleet = try Identifier("demo")
        let gateway = try Identifier("gw-0001")
        func push(_ manifest: FirmwareManifest, version: Int) async throws {
            let payload = DocumentPayload(kind: .firmware, fleet: fleet, target: .gateway(gateway), version: version, issuedAt: Date(), body: .firmware(manifest))
            try await publisher.publish(OutgoingMessage(
                topic: Topic.firmware(fleet: fleet, gateway: gateway).path, payload: [UInt8](key.sign(payload.encoded()).encoded()), retain: true))
        }
        func progress() -> [FirmwareProgress] { harness.events().compactMap { if case .firmwareProgress(let p) = $0 { p } else { nil } } }

        // Older than the installed 2.4.0: refused as a rollback.
        let oldManifest = FirmwareManifest(
            version: "2.3.9", url: server.url("/old.bin"), sha256: try await Self.sha256(older), sizeBytes: older.count, hardware: "sculpt-r2")
        try await push(oldManifest, version: 1)
        #expect(await eventually { progress().contains { $0.stage == .rejected && $0.detail?.hasPrefix("rollback") == true } }, "\(progress())")

        // A newer one whose server fails twice: retried, then installed. A hostile version
        // string does not escape the staging folder.
        let newManifest = FirmwareManifest(
            version: "2.10.0/../../x", url: server.url("/new.bin"), sha256: try await Self.sha256(image), sizeBytes: image.count, hardware: "sculpt-r2")
        try await push(newManifest, version: 2)
        // While it retries, a signed downgrade arrives: it is handled after, not dropped.
        try await Task.sleep(for: .milliseconds(500))
        try await push(FirmwareManifest(
            version: "2.3.9", url: server.url("/old.bin"), sha256: try await Self.sha256(older), sizeBytes: older.count, hardware: "sculpt-r2",
            allowDowngrade: true), version: 3)
        #expect(await eventually(timeout: 40) { progress().filter { $0.stage == .installed }.count == 2 }, "\(progress())")
        let stages = progress().map { "\($0.version):\($0.stage.rawValue)" }
        #expect(stages.filter { $0 == "2.10.0/../../x:downloading" }.count == 3, "two retries: \(stages)")
        #expect(stages.firstIndex(of: "2.10.0/../../x:installed")! < stages.firstIndex(of: "2.3.9:installed")!, "\(stages)")
        let staging = harness.folder.appendingPathComponent("var/firmware")
        let staged = try FileManager.default.contentsOfDirectory(atPath: staging.path)
        #expect(staged == ["headband-2.3.9.bin"], "the older staged image is removed, names are sanitised: \(staged)")
        #expect(!FileManager.default.fileExists(atPath: harness.folder.appendingPathComponent("x").path))
        harness.process?.send(SIGTERM)
        await harness.process?.wait()
    }
}

extension AgentTests {
    @Test("SIGTERM while the broker hangs mid-drain: the agent exits cleanly within its drain deadline, and after a restart every message it had accepted is delivered (no gap in seq)")
    func stopWhileBrokerHangs() async throws {
        let folder = try TestEnvironment.temporaryDirectory("agent-hang")
        defer { try? FileManager.default.removeItem(at: folder) }
        let broker = try await MosquittoBroker()
        let config = try writeAgentConfig(in: folder, broker: broker.url, mqtt: ["keepaliveS: 30"], telemetry: (0.1, 1), timeScale: 60)
        let witness = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "witness", cleanStart: false, sessionExpirySeconds: 3600))
        let received = Collector(witness.messages)
        try await witness.connect()
        try await witness.subscribe([Subscription("spectra/v1/demo/gw/+/telemetry"), Subscription("spectra/v1/demo/gw/+/event")])
        func seqs() -> Set<UInt64> {
            Set(received.elements.compactMap { message in (try? Envelope.decode(Data(message.payload)))?.seq })
        }
        let first = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { first.send(SIGKILL) }
        #expect(await eventually(timeout: 20) { !seqs().isEmpty })
        _ = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), ["session", "start", "--level", "1", "--config", config])
        #expect(await eventually(timeout: 20) { seqs().count >= 10 })
        // The broker stops answering (acknowledging nothing) while the agent keeps producing.
        broker.pause()
        try await Task.sleep(for: .seconds(2))
        first.send(SIGTERM)
        let stopped = ContinuousClock.now
        #expect(await first.wait(timeout: 20) == 0, "\(first.standardError.suffix(2000))")
        #expect(ContinuousClock.now - stopped < .seconds(15), "the drain is bounded when the broker hangs")
        broker.resume()

        let second = try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        defer { second.send(SIGKILL) }
        // Everything the first run accepted arrives: seqs 1...n with no gap, n past the pause.
        let complete = await eventually(timeout: 30) {
            let got = seqs()
            guard let top = got.max(), top > 30 else { return false }
            return got.count == Int(top)
        }
        let got = seqs()
        let missing = (1...(got.max() ?? 1)).filter { !got.contains($0) }
        #expect(complete, "missing seqs: \(missing.prefix(40))\n\(second.standardError.suffix(1500))")
        // Stopped once it runs (a SIGTERM before its services start ends it at once, as the
        // signal's default does, which the first run covers).
        #expect(await eventually(timeout: 20) { second.standardError.contains("connected to the broker") }, "\(second.standardError)")
        second.send(SIGTERM)
        let secondStopped = ContinuousClock.now
        let exitStatus = await second.wait(timeout: 20)
        #expect(exitStatus == 0, "exit \(exitStatus.map(String.init) ?? "none: killed after 20 s"), \(ContinuousClock.now - secondStopped)\n\(second.standardError.suffix(3000))")
        await witness.disconnect()
        await broker.stop()
    }
}
