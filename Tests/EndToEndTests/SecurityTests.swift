import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

/// The production broker configuration (Deploy/mosquitto/production.conf) with certificates and
/// ACL from Deploy/pki/make-pki.sh, on a real mosquitto.
@Suite("Production broker security", .serialized)
struct SecurityTests {
    final class SecureBroker: Sendable {
        let pki: URL
        let otherPKI: URL
        let broker: MosquittoBroker

        init() async throws {
            pki = try TestEnvironment.temporaryDirectory("pki")
            otherPKI = try TestEnvironment.temporaryDirectory("pki-other")
            let script = TestEnvironment.packageRoot.appendingPathComponent("Deploy/pki/make-pki.sh").path
            let made = try await ChildProcess.run(
                "/bin/bash", [script, pki.path, "demo", "gw-a:clinic-a", "gw-b"],
                environment: ["EXPIRED": "gw-old", "BROKER_SAN": "DNS:localhost"], timeout: 60)
            guard made.status == 0 else { throw TestEnvironmentError("make-pki failed: \(made.stderr)") }
            let other = try await ChildProcess.run("/bin/bash", [script, otherPKI.path, "demo", "gw-a"], timeout: 60)
            guard other.status == 0 else { throw TestEnvironmentError("make-pki (second CA) failed: \(other.stderr)") }
            // The production file, pointed at this test's files and port.
            let production = try String(
                contentsOf: TestEnvironment.packageRoot.appendingPathComponent("Deploy/mosquitto/production.conf"), encoding: .utf8)
            // The harness already sets where persistence and logs go (a folder of the test's own).
            let harnessKeys = ["per_listener_settings", "persistence", "persistence_location", "autosave_interval", "log_dest",
                               "max_queued_messages", "max_inflight_messages"]
            let config = production
                .replacingOccurrences(of: "/etc/mosquitto/spectra", with: pki.path)
                .replacingOccurrences(of: "listener 8883", with: "listener {PORT} 127.0.0.1")
                .split(separator: "\n", omittingEmptySubsequences: false)
                .filter { line in !harnessKeys.contains(String(line.split(separator: " ").first ?? "")) }
                .joined(separator: "\n")
            broker = try await MosquittoBroker(extraConfig: config, listener: false)
        }

        deinit {
            try? FileManager.default.removeItem(at: pki)
            try? FileManager.default.removeItem(at: otherPKI)
        }

        func file(_ name: String, in folder: URL? = nil) -> String { (folder ?? pki).appendingPathComponent(name).path }

        func client(_ identity: String, host: String = "localhost", ca: String? = nil, certificateFolder: URL? = nil) -> MQTTClient {
            MQTTClient(MQTTConfiguration(
                host: host, port: broker.port, clientID: "\(identity)-\(UUID().uuidString.prefix(6))",
                tls: .init(
                    caFile: ca ?? file("ca.crt"), certFile: file("\(identity).crt", in: certificateFolder),
                    keyFile: file("\(identity).key", in: certificateFolder)),
                backoff: Backoff(minimumSeconds: 0.2, maximumSeconds: 1)))
        }
    }

