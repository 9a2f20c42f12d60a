import Foundation
import SpectraTesting
import Testing

/// The aggregator's `database` setting as a user gets it wrong: a second instance on one
/// SQLite file, a URL where a path belongs.
@Suite("Aggregator database setting")
struct DatabaseSettingTests {
    typealias Aggregator = BrokerCompatibilityTests.Aggregator

    @Test("a second aggregator on the same SQLite file is refused with one clear error; the first counts every message once; after it stops the file opens again")
    func oneInstancePerFile() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("one-database")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = folder.appendingPathComponent("shared.sqlite").path
        let first = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-first", settings: ["database=\(database)"])
        defer { first.process.send(SIGKILL) }
        #expect(await first.connected())

        let second = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-second", settings: ["database=\(database)"])
        defer { second.process.send(SIGKILL) }
        #expect(await second.process.wait(timeout: 20) == 1, "refused, not running beside the first")
        let said = second.process.standardError.split(separator: "\n")
        #expect(said.count == 1, "one line: \(said)")
        #expect(said.first?.contains("\(database) is in use by another spectra-aggregator (pid \(first.process.pid))") == true, "\(said)")

        // The first is untouched and counts each message once.
        let run = try await BrokerCompatibilityTests.simulate(url: broker.url, folder: folder, ["--gateways", "2", "--days", "1", "--seed", "5"])
        #expect(run.status == 0, "\(run.stderr.suffix(1000))")
        let made = try #require(BrokerCompatibilityTests.done(run.stdout))[3]
        let counted = await eventually(timeout: 30) { await first.received() == made }
        let received = await first.received()
        #expect(counted, "\(String(describing: received)) of \(made)")
        #expect(await first.stop() == 0)

        // Stopped (the lock goes with the process), the file is free for the next instance.
        let next = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-first", settings: ["database=\(database)"])
        defer { next.process.send(SIGKILL) }
        #expect(await next.connected(), "\(next.process.standardError)")
        #expect(await next.received() == made, "the figures are the file's")
        // A killed holder frees it too.
        next.process.send(SIGKILL)
        _ = await next.process.wait(timeout: 10)
        let afterKill = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-first", settings: ["database=\(database)"])
        defer { afterKill.process.send(SIGKILL) }
        #expect(await afterKill.connected(), "\(afterKill.process.standardError)")
        #expect(await afterKill.stop() == 0)
        await broker.stop()
    }

    @Test("a database URL with a password, or of a scheme other than postgres://, is one configuration error that names the key, keeps the password to itself, and makes no folder")
    func badURLs() async throws {
        let folder = try TestEnvironment.temporaryDirectory("database-url")
        defer { try? FileManager.default.removeItem(at: folder) }
        let cases = [
            ("postgres://spectra:s3cret@127.0.0.1:5432/spectra", "carries a password"),
            ("postgresql://db.example/spectra", "names no user"),
            ("mysql://root:s3cret@db/spectra", "a mysql:// URL"),
        ]
        for (url, problem) in cases {
            for command in [["run"], ["config", "show"], ["tokens", "create", "ci", "--role", "viewer"]] {
                let result = try await ChildProcess.run(
                    TestEnvironment.product("spectra-aggregator"), command + ["--set", "database=\(url)", "--set", "http.port=0"],
                    currentDirectory: folder.path, timeout: 20)
                #expect(result.status == 2, "\(command) \(url): \(result.stderr)")
                let lines = result.stderr.split(separator: "\n")
                #expect(lines.count == 1 && result.stderr.contains("database"), "\(lines)")
                #expect(result.stderr.contains(problem), "\(result.stderr)")
                #expect(!(result.stderr + result.stdout).contains("s3cret"), "the password is not echoed: \(result.stderr)")
            }
        }
        let made = try FileManager.default.contentsOfDirectory(atPath: folder.path)
        #expect(made.isEmpty, "nothing made in the working directory: \(made)")
        // A plain path keeps working, relative ones included.
        let plain = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["config", "show", "--set", "database=var/stats.sqlite"], currentDirectory: folder.path)
        #expect(plain.status == 0 && plain.stdout.contains("database: var/stats.sqlite"), "\(plain.stdout)\(plain.stderr)")
    }

    @Test("a PostgreSQL database that cannot be reached stops run at once with one line saying which and why; config show names it without a password")
    func unreachablePostgres() async throws {
        let folder = try TestEnvironment.temporaryDirectory("database-pg")
        defer { try? FileManager.default.removeItem(at: folder) }
        let port = try TestEnvironment.freePort()
        let url = "postgres://spectra@127.0.0.1:\(port)/stats?sslmode=disable"
        let started = Date()
        let result = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["run", "--set", "database=\(url)", "--set", "http.port=0"],
            environment: ["SPECTRA_DATABASE_PASSWORD": "s3cret"], currentDirectory: folder.path, timeout: 60)
        #expect(result.status == 1, "\(result.stderr)")
        #expect(Date().timeIntervalSince(started) < 20, "it does not wait for a database that refuses connections")
        let errors = result.stderr.split(separator: "\n").filter { $0.hasPrefix("spectra-aggregator:") }
        #expect(errors.count == 1 && errors[0].contains("postgres://spectra@127.0.0.1:\(port)/stats"), "\(result.stderr)")
        #expect(!result.stderr.contains("s3cret"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).isEmpty)

        let shown = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["config", "show", "--set", "database=\(url)"],
            environment: ["SPECTRA_DATABASE_PASSWORD": "s3cret"], currentDirectory: folder.path)
        #expect(shown.status == 0 && shown.stdout.contains("database: postgres://spectra@127.0.0.1:\(port)/stats"), "\(shown.stdout)\(shown.stderr)")
        #expect(!shown.stdout.contains("s3cret"))
    }

    @Test("TLS to PostgreSQL: verify-full checks the server's certificate against sslrootcert; a server that takes TLS only refuses sslmode=disable in its own words")
    func postgresTLS() async throws {
        let pki = try await TestPKI()
        defer { pki.remove() }
        let server = try await PostgresServer(tls: pki)
        let base = "postgres://postgres@localhost:\(server.port)/postgres"
        func tokens(_ query: String) async throws -> (status: Int32?, stdout: String, stderr: String) {
            try await ChildProcess.run(
                TestEnvironment.product("spectra-aggregator"),
                ["tokens", "create", "tls-\(UUID().uuidString.prefix(6))", "--role", "viewer", "--set", "database=\(base)?\(query)"], timeout: 60)
        }
        let verified = try await tokens("sslmode=verify-full&sslrootcert=\(pki.caCert)")
        #expect(verified.status == 0 && verified.stdout.contains("spectra_"), "\(verified.stderr)")
        let encrypted = try await tokens("sslmode=require")
        #expect(encrypted.status == 0, "require encrypts without checking the certificate: \(encrypted.stderr)")
        let rogue = try await tokens("sslmode=verify-full&sslrootcert=\(pki.rogueCACert)")
        #expect(rogue.status == 1 && rogue.stderr.contains("CERTIFICATE_VERIFY_FAILED"), "\(rogue.stderr)")
        let plain = try await tokens("sslmode=disable")
        #expect(plain.status == 1 && plain.stderr.contains("no encryption"), "\(plain.stderr)")
        for result in [rogue, plain] {
            #expect(result.stderr.split(separator: "\n").filter { $0.hasPrefix("spectra-aggregator:") }.count == 1)
        }
    }
}
