import Foundation
import MQTT
import SpectraTesting
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The tarball to test, if any.
private let packageTarball = ProcessInfo.processInfo.environment["SPECTRA_PACKAGE"]

/// The tarball `Deploy/package.sh` makes, unpacked and run as a gateway and the server would run
/// it: from its installed configs, with an empty environment, so nothing of the toolchain (its
/// shared Swift runtime, `LD_LIBRARY_PATH`) can stand in for what the package lacks. It runs when
/// `SPECTRA_PACKAGE` names a tarball (`.ci/run` builds one and sets it).
@Suite("installable package", .enabled(if: packageTarball != nil, "SPECTRA_PACKAGE names no tarball made by Deploy/package.sh"))
struct PackageTests {
    static let tarball = packageTarball
    static let binaries = ["spectra-agent", "spectra-aggregator", "spectra-ctl"]

    /// The package unpacked in a folder of its own: its root (the tarball's one top folder).
    final class Unpacked: Sendable {
        let folder: URL
        let root: URL

        init() async throws {
            folder = try TestEnvironment.temporaryDirectory("package")
            let tarball = try #require(PackageTests.tarball)
            let untar = try await ChildProcess.run("/bin/tar", ["-xzf", tarball, "-C", folder.path])
            try #require(untar.status == 0, "tar: \(untar.stderr)")
            let top = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            try #require(top.count == 1, "one top folder in the tarball, found \(top)")
            root = folder.appendingPathComponent(top[0])
        }

        deinit { try? FileManager.default.removeItem(at: folder) }

        func path(_ relative: String) -> String { root.appendingPathComponent(relative).path }

        /// Runs a packaged binary with nothing in its environment but `environment`.
        func start(_ binary: String, _ arguments: [String], environment: [String: String] = [:]) throws -> ChildProcess {
            try ChildProcess("/usr/bin/env", ["-i"] + environment.map { "\($0.key)=\($0.value)" } + [path("usr/local/bin/\(binary)")] + arguments)
        }
    }

    @Test("no packaged binary needs a library from the Swift toolchain, and each starts with an empty environment")
    func selfContained() async throws {
        let package = try await Unpacked()
        for binary in Self.binaries {
            let dynamic = try await ChildProcess.run("/usr/bin/readelf", ["-d", package.path("usr/local/bin/\(binary)")])
            try #require(dynamic.status == 0, "readelf: \(dynamic.stderr)")
            let needed = dynamic.stdout.split(separator: "\n").filter { $0.contains("(NEEDED)") }
                .compactMap { line in line.split(separator: "[").last?.split(separator: "]").first.map(String.init) }
            #expect(needed.contains("libc.so.6"), "\(binary): \(needed)")
            let runtime = needed.filter { name in
                ["libswift", "libFoundation", "lib_Foundation", "libdispatch", "libBlocksRuntime"].contains { name.hasPrefix($0) }
            }
            #expect(runtime.isEmpty, "\(binary) needs \(runtime) from the toolchain")
            let help = try package.start(binary, ["--help"])
            #expect(await help.wait(timeout: 20) == 0, "\(binary) --help: \(help.standardError)")
            #expect(help.lines.contains { $0.hasPrefix("USAGE: \(binary)") }, "\(binary) --help printed \(help.lines.prefix(3))")
        }
        // The packages behind the libraries they do need, for the installer.
        let depends = try String(contentsOfFile: package.path("DEPENDS"), encoding: .utf8).split(separator: "\n").filter { !$0.hasPrefix("#") }
        for required in ["libc6", "libmosquitto1", "libsqlite3-0"] {
            #expect(depends.contains(Substring(required)), "DEPENDS: \(depends)")
        }
    }

    @Test("the installed configs run a session on the packaged agent that the packaged aggregator counts")
    func installedFleet() async throws {
        let package = try await Unpacked()
        let agentConfig = try String(contentsOfFile: package.path("etc/spectra/agent.yaml"), encoding: .utf8)
        #expect(!agentConfig.split(separator: "\n").contains { $0.hasPrefix("dataDir:") }, "state goes where systemd's StateDirectory says")
        #expect(agentConfig.contains("  profile: /etc/spectra/calibration/default.yaml"))
        let aggregatorConfig = try String(contentsOfFile: package.path("etc/spectra/aggregator.yaml"), encoding: .utf8)
        #expect(aggregatorConfig.contains("database: /var/lib/spectra-aggregator/aggregator.sqlite"))
        #expect(FileManager.default.fileExists(atPath: package.path("etc/systemd/system/spectra-agent.service")))
        #expect(FileManager.default.fileExists(atPath: package.path("etc/systemd/system/spectra-aggregator.service")))

        let broker = try await MosquittoBroker()
        let state = package.folder.appendingPathComponent("state")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let httpPort = try TestEnvironment.freePort()
        // The operator's first step on a new install: an API token (read-only fleet figures).
        let created = try package.start("spectra-aggregator", [
            "tokens", "create", "package-test", "--role", "viewer", "--config", package.path("etc/spectra/aggregator.yaml"),
            "--set", "database=\(state.path)/aggregator.sqlite",
        ])
        #expect(await created.wait(timeout: 30) == 0, "tokens create: \(created.standardError)")
        let token = try #require(created.lines.last { $0.hasPrefix("spectra_") })
        // What systemd's unit gives the aggregator; the test's broker, port and folder instead of
        // the installed ones.
        let aggregator = try package.start("spectra-aggregator", [
            "run", "--config", package.path("etc/spectra/aggregator.yaml"),
            "--set", "mqtt.url=mqtt://127.0.0.1:\(broker.port)", "--set", "http.port=\(httpPort)",
            "--set", "database=\(state.path)/aggregator.sqlite",
        ])
        let base = "http://127.0.0.1:\(httpPort)"
        #expect(await eventually(timeout: 20) { ((try? await AggregatorEndToEndTests.get(base + "/healthz", token: token))?["broker"] as? String) == "connected" },
                "aggregator did not come up: \(aggregator.standardError)")

        // The agent as its unit runs it: state in STATE_DIRECTORY; the profile installed under
        // /etc is here where the package was unpacked.
        let systemd = ["STATE_DIRECTORY": "\(state.path)/agent"]
        let agent = try package.start("spectra-agent", [
            "run", "--config", package.path("etc/spectra/agent.yaml"),
            "--set", "mqtt.url=mqtt://127.0.0.1:\(broker.port)",
            "--set", "session.profile=\(package.path("etc/spectra/calibration/default.yaml"))",
            "--set", "session.timeScale=300",
        ], environment: systemd)
        #expect(await eventually(timeout: 20) { FileManager.default.fileExists(atPath: "\(state.path)/agent/agent.sock") },
                "no control socket in STATE_DIRECTORY: \(agent.standardError)")
        let start = try package.start("spectra-agent", ["session", "start", "--level", "1"], environment: systemd)
        #expect(await start.wait(timeout: 30) == 0, "session start: \(start.standardError)")

        let counted = await eventually(timeout: 30) {
            let summary = try? await AggregatorEndToEndTests.get(base + "/api/v1/fleet/summary?fleet=demo", token: token)
            return ((summary?["sessions"] as? [String: Any])?["completed"] as? Int) == 1
        }
        #expect(counted, "the aggregator counts the session: agent log:\n\(agent.standardError.suffix(3000))")
        agent.send(SIGTERM)
        aggregator.send(SIGTERM)
        #expect(await agent.wait(timeout: 20) == 0)
        #expect(await aggregator.wait(timeout: 20) == 0)
    }
}