    @Test("a gateway cannot publish as another, read another's commands, or write any command; strangers cannot connect")
    func aclAndCertificates() async throws {
        let secure = try await SecureBroker()
        let operatorClient = secure.client("spectra-operator")
        try await operatorClient.connect()
        let seen = Collector(operatorClient.messages)
        _ = try await operatorClient.subscribe([Subscription("spectra/v1/demo/#")])

        // The aggregator's identity reads events through its shared subscription.
        let aggregator = secure.client("spectra-aggregator")
        try await aggregator.connect()
        let aggregated = Collector(aggregator.messages)
        _ = try await aggregator.subscribe([Subscription("$share/aggregators/spectra/v1/demo/gw/+/event")])

        let gwA = secure.client("gw-a")
        try await gwA.connect()
        let aReceived = Collector(gwA.messages)
        _ = try await gwA.subscribe([
            Subscription("spectra/v1/demo/gw/gw-a/cmd/#"), Subscription("spectra/v1/demo/gw/gw-b/cmd/#"),
            Subscription("spectra/v1/demo/group/clinic-a/cmd/config"), Subscription("spectra/v1/demo/group/clinic-b/cmd/config"),
        ])

        // Its own topics work.
        try await gwA.publish(OutgoingMessage(topic: "spectra/v1/demo/gw/gw-a/event", payload: Array("own".utf8)))
        #expect(await eventually { seen.elements.contains { $0.topic == "spectra/v1/demo/gw/gw-a/event" } })
        #expect(await eventually { aggregated.elements.contains { $0.topic == "spectra/v1/demo/gw/gw-a/event" } })
        // Publishing as gw-b, or any command (retained config included), never reaches anyone.
        for topic in ["spectra/v1/demo/gw/gw-b/event", "spectra/v1/demo/gw/gw-b/status", "spectra/v1/demo/all/cmd/config",
                      "spectra/v1/demo/gw/gw-a/cmd/config", "spectra/v1/demo/group/clinic-a/cmd/config", "spectra/v1/demo/stats/summary"] {
            try? await gwA.publish(OutgoingMessage(topic: topic, payload: Array("forged".utf8), retain: true))
        }
        // Commands: its own and its group's arrive; gw-b's and another group's do not.
        for topic in ["spectra/v1/demo/gw/gw-a/cmd/stop", "spectra/v1/demo/gw/gw-b/cmd/stop",
                      "spectra/v1/demo/group/clinic-a/cmd/config", "spectra/v1/demo/group/clinic-b/cmd/config"] {
            try await operatorClient.publish(OutgoingMessage(topic: topic, payload: Array("{\"reason\":\"test\"}".utf8)))
        }
        #expect(await eventually { aReceived.elements.count >= 2 })
        try await Task.sleep(for: .milliseconds(500))
        #expect(Set(aReceived.elements.map(\.topic)) == ["spectra/v1/demo/gw/gw-a/cmd/stop", "spectra/v1/demo/group/clinic-a/cmd/config"])
        #expect(!seen.elements.contains { String(decoding: $0.payload, as: UTF8.self) == "forged" }, "forged messages are dropped")
        // Nothing forged was retained: a fresh reader of the command topics finds nothing. (The
        // operator's identity is its client id: the first connection goes before the second
        // comes, or they would take the session from each other.)
        await operatorClient.disconnect()
        let reader = secure.client("spectra-operator")
        try await reader.connect()
        let retained = Collector(reader.messages)
        _ = try await reader.subscribe([Subscription("spectra/v1/demo/#")])
        try await Task.sleep(for: .milliseconds(500))
        #expect(!retained.elements.contains { $0.retain && String(decoding: $0.payload, as: UTF8.self) == "forged" })

        // Strangers: no certificate, an expired one, one from another CA.
        let anonymous = MQTTClient(MQTTConfiguration(
            host: "localhost", port: secure.broker.port, clientID: "anonymous", tls: .init(caFile: secure.file("ca.crt"))))
        await #expect(throws: MQTTError.self) { try await anonymous.connect() }
        let expired = secure.client("gw-old")
        await #expect(throws: MQTTError.self) { try await expired.connect() }
        let foreign = secure.client("gw-a", certificateFolder: secure.otherPKI)
        await #expect(throws: MQTTError.self) { try await foreign.connect() }

        #expect(!aggregated.elements.contains { String(decoding: $0.payload, as: UTF8.self) == "forged" })
        await reader.disconnect()
        await aggregator.disconnect()
        await gwA.disconnect()
        await operatorClient.disconnect()
        await secure.broker.stop()
    }

    @Test("the agent connects with its certificate, and refuses a broker whose CA or name is wrong")
    func agentTLS() async throws {
        let secure = try await SecureBroker()
        let folder = try TestEnvironment.temporaryDirectory("agent-tls")
        defer { try? FileManager.default.removeItem(at: folder) }
        let watcher = secure.client("spectra-operator")
        try await watcher.connect()
        let seen = Collector(watcher.messages)
        _ = try await watcher.subscribe([Subscription("spectra/v1/demo/gw/+/status")])

        func runAgent(host: String, ca: String, name: String) async throws -> ChildProcess {
            let config = folder.appendingPathComponent("\(name).yaml").path
            try """
                fleet: demo
                gateway: gw-a
                dataDir: \(folder.path)/\(name)
                mqtt:
                  url: mqtts://\(host):\(secure.broker.port)
                  keepaliveS: 5
                  tls:
                    caFile: \(ca)
                    certFile: \(secure.file("gw-a.crt"))
                    keyFile: \(secure.file("gw-a.key"))
                session:
                  profile: \(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml
                """.write(toFile: config, atomically: true, encoding: .utf8)
            return try ChildProcess(TestEnvironment.product("spectra-agent"), ["run", "--config", config])
        }
        func online() -> Bool {
            seen.elements.contains { (try? WireFormat.decode(GatewayStatus.self, from: Data($0.payload)))?.online == true }
        }

        let wrongCA = try await runAgent(host: "localhost", ca: secure.file("ca.crt", in: secure.otherPKI), name: "wrong-ca")
        let wrongName = try await runAgent(host: "127.0.0.1", ca: secure.file("ca.crt"), name: "wrong-name")
        try await Task.sleep(for: .seconds(4))
        #expect(!online(), "neither agent may get through")
        for agent in [wrongCA, wrongName] {
            #expect(agent.isRunning, "a TLS failure is retried, not a crash")
            agent.send(SIGTERM)
            _ = await agent.wait(timeout: 15)
        }
        let good = try await runAgent(host: "localhost", ca: secure.file("ca.crt"), name: "good")
        #expect(await eventually(timeout: 20) { online() }, "with the right CA and name the agent comes online: \(good.standardError.suffix(300))")
        good.send(SIGTERM)
        #expect(await good.wait(timeout: 15) == 0)
        await watcher.disconnect()
        await secure.broker.stop()
    }
}

