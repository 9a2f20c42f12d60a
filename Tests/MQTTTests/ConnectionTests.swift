import Foundation
@testable import MQTT
import SpectraTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Connections: failures, reconnects, TLS")
struct ConnectionTests {
    @Test("a wrong password is refused with a clear error")
    func wrongPassword() async throws {
        let dir = try TestEnvironment.temporaryDirectory("passwd")
        defer { try? FileManager.default.removeItem(at: dir) }
        let passwordFile = dir.appendingPathComponent("passwd").path
        let tool = try #require(TestEnvironment.executable("mosquitto_passwd"))
        #expect(try await ChildProcess.run(tool, ["-b", "-c", passwordFile, "gw-0001", "right"]).status == 0)
        let broker = try await MosquittoBroker(extraConfig: "allow_anonymous false\npassword_file \(passwordFile)\n")
        var configuration = broker.client("gw-0001")
        configuration.username = "gw-0001"
        configuration.password = "wrong"
        let client = MQTTClient(configuration)
        do {
            try await client.connect()
            Issue.record("connected with a wrong password")
        } catch let error as MQTTError {
            #expect(error.kind == .refused)
            #expect(error.isAuthorization)
            #expect(error.message.contains("check mqtt.username and mqtt.password"), "\(error)")
        }
        configuration.password = "right"
        let good = MQTTClient(configuration)
        try await good.connect()
        #expect(good.isConnected)
    }

    @Test("nothing listening: connection refused, with advice")
    func refused() async throws {
        let port = try TestEnvironment.freePort()
        let client = MQTTClient(MQTTConfiguration(port: port, clientID: "c"))
        do {
            try await client.connect()
            Issue.record("connected to nothing")
        } catch let error as MQTTError {
            #expect(error.kind == .library)
            #expect(error.message.contains("check the broker URL"), "\(error)")
        }
    }

    @Test("a host name that does not resolve says so")
    func unresolvable() async throws {
        let client = MQTTClient(MQTTConfiguration(host: "no-such-host.invalid", port: 1883, clientID: "c"))
        do {
            try await client.connect()
            Issue.record("connected to an invalid host")
        } catch let error as MQTTError {
            #expect(error.message.contains("could not be resolved"), "\(error)")
        }
    }

    @Test("the client reconnects by itself after the broker restarts, and resubscribes")
    func brokerRestart() async throws {
        let broker = try await MosquittoBroker()
        let client = MQTTClient(broker.client("c1"))
        let events = Collector(client.connectionEvents)
        try await client.connect()
        let received = Collector(client.messages)
        try await client.subscribe([Subscription("x/#")])
        try await broker.restart(hard: true)
        #expect(await eventually(timeout: 15) { client.isConnected })
        #expect(client.reconnects >= 1)
        // The reason says what happened to the connection (not the errno of whatever ran after).
        let lost = events.elements.compactMap { if case .disconnected(let reason) = $0 { reason } else { nil } }.first
        #expect(lost?.contains("lost: the broker closed the connection") == true, "\(lost ?? "no disconnect seen")")
        let publisher = MQTTClient(broker.client("p1"))
        try await publisher.connect()
        try await publisher.publish(OutgoingMessage(topic: "x/after", payload: bytes("back")))
        #expect(await received.waitFor(count: 1))
        #expect(received.elements.map(text) == ["back"])
    }

    @Test("a silent link (broker SIGSTOPped) is noticed within 2 keepalives, then the client reconnects")
    func silentLink() async throws {
        let broker = try await MosquittoBroker()
        // Long enough that 4 s of slack for a loaded machine (the whole suite shares 2 cores)
        // still tells 1.5 keepalives (this client) from the 2 that libmosquitto alone would wait.
        let keepalive = 16
        let client = MQTTClient(broker.client("c2", keepalive: keepalive))
        let events = Collector(client.connectionEvents)
        try await client.connect()
        broker.pause()
        let frozenAt = Date()
        let noticed = await eventually(timeout: Double(2 * keepalive)) { !client.isConnected }
        let elapsed = Date().timeIntervalSince(frozenAt)
        #expect(noticed, "not noticed in \(elapsed) s")
        #expect(elapsed <= 1.5 * Double(keepalive) + 4)
        broker.resume()
        #expect(await eventually(timeout: 20) { client.isConnected })
        // (The collector takes the stream on a task of its own, which a loaded machine may run late.)
        #expect(await eventually { events.elements.contains { if case .disconnected = $0 { true } else { false } } })
    }

