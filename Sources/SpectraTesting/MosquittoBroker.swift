import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real mosquitto broker for one test: its own folder, config and free loopback port.
///
/// It can be stopped, killed with SIGKILL, frozen with SIGSTOP (a silent link: the TCP
/// connection stays up, nothing answers) and thawed, and restarted on the same port with its
/// persistent state. The process is killed and the folder removed when the value goes away.
public final class MosquittoBroker: Sendable {
    /// The TCP port on 127.0.0.1.
    public let port: Int
    /// The broker's folder (config, persistence, log).
    public let directory: URL
    private let executable: String
    private let process: Mutex<ChildProcess?>

    /// `mqtt://127.0.0.1:PORT`.
    public var url: String { "mqtt://127.0.0.1:\(port)" }

    /// The path of the generated config file.
    public var configPath: String { directory.appendingPathComponent("mosquitto.conf").path }

    /// The broker's log so far.
    public var log: String {
        (try? String(contentsOf: directory.appendingPathComponent("mosquitto.log"), encoding: .utf8)) ?? ""
    }

    /// Starts a broker.
    /// - Parameters:
    ///   - extraConfig: lines appended to the generated config (listeners, TLS, ACLs, limits).
    ///   - listener: write the default plain listener on `127.0.0.1:port`; pass false when
    ///     `extraConfig` declares its own listener on ``port`` (use `{PORT}` and `{DIR}` in it).
    /// - Throws: ``TestEnvironmentError`` when mosquitto is not installed or does not come up.
    public init(extraConfig: String = "", listener: Bool = true) async throws {
        guard let executable = TestEnvironment.executable("mosquitto") else {
            throw TestEnvironmentError("mosquitto is not installed: run Deploy/bootstrap.sh")
        }
        self.executable = executable
        self.directory = try TestEnvironment.temporaryDirectory("mosquitto")
        self.process = Mutex(nil)
        // A port can be taken between choosing and binding it: try a few.
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try TestEnvironment.freePort()
            try Self.writeConfig(port: port, directory: directory, extraConfig: extraConfig, listener: listener)
            do {
                try await Self.launch(executable: executable, port: port, directory: directory, into: process)
                self.port = port
                return
            } catch {
                lastError = error
            }
        }
        try? FileManager.default.removeItem(at: directory)
        throw lastError ?? TestEnvironmentError("mosquitto did not start")
    }

    private static func writeConfig(port: Int, directory: URL, extraConfig: String, listener: Bool) throws {
        let dir = directory.path
        var config = """
            per_listener_settings false
            allow_anonymous true
            persistence true
            persistence_location \(dir)/
            autosave_interval 1
            log_dest file \(dir)/mosquitto.log
            log_type error
            log_type warning
            log_type notice
            max_queued_messages 1000000
            max_inflight_messages 0
            pid_file \(dir)/mosquitto.pid

            """
        if geteuid() == 0 { config += "user root\n" }
        if listener { config += "listener \(port) 127.0.0.1\n" }
        config += extraConfig.replacingOccurrences(of: "{PORT}", with: "\(port)")
            .replacingOccurrences(of: "{DIR}", with: dir) + "\n"
        try config.write(toFile: directory.appendingPathComponent("mosquitto.conf").path, atomically: true, encoding: .utf8)
    }

    /// Starts mosquitto and waits until it accepts connections on `port`.
    private static func launch(executable: String, port: Int, directory: URL, into process: borrowing Mutex<ChildProcess?>) async throws {
        let child = try ChildProcess(executable, ["-c", directory.appendingPathComponent("mosquitto.conf").path])
        process.withLock { $0 = child }
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if TestEnvironment.isListening(port: port, process: child.pid) { return }
            if !child.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        child.send(SIGKILL)
        let log = (try? String(contentsOf: directory.appendingPathComponent("mosquitto.log"), encoding: .utf8)) ?? ""
        throw TestEnvironmentError("mosquitto did not start on port \(port): \(child.standardError) \(log)")
    }

    deinit {
        process.withLock { child in
            child?.send(SIGCONT)
            child?.send(SIGKILL)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Starts the broker process (again) on the same port and waits until it accepts connections.
    public func start() async throws {
        try await Self.launch(executable: executable, port: port, directory: directory, into: process)
    }

    /// Stops the broker gracefully (SIGTERM) and waits for it to exit; it saves its state first.
    public func stop() async {
        guard let child = process.withLock({ $0 }) else { return }
        child.send(SIGCONT)
        child.send(SIGTERM)
        await child.wait(timeout: 10)
        await waitUntilPortIsFree()
    }

    /// Kills the broker with SIGKILL: state since the last autosave (1 s) is lost.
    public func kill() async {
        guard let child = process.withLock({ $0 }) else { return }
        child.send(SIGCONT)
        child.send(SIGKILL)
        await child.wait(timeout: 10)
        await waitUntilPortIsFree()
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is answered.
    public func pause() { process.withLock { $0?.send(SIGSTOP) } }

    /// Thaws a paused broker (SIGCONT).
    public func resume() { process.withLock { $0?.send(SIGCONT) } }

    /// Stops (or kills, with `hard`) and starts the broker again on the same port.
    public func restart(hard: Bool = false) async throws {
        if hard { await kill() } else { await stop() }
        try await start()
    }

    /// Whether the broker process is running (a paused one counts as running).
    public var isRunning: Bool { process.withLock { $0?.isRunning ?? false } }

    private func waitUntilPortIsFree() async {
        let deadline = Date().addingTimeInterval(5)
        while TestEnvironment.isListening(port: port) && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
