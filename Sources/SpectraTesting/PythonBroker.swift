import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A broker implementation other than mosquitto, for one test, on a free loopback port:
/// `Deploy/bootstrap.sh` installs both into the checkout's `.build-brokers` virtual environment.
///
/// - ``Kind/amqtt``: an MQTT 3.1.1 broker (QoS 0-2, retained messages, persistent sessions,
///   wildcards; no MQTT 5, no shared subscriptions).
/// - ``Kind/mqttools``: an MQTT 5 broker whose CONNACK says it takes QoS 0 only and no wildcard
///   or shared subscriptions.
///
/// The process is killed and its folder removed when the value goes away.
public final class PythonBroker: Sendable {
    public enum Kind: String, Sendable {
        case amqtt
        case mqttools
    }

    public let kind: Kind
    /// The TCP port on 127.0.0.1.
    public let port: Int
    private let directory: URL
    private let process: Mutex<ChildProcess?>

    /// `mqtt://127.0.0.1:PORT`.
    public var url: String { "mqtt://127.0.0.1:\(port)" }

    /// What the broker printed so far.
    public var log: String { process.withLock { $0.map { $0.lines.joined(separator: "\n") + $0.standardError } ?? "" } }

    /// Where `Deploy/bootstrap.sh` puts the brokers.
    public static var environment: URL { TestEnvironment.packageRoot.appendingPathComponent(".build-brokers") }

    /// Starts a broker.
    /// - Throws: ``TestEnvironmentError`` when it is not installed or does not come up.
    public init(_ kind: Kind) async throws {
        let executable = Self.environment.appendingPathComponent("bin/\(kind.rawValue)").path
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestEnvironmentError("\(kind.rawValue) is not installed in \(Self.environment.path): run Deploy/bootstrap.sh")
        }
        self.kind = kind
        directory = try TestEnvironment.temporaryDirectory(kind.rawValue)
        process = Mutex(nil)
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try TestEnvironment.freePort()
            do {
                try await Self.launch(kind, executable: executable, port: port, directory: directory, into: process)
                self.port = port
                return
            } catch {
                lastError = error
            }
        }
        try? FileManager.default.removeItem(at: directory)
        throw lastError ?? TestEnvironmentError("\(kind.rawValue) did not start")
    }

    private static func launch(
        _ kind: Kind, executable: String, port: Int, directory: URL, into process: borrowing Mutex<ChildProcess?>
    ) async throws {
        let arguments: [String]
        switch kind {
        case .amqtt:
            let config = directory.appendingPathComponent("amqtt.yaml")
            try """
                listeners:
                  default:
                    type: tcp
                    bind: 127.0.0.1:\(port)
                plugins:
                  amqtt.plugins.authentication.AnonymousAuthPlugin:
                    allow_anonymous: true
                """.write(to: config, atomically: true, encoding: .utf8)
            arguments = ["-c", config.path]
        case .mqttools:
            arguments = ["broker", "--host", "127.0.0.1", "--port", "\(port)"]
        }
        let child = try ChildProcess(executable, arguments)
        process.withLock { $0 = child }
        // Python brokers take a second or two to import and bind.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if TestEnvironment.isListening(port: port, process: child.pid) { return }
            if !child.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        child.send(SIGKILL)
        throw TestEnvironmentError("\(kind.rawValue) did not start on port \(port): \(child.standardError.suffix(2000))")
    }

    deinit {
        process.withLock { $0?.send(SIGKILL) }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts the broker again on the same port (a stopped broker forgets its sessions and
    /// retained messages: neither Python broker persists them).
    public func start() async throws {
        let executable = Self.environment.appendingPathComponent("bin/\(kind.rawValue)").path
        try await Self.launch(kind, executable: executable, port: port, directory: directory, into: process)
    }

    /// Stops the broker (SIGTERM, then SIGKILL) and waits for it to exit.
    public func stop() async {
        guard let child = process.withLock({ $0 }) else { return }
        child.send(SIGTERM)
        await child.wait(timeout: 5)
        child.send(SIGKILL)
        await child.wait(timeout: 5)
    }
}
