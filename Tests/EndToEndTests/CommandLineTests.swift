import Foundation
import SpectraTesting
import Testing

/// The shipped binaries, run as an operator runs them.
@Suite("Command lines")
struct CommandLineTests {
    let root = TestEnvironment.packageRoot.path

    @Test("every executable answers --help with a usage line", arguments: [
        "spectra-agent", "spectra-aggregator", "spectra-ctl", "spectra-fleetsim", "spectra-headband-emu",
    ])
    func help(executable: String) async throws {
        let result = try await ChildProcess.run(TestEnvironment.product(executable), ["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: \(executable)"))
    }

    @Test("no binary defines a C library function (read, close, socketpair...): libmosquitto, OpenSSL and SQLite get libc's own", arguments: [
        "spectra-agent", "spectra-aggregator", "spectra-ctl", "spectra-fleetsim", "spectra-headband-emu", "spectra-bench",
    ])
    func noLibcOverrides(executable: String) async throws {
        let result = try await ChildProcess.run("/bin/bash", ["\(root)/Deploy/libc-overrides.sh", TestEnvironment.product(executable)])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    static var hardFileLimit: Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(clamping: limit.rlim_max)
    }

    @Test("spectra-fleetsim refuses more gateways than the open-file limit holds, saying how many fit",
          .enabled(if: hardFileLimit < 590_000, "--gateways stops at 100,000"))
    func fleetsimFileLimit() async throws {
        let hardLimit = Self.hardFileLimit
        let tooMany = hardLimit / 6 + 10
        let result = try await ChildProcess.run(
            TestEnvironment.product("spectra-fleetsim"), ["--gateways", "\(tooMany)", "--broker", "mqtt://127.0.0.1:1"])
        #expect(result.status != 0)
        let fit = (hardLimit - 256) / 6
        #expect(result.stderr.contains("\(tooMany) gateways need about") && result.stderr.contains("run at most \(fit) gateways"), "\(result.stderr)")
    }

    @Test("spectra-agent config show applies file, environment and --set in that precedence")
    func configShow() async throws {
        let result = try await ChildProcess.run(
            TestEnvironment.product("spectra-agent"),
            ["config", "show", "--config", "\(root)/Config/agent.yaml", "--set", "gateway=gw-cli", "--json"],
            environment: ["SPECTRA_GATEWAY": "gw-env", "SPECTRA_MQTT_URL": "mqtt://10.1.2.3:1999"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: String]
        #expect(object?["gateway"] == "gw-cli")
        #expect(object?["mqtt.url"] == "mqtt://10.1.2.3:1999")
        #expect(object?["fleet"] == "demo")
    }

    @Test("a bad config file exits 2 with one line naming the file and the key")
    func badConfig() async throws {
        let dir = try TestEnvironment.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("agent.yaml").path
        try "fleet: demo\ngateway: gw-1\nmqtt:\n  keepaliveS: soon\n".write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), ["config", "show", "--config", file])
        #expect(result.status == 2)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(result.stderr.contains(file) && result.stderr.contains("mqtt.keepaliveS"))

        let missing = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["config", "show", "--config", "\(dir.path)/none.yaml"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("none.yaml") && missing.stderr.contains("does not exist"))
    }

    @Test("spectra-ctl makes a key pair with a private file only its owner can read, and never prints it")
    func keys() async throws {
        let dir = try TestEnvironment.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ctl = TestEnvironment.product("spectra-ctl")
        let generated = try await ChildProcess.run(ctl, ["keys", "generate", "--out", dir.path])
        #expect(generated.status == 0)
        let keyID = generated.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(keyID.count == 16 && keyID.allSatisfy(\.isHexDigit))
        #expect(!generated.stdout.contains("PRIVATE"))
        let attributes = try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent("signing.key").path)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        for file in ["signing.key", "signing.pub"] {
            let id = try await ChildProcess.run(ctl, ["keys", "id", dir.appendingPathComponent(file).path])
            #expect(id.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == keyID)
        }
        let again = try await ChildProcess.run(ctl, ["keys", "generate", "--out", dir.path])
        #expect(again.status != 0)
        #expect(again.stderr.contains("already exists"))
    }
}

extension CommandLineTests {
    @Test("every binary's --version prints the same release, and CHANGELOG.md has a section for it")
    func versions() async throws {
        var printed: Set<String> = []
        for binary in ["spectra-agent", "spectra-aggregator", "spectra-ctl", "spectra-fleetsim", "spectra-headband-emu", "spectra-bench"] {
            let result = try await ChildProcess.run(TestEnvironment.product(binary), ["--version"])
            #expect(result.status == 0, "\(binary): \(result.stderr)")
            printed.insert(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        #expect(printed.count == 1 && printed.first?.split(separator: ".").count == 3, "\(printed)")
        let version = printed.first ?? "?"
        let changelog = try String(contentsOfFile: "\(root)/CHANGELOG.md", encoding: .utf8)
        #expect(changelog.split(separator: "\n").contains { $0.hasPrefix("## \(version)") }, "CHANGELOG.md has no '## \(version)' section")
    }
}
