import ArgumentParser
import EdgeAgent
import Foundation
import SpectraConfig

@main
struct SpectraAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-agent",
        abstract: "The Spectra Sculpt gateway agent: waveform engine, safety monitor, outbox and MQTT link.",
        discussion: """
            Configuration precedence: --set KEY=VALUE > SPECTRA_* environment > --config FILE > defaults.

            Example:
              spectra-agent config show --config Config/agent.yaml --set gateway=gw-0042
            """,
        version: AgentVersion.current,
        subcommands: [RunCommand.self, SessionCommand.self, StatusCommand.self, ConfigCommand.self, WaveformCommand.self]
    )
}

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Inspect the agent's configuration.",
        subcommands: [Show.self]
    )

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration after every layer is applied.",
            discussion: "Example: spectra-agent config show --config Config/agent.yaml --json")

        @OptionGroup var options: ConfigOptions

        @Flag(help: "Print JSON instead of text.")
        var json = false

        func run() async throws {
            let configuration = await loadAgentConfiguration(options)
            let rows: [(String, String)] = [
                ("fleet", configuration.fleet.rawValue),
                ("gateway", configuration.gateway.rawValue),
                ("groups", configuration.groups.map(\.rawValue).joined(separator: ",")),
                ("dataDir", configuration.dataDirectory),
                ("mqtt.url", configuration.broker.url),
                ("mqtt.protocol", configuration.broker.protocolVersion.rawValue),
                ("mqtt.keepaliveS", String(configuration.broker.keepaliveSeconds)),
                ("outbox.durability", configuration.durability.rawValue),
                ("outbox.maxBytes", String(configuration.outboxMaxBytes)),
                ("outbox.minFreeBytes", String(configuration.outboxMinFreeBytes)),
                ("telemetry.intervalS", String(configuration.telemetryIntervalSeconds)),
                ("telemetry.idleIntervalS", String(configuration.idleTelemetryIntervalSeconds)),
                ("session.profile", configuration.profilePath),
                ("session.maxPerDay", String(configuration.maxSessionsPerDay)),
                ("trust.keys", configuration.trustedKeyFiles.joined(separator: ",")),
            ]
            if json {
                let object = Dictionary(uniqueKeysWithValues: rows)
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
                print(String(decoding: data, as: UTF8.self))
            } else {
                for (key, value) in rows { print("\(key): \(value)") }
            }
        }
    }
}
