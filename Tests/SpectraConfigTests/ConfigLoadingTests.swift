import EdgeAgent
import Aggregator
import Foundation
import SpectraConfig
import Testing
import Waveform

@Suite("Configuration loading")
struct ConfigLoadingTests {
    static var packageRoot: URL {
        var folder = URL(fileURLWithPath: #filePath)
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("Package.swift").path) {
            folder = folder.deletingLastPathComponent()
        }
        return folder
    }

    func write(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("cfg-\(UUID().uuidString).yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func agent(file: String?, overrides: [String: String] = [:], environment: [String: String] = [:]) async throws -> AgentConfiguration {
        let fields = try await ConfigLoader(filePath: file, overrides: overrides, environment: environment)
            .load(knownKeys: AgentConfiguration.keys)
        return try AgentConfiguration(fields: fields)
    }

    @Test("the shipped agent.yaml and aggregator.yaml load with their documented values")
    func shippedFiles() async throws {
        let root = Self.packageRoot.path
        let agent = try await agent(file: "\(root)/Config/agent.yaml")
        #expect(agent.fleet.rawValue == "demo")
        #expect(agent.gateway.rawValue == "gw-0001")
        #expect(agent.groups.map(\.rawValue) == ["default"])
        #expect(agent.broker.url == "mqtt://127.0.0.1:1883")
        #expect(agent.broker.password == nil)
        #expect(agent.telemetryIntervalSeconds == 1)
        #expect(agent.idleTelemetryIntervalSeconds == 60)
        let fields = try await ConfigLoader(filePath: "\(root)/Config/aggregator.yaml", environment: [:])
            .load(knownKeys: AggregatorConfiguration.keys)
        let aggregator = try AggregatorConfiguration(fields: fields)
        #expect(aggregator.httpPort == 8080)
        #expect(aggregator.shareGroup == "", "plain subscriptions unless a group is asked for")
        #expect(aggregator.databasePath == "var/aggregator.sqlite")
    }

    @Test("command line beats environment beats file beats default")
    func precedence() async throws {
        let file = try write("fleet: demo\ngateway: gw-file\ntelemetry:\n  intervalS: 2\n  idleIntervalS: 30\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fromFile = try await agent(file: file)
        #expect(fromFile.gateway.rawValue == "gw-file")
        #expect(fromFile.telemetryIntervalSeconds == 2)
        #expect(fromFile.maxSessionsPerDay == 1)  // default
        let fromEnvironment = try await agent(
            file: file, environment: ["SPECTRA_GATEWAY": "gw-env", "SPECTRA_TELEMETRY_INTERVAL_S": "5"])
        #expect(fromEnvironment.gateway.rawValue == "gw-env")
        #expect(fromEnvironment.telemetryIntervalSeconds == 5)
        #expect(fromEnvironment.idleTelemetryIntervalSeconds == 30)
        let fromCommandLine = try await agent(
            file: file, overrides: ["gateway": "gw-cli", "groups": "a,b"], environment: ["SPECTRA_GATEWAY": "gw-env"])
        #expect(fromCommandLine.gateway.rawValue == "gw-cli")
        #expect(fromCommandLine.groups.map(\.rawValue) == ["a", "b"])
    }

    @Test("headband faults load on either clock: the headband's own, or from each session's start")
    func headbandFaults() async throws {
        let file = try write("fleet: demo\ngateway: gw-1\nheadband:\n  faults: [press@30, liftoff@session+400+3]\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let faults = try await agent(file: file).headbandFaults.compactMap(ScriptedFault.init(script:))
        #expect(faults == [
            ScriptedFault(fault: .button(atS: 30, .short)),
            ScriptedFault(fault: .liftOff(channel: nil, atS: 400, durationS: 3), perSession: true),
        ])
    }

    static let badFiles: [(String, String, String)] = [
        ("fleet: demo\n", "gateway", "is required"),
        ("fleet: demo\ngateway: gw/1\n", "gateway", "not a valid id"),
        ("fleet: demo\ngateway: gw-1\nmqtt:\n  url: http://x\n", "mqtt.url", "is not a broker URL"),
        ("fleet: demo\ngateway: gw-1\nmqtt:\n  keepaliveS: 1\n", "mqtt.keepaliveS", "outside 5...3600"),
        ("fleet: demo\ngateway: gw-1\noutbox:\n  durability: sometimes\n", "outbox.durability", "not one of normal, full"),
        ("fleet: demo\ngateway: gw-1\ntelemetry:\n  intervalS: fast\n", "telemetry.intervalS", "is not a number"),
        ("fleet: demo\ngateway: gw-1\ntelemtry:\n  intervalS: 1\n", "telemtry.intervalS", "unknown key"),
        ("fleet: demo\ngateway: gw-1\nmqtt:\n  tls:\n    certFile: a.pem\n", "mqtt.tls.keyFile", "needs both"),
        ("fleet: demo\ngateway: gw-1\nheadband:\n  faults: [liftoff@session400]\n", "headband.faults", "liftoff@session+400+3"),
        ("fleet: demo\ngateway: gw-1\nheadband:\n  faults: [melt@30]\n", "headband.faults", "'melt@30' is not a fault"),
    ]

    @Test("a bad file gives one error naming the file, the key and the problem", arguments: badFiles.indices)
    func badFile(index: Int) async throws {
        let (text, key, problem) = Self.badFiles[index]
        let file = try write(text)
        defer { try? FileManager.default.removeItem(atPath: file) }
        do {
            _ = try await agent(file: file)
            Issue.record("accepted: \(text)")
        } catch let error as ConfigurationError {
            #expect(error.file == file)
            #expect(error.key == key)
            #expect(error.description.contains(problem), "\(error)")
            #expect(!error.description.contains("\n"))
        }
    }

    @Test("a missing file and a file that is not YAML are named")
    func unreadableFiles() async throws {
        await #expect(throws: ConfigurationError(file: "/nonexistent/agent.yaml", problem: "the file does not exist; pass an existing file with --config")) {
            _ = try await agent(file: "/nonexistent/agent.yaml")
        }
        let file = try write("fleet: [demo\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        do {
            _ = try await agent(file: file)
            Issue.record("accepted malformed YAML")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("is not valid YAML"))
            #expect(error.description.contains("line 1") || error.description.contains("2:1"))
        }
    }

    @Test("environment names follow the key's words")
    func environmentNames() throws {
        #expect(ConfigLoader.environmentName(forKey: "mqtt.keepaliveS") == "SPECTRA_MQTT_KEEPALIVE_S")
        #expect(ConfigLoader.environmentName(forKey: "telemetry.idleIntervalS") == "SPECTRA_TELEMETRY_IDLE_INTERVAL_S")
        #expect(throws: ConfigurationError.self) { try ConfigLoader.parseOverrides(["noequals"]) }
        #expect(try ConfigLoader.parseOverrides(["a.b=c=d"]) == ["a.b": "c=d"])
    }

    @Test("broker URLs")
    func brokerURLs() {
        #expect(BrokerConfiguration.parseURL("mqtt://127.0.0.1")! == (false, "127.0.0.1", 1883))
        #expect(BrokerConfiguration.parseURL("mqtts://broker.example:9883")! == (true, "broker.example", 9883))
        #expect(BrokerConfiguration.parseURL("mqtt://[::1]:1884")! == (false, "::1", 1884))
        #expect(BrokerConfiguration.parseURL("mqtt://host:99999") == nil)
        #expect(BrokerConfiguration.parseURL("tcp://host:1883") == nil)
        #expect(BrokerConfiguration.parseURL("mqtt://") == nil)
    }
}
