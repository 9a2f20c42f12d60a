import ArgumentParser
import EdgeAgent
import Foundation
import Logging
import ServiceLifecycle
import SpectraConfig
import SpectraProtocol

/// Loads the agent's configuration (exit 2 with one line on a problem).
func loadAgentConfiguration(_ options: ConfigOptions) async -> AgentConfiguration {
    let fields = await options.load(knownKeys: AgentConfiguration.keys)
    do {
        return try AgentConfiguration(
            fields: fields, defaultDataDirectory: ProcessInfo.processInfo.environment["STATE_DIRECTORY"] ?? "var")
    } catch {
        ConfigOptions.exit(with: error)
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the gateway agent until SIGTERM or SIGINT.",
        discussion: "Example: spectra-agent run --config Config/agent.yaml")

    @OptionGroup var options: ConfigOptions

    func run() async throws {
        AllocatorTuning.apply()
        // A daemon: a write to a peer that has gone is an error to handle (EPIPE), never a
        // reason to end the agent and the session it runs.
        signal(SIGPIPE, SIG_IGN)
        let configuration = await loadAgentConfiguration(options)
        let profile: CalibrationProfileBox
        do {
            profile = CalibrationProfileBox(try ProfileLoader.load(path: configuration.profilePath))
        } catch {
            ConfigOptions.exit(with: error)
        }
        var keys: [VerifyingKey] = []
        for file in configuration.trustedKeyFiles {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8), let key = try? VerifyingKey(pem: text) else {
                ConfigOptions.exit(with: ConfigurationError(
                    file: options.config ?? "defaults", key: "trust.keys", problem: "\(file) is not a readable Ed25519 public key (PEM)"))
            }
            keys.append(key)
        }
        var logger = Logger(label: "spectra.agent")
        logger[metadataKey: "gateway"] = "\(configuration.gateway)"
        let runtime = AgentRuntime(configuration: configuration, profile: profile.value, trustedKeys: keys, logger: logger)
        // The broker client, then the outbox, then the runtime: a SIGTERM stops them in reverse,
        // so the runtime ends the session and drains through an outbox and a client still
        // running; the outbox then commits and closes, and the client disconnects last.
        let transport = try await runtime.open()
        let group = ServiceGroup(
            configuration: .init(
                services: (transport + [runtime]).map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }
}

import Waveform

/// Carries a loaded profile out of a throwing scope.
struct CalibrationProfileBox {
    let value: CalibrationProfile
    init(_ value: CalibrationProfile) { self.value = value }
}

struct SessionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "session",
        abstract: "Start, stop or change the level of a session on the running agent (local only).",
        subcommands: [Start.self, Stop.self, Level.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a session.", discussion: "Example: spectra-agent session start --level 2 --config Config/agent.yaml")
        @OptionGroup var options: ConfigOptions
        @Option(help: "Level 1-3 (default: the highest unlocked).") var level: Int?
        @Flag(help: "Print JSON.") var json = false
        func validate() throws {
            if let level, !(1...3).contains(level) { throw ValidationError("--level must be 1, 2 or 3") }
        }
        func run() async throws {
            var request: [String: Any] = ["command": "start"]
            if let level { request["level"] = level }
            try await send(request, options: options, json: json) { "started session \($0["sessionId"] ?? "")" }
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop the running session.")
        @OptionGroup var options: ConfigOptions
        @Flag(help: "Print JSON.") var json = false
        func run() async throws {
            try await send(["command": "stop"], options: options, json: json) { _ in "stopping" }
        }
    }

    struct Level: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change the running session's level (applied through a ramp).")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "Level 1-3.") var level: Int
        @Flag(help: "Print JSON.") var json = false
        func validate() throws {
            guard (1...3).contains(level) else { throw ValidationError("the level must be 1, 2 or 3") }
        }
        func run() async throws {
            try await send(["command": "level", "level": level], options: options, json: json) { "level \($0["level"] ?? "")" }
        }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Print the running agent's live state.",
        discussion: "Example: spectra-agent status --json --config Config/agent.yaml")
    @OptionGroup var options: ConfigOptions
    @Flag(help: "Print JSON.") var json = false
    func run() async throws {
        try await send(["command": "status"], options: options, json: json) { response in
            response.filter { $0.key != "ok" }.sorted { $0.key < $1.key }.map { "\($0.key): \(textValue($0.value))" }.joined(separator: "\n")
        }
    }
}

/// The running agent's control socket. A control command needs only `dataDir` (the running
/// agent has its own configuration), so nothing else is required of `--config`. Without one:
/// systemd's `STATE_DIRECTORY`, else the checkout's `var` when an agent runs there, else the
/// installed agent's `/var/lib/spectra-agent`.
func controlSocketPath(_ options: ConfigOptions) async -> String {
    let fields = await options.load(knownKeys: AgentConfiguration.keys)
    let checkout = "var"
    let fallback = ProcessInfo.processInfo.environment["STATE_DIRECTORY"]
        ?? (FileManager.default.fileExists(atPath: AgentRuntime.controlSocketPath(dataDirectory: checkout)) ? checkout : "/var/lib/spectra-agent")
    do {
        return AgentRuntime.controlSocketPath(dataDirectory: try fields.string("dataDir", default: fallback))
    } catch {
        ConfigOptions.exit(with: error)
    }
}

/// A decoded JSON value as text for a person: booleans as `true` / `false` (Foundation on Linux
/// hands them over as numbers, which print as 1 and 0).
func textValue(_ value: Any) -> String {
    if let number = value as? NSNumber, String(cString: number.objCType) == "c" { return number.boolValue ? "true" : "false" }
    return "\(value)"
}

/// Sends a request over the control socket and prints the answer; one line and exit 1 on failure.
func send(_ request: [String: Any], options: ConfigOptions, json: Bool, text: ([String: Any]) -> String) async throws {
    let path = await controlSocketPath(options)
    let response: [String: Any]
    do {
        response = try ControlSocketClient.send(request, path: path)
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
    if json {
        let data = try JSONSerialization.data(withJSONObject: response, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
    guard response["ok"] as? Bool == true else {
        if !json { FileHandle.standardError.write(Data("error: \(response["error"] ?? "refused")\n".utf8)) }
        throw ExitCode(1)
    }
    if !json { print(text(response)) }
}