    @Test("publishes waiting for a PUBACK fail with connectionLost when the link dies")
    func lostInFlight() async throws {
        let broker = try await MosquittoBroker()
        let client = MQTTClient(broker.client("c3", keepalive: 5))
        try await client.connect()
        broker.pause()
        await #expect(throws: MQTTError.self) {
            try await client.publish(OutgoingMessage(topic: "lost", payload: bytes("x")))
        }
        broker.resume()
    }

    @Test("TLS with client certificates; a wrong CA and a wrong server name are refused")
    func tls() async throws {
        let pki = try await TestPKI()
        defer { pki.remove() }
        let broker = try await MosquittoBroker.tls(pki)
        func configuration(host: String, ca: String, cert: String, key: String) -> MQTTConfiguration {
            MQTTConfiguration(
                host: host, port: broker.port, clientID: "gw-0001",
                tls: .init(caFile: ca, certFile: cert, keyFile: key))
        }
        let good = MQTTClient(configuration(host: "localhost", ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey))
        try await good.connect()
        let received = Collector(good.messages)
        try await good.subscribe([Subscription("tls/#")])
        try await good.publish(OutgoingMessage(topic: "tls/x", payload: bytes("secure")))
        #expect(await received.waitFor(count: 1))
        await good.disconnect()

        // Refused, saying what OpenSSL found wrong with the broker's certificate.
        func failure(_ client: MQTTClient) async -> String {
            do {
                try await client.connect()
                return "connected"
            } catch {
                return "\(error)"
            }
        }
        let wrongCA = MQTTClient(configuration(host: "localhost", ca: pki.rogueCACert, cert: pki.clientCert, key: pki.clientKey))
        let untrusted = await failure(wrongCA)
        #expect(untrusted.contains("not accepted (self-signed certificate in certificate chain)"), "\(untrusted)")
        let wrongName = MQTTClient(configuration(host: "127.0.0.1", ca: pki.caCert, cert: pki.clientCert, key: pki.clientKey))
        let misnamed = await failure(wrongName)
        #expect(misnamed.contains("not accepted (it does not name 127.0.0.1)"), "\(misnamed)")
        let rogueClient = MQTTClient(configuration(host: "localhost", ca: pki.caCert, cert: pki.rogueClientCert, key: pki.rogueClientKey))
        await #expect(throws: MQTTError.self) { try await rogueClient.connect() }
    }

    @Test("backoff windows grow exponentially to the cap, and jittered delays spread out")
    func backoff() {
        let backoff = Backoff(minimumSeconds: 0.5, maximumSeconds: 30)
        #expect(backoff.window(attempt: 0) == 0.5)
        #expect(backoff.window(attempt: 3) == 4)
        #expect(backoff.window(attempt: 20) == 30)
        var generator = SystemRandomNumberGenerator()
        let delays = (0..<2000).map { _ in backoff.delay(attempt: 10, using: &generator) }
        #expect(delays.allSatisfy { $0 >= 0 && $0 <= 30 })
        // 2,000 clients returning after a cut-off: no one-second slot holds more than 5 %.
        let perSecond = Dictionary(grouping: delays, by: { Int($0) }).mapValues(\.count)
        #expect(perSecond.values.max()! < 100)
    }

    @Test("connections the broker drops right after accepting them (two clients with one id) are retried on the growing schedule, not many times a second")
    func droppedAfterConnectBacksOff() async throws {
        let broker = try await MosquittoBroker()
        let backoff = Backoff(minimumSeconds: 0.5, maximumSeconds: 30)
        // Each connection takes the id over from the other, which is disconnected at once.
        let one = MQTTClient(broker.client("same-id", backoff: backoff))
        let two = MQTTClient(broker.client("same-id", backoff: backoff))
        one.start()
        two.start()
        try await Task.sleep(for: .seconds(8))
        let reconnects = one.reconnects + two.reconnects
        await one.disconnect()
        await two.disconnect()
        // With the schedule starting over at every accepted connection (the delay drawn from
        // [0, 0.5 s]), two clients took turns about 60 times in 8 s; on the growing schedule
        // (windows 0.5, 1, 2, 4, 8 s) it is a handful.
        #expect(reconnects >= 1 && reconnects <= 16, "\(reconnects) reconnects in 8 s")
        await broker.stop()
    }

    @Test("CONNACK capabilities: mosquitto says nothing is missing under MQTT 5; a 3.1.1 CONNACK announces nothing")
    func capabilities() async throws {
        let broker = try await MosquittoBroker()
        let v5 = MQTTClient(broker.client("caps-5"))
        try await v5.connect()
        #expect(v5.brokerCapabilities.missing.isEmpty, "\(v5.brokerCapabilities)")
        var old = broker.client("caps-311")
        old.protocolVersion = .v311
        let v311 = MQTTClient(old)
        try await v311.connect()
        #expect(!v311.brokerCapabilities.announced && v311.brokerCapabilities.sharedSubscriptions)
        await v5.disconnect()
        await v311.disconnect()
        await broker.stop()
    }
}