extension SecurityTests {
    @Test("the production broker offers TLS 1.3 and, under TLS 1.2, only AEAD suites with forward secrecy; CBC / SHA-1 suites and TLS 1.1 are refused")
    func cipherSuites() async throws {
        let secure = try await SecureBroker()
        let openssl = try #require(TestEnvironment.executable("openssl"))
        func handshake(_ options: [String]) async throws -> (ok: Bool, output: String) {
            let result = try await ChildProcess.run(
                openssl,
                ["s_client", "-connect", "localhost:\(secure.broker.port)", "-servername", "localhost", "-CAfile", secure.file("ca.crt"),
                 "-cert", secure.file("gw-a.crt"), "-key", secure.file("gw-a.key"), "-verify_return_error", "-brief"] + options,
                timeout: 30)
            let output = result.stdout + result.stderr
            return (result.status == 0 && output.contains("CONNECTION ESTABLISHED"), output)
        }
        let modern = try await handshake(["-tls1_3"])
        #expect(modern.ok && modern.output.contains("TLSv1.3"), "\(modern.output)")
        let aead = try await handshake(["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"])
        #expect(aead.ok, "\(aead.output)")
        let cbc = try await handshake(["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA:AES128-GCM-SHA256"])
        #expect(!cbc.ok, "a CBC / SHA-1 or static-RSA suite was accepted: \(cbc.output)")
        let old = try await handshake(["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"])
        #expect(!old.ok, "TLS 1.1 was accepted: \(old.output)")
        await secure.broker.stop()
    }
}

extension SecurityTests {
    @Test("identities are bound: a certificate cannot take over another client's session or fire its Will, a service identity cannot publish as a gateway, and a revoked certificate is refused while others still connect")
    func identityAndRevocation() async throws {
        let secure = try await SecureBroker()
        let watcher = secure.client("spectra-operator")
        try await watcher.connect()
        let seen = Collector(watcher.messages)
        _ = try await watcher.subscribe([Subscription("spectra/v1/demo/#")])

        // gw-b is online with a Will; gw-a's certificate connects asking for gw-b's client id.
        var victimConfiguration = secure.client("gw-b").configuration
        victimConfiguration.clientID = "demo-gw-b"
        victimConfiguration.will = .init(topic: "spectra/v1/demo/gw/gw-b/status", payload: Array("{\"online\":false}".utf8))
        let victim = MQTTClient(victimConfiguration)
        try await victim.connect()
        var attackerConfiguration = secure.client("gw-a").configuration
        attackerConfiguration.clientID = "demo-gw-b"
        let attacker = MQTTClient(attackerConfiguration)
        try await attacker.connect()
        try await Task.sleep(for: .seconds(2))
        #expect(victim.isConnected && victim.reconnects == 0, "gw-b keeps its session")
        #expect(!seen.elements.contains { $0.topic == "spectra/v1/demo/gw/gw-b/status" }, "and its Will did not fire")

        // The aggregator's identity cannot publish as a gateway named after it.
        let aggregator = secure.client("spectra-aggregator")
        try await aggregator.connect()
        await #expect(throws: MQTTError.self) {
            try await aggregator.publish(OutgoingMessage(topic: "spectra/v1/demo/gw/spectra-aggregator/event", payload: Array("x".utf8)))
        }
        await aggregator.disconnect()
        await attacker.disconnect()
        await victim.disconnect()
        await watcher.disconnect()

        // Revoke gw-b: after the broker's restart it is refused; gw-a still connects.
        let script = TestEnvironment.packageRoot.appendingPathComponent("Deploy/pki/make-pki.sh").path
        let oldCertificate = try Data(contentsOf: URL(fileURLWithPath: secure.file("gw-b.crt")))
        let oldKey = try Data(contentsOf: URL(fileURLWithPath: secure.file("gw-b.key")))
        let revoked = try await ChildProcess.run("/bin/bash", [script, "revoke", secure.pki.path, "gw-b"], timeout: 60)
        #expect(revoked.status == 0, "\(revoked.stderr)")
        try await secure.broker.restart()
        let kept = secure.client("gw-a")
        try await kept.connect()
        await kept.disconnect()
        let revokedFolder = try TestEnvironment.temporaryDirectory("revoked")
        defer { try? FileManager.default.removeItem(at: revokedFolder) }
        try oldCertificate.write(to: revokedFolder.appendingPathComponent("gw-b.crt"))
        try oldKey.write(to: revokedFolder.appendingPathComponent("gw-b.key"))
        let refused = secure.client("gw-b", certificateFolder: revokedFolder)
        await #expect(throws: MQTTError.self) { try await refused.connect() }
        #expect(!((try? String(contentsOfFile: secure.file("acl"), encoding: .utf8)) ?? "").contains("user gw-b"))

        // Renewing issues a new certificate that works (and revokes the one before).
        let script2 = try await ChildProcess.run("/bin/bash", [script, "renew", secure.pki.path, "gw-a"], timeout: 60)
        #expect(script2.status == 0, "\(script2.stderr)")
        try await secure.broker.restart()
        let renewed = secure.client("gw-a")
        try await renewed.connect()
        #expect(renewed.isConnected)
        await renewed.disconnect()
        await secure.broker.stop()
    }
}
