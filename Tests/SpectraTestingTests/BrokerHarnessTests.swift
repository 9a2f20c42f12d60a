import Foundation
import SpectraTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The harness every broker test stands on: a real mosquitto on a free loopback port.
@Suite("Broker harness")
struct BrokerHarnessTests {
    func publish(_ broker: MosquittoBroker, topic: String, message: String, retain: Bool = false) async throws -> Int32? {
        let pub = try #require(TestEnvironment.executable("mosquitto_pub"))
        var arguments = ["-p", "\(broker.port)", "-h", "127.0.0.1", "-q", "1", "-t", topic, "-m", message]
        if retain { arguments.append("-r") }
        return try await ChildProcess.run(pub, arguments, timeout: 10).status
    }

    func readRetained(_ broker: MosquittoBroker, topic: String) async throws -> String {
        let sub = try #require(TestEnvironment.executable("mosquitto_sub"))
        let result = try await ChildProcess.run(
            sub, ["-p", "\(broker.port)", "-h", "127.0.0.1", "-t", topic, "-C", "1", "-W", "5"], timeout: 10)
        return result.stdout
    }

    @Test("a started broker carries messages on its own port, not 1883")
    func roundTrip() async throws {
        let broker = try await MosquittoBroker()
        #expect(broker.port != 1883)
        #expect(try await publish(broker, topic: "t/retained", message: "hello", retain: true) == 0)
        #expect(try await readRetained(broker, topic: "t/retained") == "hello")
    }

    @Test("two brokers run side by side without sharing anything")
    func isolation() async throws {
        let first = try await MosquittoBroker()
        let second = try await MosquittoBroker()
        #expect(first.port != second.port)
        #expect(try await publish(first, topic: "only/first", message: "1", retain: true) == 0)
        let sub = try #require(TestEnvironment.executable("mosquitto_sub"))
        let result = try await ChildProcess.run(
            sub, ["-p", "\(second.port)", "-t", "only/first", "-C", "1", "-W", "1"], timeout: 5)
        #expect(result.stdout.isEmpty)
    }

    @Test("a broker that lost its port to another server is not taken for started")
    func portTakenMeanwhile() async throws {
        // Another test's server holds the port this broker was about to bind.
        let port = try TestEnvironment.freePort()
        let holder = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(holder) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(holder, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(bound == 0 && listen(holder, 8) == 0)

        let directory = try TestEnvironment.temporaryDirectory("harness")
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("mosquitto.conf")
        try "listener \(port) 127.0.0.1\nallow_anonymous true\n\(getuid() == 0 ? "user root\n" : "")".write(to: config, atomically: true, encoding: .utf8)
        let mosquitto = try #require(TestEnvironment.executable("mosquitto"))
        let loser = try ChildProcess(mosquitto, ["-c", config.path])
        defer { loser.send(SIGKILL) }
        _ = await loser.wait(timeout: 5)

        #expect(TestEnvironment.isListening(port: port), "something listens on the port ...")
        #expect(TestEnvironment.isListening(port: port, process: getpid()), "... this process")
        #expect(!TestEnvironment.isListening(port: port, process: loser.pid), "... and not the broker that failed to bind")
    }

    @Test("restart after SIGKILL keeps the port and the retained messages saved before it")
    func killAndRestart() async throws {
        let broker = try await MosquittoBroker()
        let port = broker.port
        #expect(try await publish(broker, topic: "t/keep", message: "kept", retain: true) == 0)
        try await Task.sleep(for: .milliseconds(2500))  // past the 1 s autosave
        await broker.kill()
        #expect(!TestEnvironment.isListening(port: port))
        try await broker.start()
        #expect(broker.port == port)
        #expect(try await readRetained(broker, topic: "t/keep") == "kept")
    }

    @Test("a paused broker accepts TCP but answers nothing until resumed")
    func pauseAndResume() async throws {
        let broker = try await MosquittoBroker()
        broker.pause()
        let pub = try #require(TestEnvironment.executable("mosquitto_pub"))
        let stalled = try ChildProcess(pub, ["-p", "\(broker.port)", "-q", "1", "-t", "t/p", "-m", "x", "-r"])
        try await Task.sleep(for: .seconds(1))
        #expect(stalled.isRunning, "a client must hang against a SIGSTOPped broker")
        broker.resume()
        #expect(await stalled.wait(timeout: 10) == 0)
        #expect(try await readRetained(broker, topic: "t/p") == "x")
    }

    @Test("graceful stop and start on the same port")
    func stopAndStart() async throws {
        let broker = try await MosquittoBroker()
        #expect(try await publish(broker, topic: "t/s", message: "saved", retain: true) == 0)
        try await broker.restart()
        #expect(try await readRetained(broker, topic: "t/s") == "saved")
    }

    @Test("a started process holds only its standard descriptors, none of the test process's")
    func descriptorsNotInherited() async throws {
        // A socket as libmosquitto opens them: not close-on-exec. Inherited, a client closed here
        // would stay open in the child, and the broker would not see it go.
        let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(socket >= 3)
        defer { close(socket) }
        let listing = try await ChildProcess.run("/bin/sh", ["-c", "ls /proc/$$/fd"], timeout: 10)
        #expect(listing.status == 0, "\(listing.stderr)")
        #expect(listing.stdout.split(separator: "\n") == ["0", "1", "2"], "\(listing.stdout)")
    }
}
