import ArgumentParser
import EdgeAgent
import FleetSim
import Foundation
import Logging
import MQTT
import SpectraConfig
import SpectraProtocol

@main
struct SpectraFleetSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-fleetsim",
        abstract: "Runs many simulated gateways and wearers against a real broker (demo and load tests).",
        discussion: """
            Each gateway runs the agent's own session controller (waveform engine, safety monitor,
            simulated headband), regimen, SQLite outbox and MQTT client. Wearers have habits
            (diligent, typical, lapsing) and start on different days; sessions see lift-offs, flat
            batteries and lost headbands; some gateways lose their uplink for hours and some have
            unsynced clocks. The simulated calendar ends now: --days 30 --speed 8640 plays the last
            30 days in 5 minutes. The same --seed gives the same wearers and events.

            The broker is reached with the same mqtt.* settings as the other binaries (mqtt.url,
            mqtt.username, mqtt.password, mqtt.tls.caFile/certFile/keyFile, mqtt.keepaliveS,
            mqtt.protocol), from --config FILE, SPECTRA_MQTT_* variables and --set KEY=VALUE;
            --broker URL sets mqtt.url. Every gateway connects as FLEET-GATEWAY with those
            credentials, so the broker account must be allowed to publish for the whole fleet.

            It exits 1 when any message was not delivered.

            Example:
              spectra-fleetsim --gateways 200 --speed 8640 --days 30 --broker mqtt://127.0.0.1:1883 --seed 7
            """,
        version: SpectraVersion.current)

    @Option(help: "Simulated gateways.") var gateways = 100
    @Option(help: ArgumentHelp(
        "Number of this process's first gateway (gw-00001 is 1): several processes share one fleet with distinct gateways.",
        valueName: "n")) var firstGateway = 1
    @Option(help: "Simulated seconds per real second.") var speed = 1440.0
    @Option(help: "Simulated days, ending now.") var days = 14
    @Option(help: ArgumentHelp("Broker URL (mqtt.url; default mqtt://127.0.0.1:1883).", valueName: "url")) var broker: String?
    @OptionGroup var settings: ConfigOptions
    @Option(help: "Seed for wearers, habits and faults.") var seed: UInt64 = 1
    @Option(help: ArgumentHelp("Fleet name.", valueName: "name")) var fleet = "demo"
    @Option(help: ArgumentHelp("Where the gateways' outboxes live.", valueName: "dir")) var dataDir = "var/fleetsim"
    @Option(help: ArgumentHelp("Calibration profile.", valueName: "file")) var profile = "Config/calibration/default.yaml"
    @Option(help: "Telemetry interval in a session, real seconds.") var telemetryInterval = 1.0
    @Option(help: "Telemetry interval when idle, real seconds.") var idleTelemetryInterval = 60.0
    @Flag(help: "After the simulated days, keep the gateways online (idle) until Ctrl-C.") var live = false

    func validate() throws {
        guard (1...100_000).contains(gateways) else { throw ValidationError("--gateways must be 1-100000") }
        guard (1...1_000_000).contains(firstGateway) else { throw ValidationError("--first-gateway must be 1-1000000") }
        guard speed >= 1, speed <= 1_000_000 else { throw ValidationError("--speed must be 1-1000000") }
        guard (0...3650).contains(days) else { throw ValidationError("--days must be 0-3650") }
        guard telemetryInterval >= 0.05, idleTelemetryInterval >= 0.05 else { throw ValidationError("telemetry intervals must be at least 0.05 s") }
        guard Identifier.isValid(fleet) else { throw ValidationError("--fleet must be 1-64 of A-Z a-z 0-9 _ -") }
    }

    mutating func run() async throws {
        if let broker { settings.overrides.append("mqtt.url=\(broker)") }
        let fields = await settings.load(knownKeys: BrokerConfiguration.keys)
        let brokerSettings: BrokerConfiguration
        do {
            brokerSettings = try BrokerConfiguration(fields: fields)
        } catch {
            ConfigOptions.exit(with: error)
        }
        AllocatorTuning.apply()
        do {
            try FleetSimulator.reserveOpenFiles(gateways: gateways)
        } catch {
            throw ValidationError("--gateways: \(error)")
        }
        let calibration: CalibrationProfileBox
        do {
            calibration = CalibrationProfileBox(try ProfileLoader.load(path: profile))
        } catch {
            throw ValidationError("\(error)")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = .error
            return handler
        }
        let simulator = FleetSimulator(
            configuration: .init(
                fleet: try Identifier(fleet), gateways: gateways, firstGateway: firstGateway - 1, speed: speed, days: days, live: live, seed: seed,
                broker: brokerSettings.client(id: "fleetsim", backoff: Backoff(minimumSeconds: 0.5, maximumSeconds: 30)),
                dataDirectory: dataDir, telemetryIntervalSeconds: telemetryInterval, idleTelemetryIntervalSeconds: idleTelemetryInterval),
            profile: calibration.value, logger: Logger(label: "spectra.fleetsim"))
        let terminal = isatty(STDOUT_FILENO) == 1
        let range = firstGateway == 1 ? "" : " (from \(FleetSimulator.gatewayID(firstGateway - 1)))"
        print("spectra-fleetsim: \(gateways) gateways\(range) of fleet \(fleet), \(days) days at \(Int(speed))x, broker \(brokerSettings.url) (MQTT \(brokerSettings.protocolVersion.rawValue)), seed \(seed)")
        let runTask = Task {
            try await simulator.run { line in
                if terminal {
                    print("\r\u{1B}[K" + line, terminator: "")
                } else {
                    print(line)
                }
                fflush(nil)
            }
        }
        let signals = [SIGINT, SIGTERM].map { signal -> DispatchSourceSignal in
            Foundation.signal(signal, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signal)
            source.setEventHandler { runTask.cancel() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }
        try await runTask.value
        if terminal { print("") }
        let counters = simulator.counters
        let made = counters.enqueued.load(ordering: .relaxed)
        let undelivered = counters.undelivered.load(ordering: .relaxed)
        print("done: \(counters.sessionsStarted.load(ordering: .relaxed)) sessions started, "
            + "\(counters.sessionsCompleted.load(ordering: .relaxed)) completed, \(counters.sessionsAborted.load(ordering: .relaxed)) aborted, "
            + "\(made) messages, \(made - undelivered) delivered")
        if undelivered > 0 {
            let refused = counters.refused.load(ordering: .relaxed)
            let why = refused > 0
                ? "\(refused) were refused by the broker (\(counters.lastLinkError ?? "see above")): check its ACL for the fleet's topics"
                : "the broker did not take them before the gateways' 15 s drain ended"
                    + (counters.lastLinkError.map { " (last error: \($0))" } ?? "") + ": check the broker address, credentials and its log"
            FileHandle.standardError.write(Data("spectra-fleetsim: \(undelivered) of \(made) messages were not delivered; \(why)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Carries a loaded profile out of a throwing scope.
struct CalibrationProfileBox: @unchecked Sendable {
    let value: Waveform.CalibrationProfile
    init(_ value: Waveform.CalibrationProfile) { self.value = value }
}

import Waveform
