import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real PostgreSQL server for one test: its own cluster (`initdb`) in a temporary folder,
/// listening on a free loopback port, with trust authentication for the `postgres` user.
///
/// `initdb` and the server refuse to run as root: as root, both run as the `postgres` user
/// Debian's package creates (through `setpriv`, which executes rather than forks, so a signal
/// reaches the server itself). The server is stopped and the folder removed when the value
/// goes away.
public final class PostgresServer: Sendable {
    public let port: Int
    public let directory: URL
    private let process: Mutex<ChildProcess?>

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    public var url: String { "postgres://postgres@127.0.0.1:\(port)/postgres" }

    /// The server's binaries: Debian keeps them out of PATH, under /usr/lib/postgresql/VERSION/bin.
    static func binary(_ name: String) -> String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }
        for version in versions where FileManager.default.isExecutableFile(atPath: "\(root)/\(version)/bin/\(name)") {
            return "\(root)/\(version)/bin/\(name)"
        }
        return TestEnvironment.executable(name)
    }

    /// The command prefix that runs a program as the `postgres` user when this process is root.
    private static func asServerUser() throws -> [String] {
        guard geteuid() == 0 else { return [] }
        guard let setpriv = TestEnvironment.executable("setpriv"), getpwnam("postgres") != nil else {
            throw TestEnvironmentError("running as root needs the postgres user and setpriv: run Deploy/bootstrap.sh")
        }
        return [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    }

    /// Initialises a cluster and starts the server.
    /// - Parameter tls: when given, the server takes TLS connections only, with `tls`'s server
    ///   certificate (for `localhost`, signed by its CA).
    /// - Throws: ``TestEnvironmentError`` when PostgreSQL is not installed or does not come up.
    public init(tls: TestPKI? = nil) async throws {
        guard let initdb = Self.binary("initdb"), let postgres = Self.binary("postgres") else {
            throw TestEnvironmentError("PostgreSQL is not installed: run Deploy/bootstrap.sh")
        }
        let prefix = try Self.asServerUser()
        directory = try TestEnvironment.temporaryDirectory("postgres")
        process = Mutex(nil)
        let data = directory.appendingPathComponent("data").path
        if geteuid() == 0, let user = getpwnam("postgres") {
            chown(directory.path, user.pointee.pw_uid, user.pointee.pw_gid)
            chmod(directory.path, 0o700)
        }
        let command = prefix + [initdb, "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"]
        let initialise = try ChildProcess(command[0], Array(command.dropFirst()))
        guard await initialise.wait(timeout: 120) == 0 else {
            initialise.send(SIGKILL)
            try? FileManager.default.removeItem(at: directory)
            throw TestEnvironmentError("initdb failed: \(initialise.standardError)")
        }
        var settings: [String] = []
        if let tls {
            // The key must belong to the server's user and be readable by it alone.
            let certificate = directory.appendingPathComponent("server.crt").path, key = directory.appendingPathComponent("server.key").path
            try FileManager.default.copyItem(atPath: tls.serverCert, toPath: certificate)
            try FileManager.default.copyItem(atPath: tls.serverKey, toPath: key)
            let hba = directory.appendingPathComponent("pg_hba.conf").path
            try "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostssl all all ::1/128 trust\n".write(
                toFile: hba, atomically: true, encoding: .utf8)
            for file in [certificate, key, hba] {
                if geteuid() == 0, let user = getpwnam("postgres") { chown(file, user.pointee.pw_uid, user.pointee.pw_gid) }
                chmod(file, 0o600)
            }
            settings = ["-c", "ssl=on", "-c", "ssl_cert_file=\(certificate)", "-c", "ssl_key_file=\(key)", "-c", "hba_file=\(hba)"]
        }
        self.prefix = prefix
        self.postgres = postgres
        self.settings = settings
        var lastError = ""
        for _ in 0..<5 {
            let port = try TestEnvironment.freePort()
            do {
                try await Self.launch(prefix + [postgres], settings, data: data, directory: directory, port: port, into: process)
                self.port = port
                return
            } catch {
                lastError = "\(error)"
            }
        }
        try? FileManager.default.removeItem(at: directory)
        throw TestEnvironmentError("PostgreSQL did not start: \(lastError)")
    }

    private let prefix: [String]
    private let postgres: String
    /// Server settings beyond the defaults below (TLS).
    private let settings: [String]

    /// Starts the server on `port` and waits until it listens.
    private static func launch(
        _ command: [String], _ settings: [String], data: String, directory: URL, port: Int, into process: borrowing Mutex<ChildProcess?>
    ) async throws {
        let serve = command + settings + [
            "-D", data, "-p", "\(port)", "-k", directory.path, "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200",
        ]
        let child = try ChildProcess(serve[0], Array(serve.dropFirst()))
        process.withLock { $0 = child }
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, child.isRunning, !TestEnvironment.isListening(port: port) {
            try await Task.sleep(for: .milliseconds(50))
        }
        guard child.isRunning, TestEnvironment.isListening(port: port) else {
            child.send(SIGKILL)
            throw TestEnvironmentError("PostgreSQL did not start on port \(port): \(child.standardError)")
        }
        // Accepting connections comes a moment after listening.
        try await Task.sleep(for: .milliseconds(200))
    }

    /// Starts the server again (after ``stop()``) on the same port, with the same data.
    public func start() async throws {
        try await Self.launch(
            prefix + [postgres], settings, data: directory.appendingPathComponent("data").path, directory: directory, port: port,
            into: process)
    }

    deinit {
        process.withLock { child in
            // Immediate shutdown: the server ends its backends and exits.
            child?.send(SIGQUIT)
        }
        let directory = directory
        let child = process.withLock { $0 }
        Task.detached {
            _ = await child?.wait(timeout: 10)
            child?.send(SIGKILL)
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    public func stop() async {
        guard let child = process.withLock({ $0 }) else { return }
        child.send(SIGINT)
        _ = await child.wait(timeout: 30)
    }
}
