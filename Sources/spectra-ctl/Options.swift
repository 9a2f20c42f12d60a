import ArgumentParser
import FleetControl
import Foundation
import SpectraConfig
import SpectraProtocol

/// Broker connection and fleet, shared by every command that talks to the broker.
struct ConnectionOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Broker URL, e.g. mqtt://127.0.0.1:1883 or mqtts://broker:8883.", valueName: "url"))
    var broker: String?
    @Option(name: .customLong("tls-ca"), help: ArgumentHelp("CA certificate file for mqtts://.", valueName: "file"))
    var tlsCA: String?
    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("Client certificate file.", valueName: "file"))
    var tlsCert: String?
    @Option(name: .customLong("tls-key"), help: ArgumentHelp("Client certificate's private key file.", valueName: "file"))
    var tlsKey: String?
    @Option(help: ArgumentHelp("Broker user name (the password comes from SPECTRA_MQTT_PASSWORD or --config).", valueName: "name"))
    var username: String?
    @Option(help: ArgumentHelp("A YAML file with mqtt.*, fleet, aggregator.url and aggregator.token keys.", valueName: "file"))
    var config: String?

    static let keys = BrokerConfiguration.keys.union(["fleet", "aggregator.url", "aggregator.token"])

    /// The layered settings: flags > SPECTRA_* environment > --config file > defaults.
    func fields() async throws -> ConfigFields {
        var overrides: [String: String] = [:]
        overrides["mqtt.url"] = broker
        overrides["mqtt.tls.caFile"] = tlsCA
        overrides["mqtt.tls.certFile"] = tlsCert
        overrides["mqtt.tls.keyFile"] = tlsKey
        overrides["mqtt.username"] = username
        do {
            return try await ConfigLoader(filePath: config, overrides: overrides).load(knownKeys: Self.keys)
        } catch {
            throw UsageFailure(error.description)
        }
    }

    func brokerConfiguration() async throws -> BrokerConfiguration {
        do {
            return try BrokerConfiguration(fields: try await fields())
        } catch let error as ConfigurationError {
            throw UsageFailure(error.description)
        }
    }

    func connect() async throws -> OperatorClient {
        do {
            return try await OperatorClient.connect(try await brokerConfiguration())
        } catch let error as OperatorError {
            throw UsageFailure(error.description)
        }
    }

    /// `--fleet`, else `fleet` from the environment or --config, else `demo`.
    func fleet(_ flag: String?) async throws -> Identifier {
        var text = flag
        if text == nil { text = try await fields().optionalString("fleet") }
        let name = text ?? "demo"
        do {
            return try Identifier(name, field: "fleet")
        } catch {
            throw UsageFailure("--fleet: \(error.reason)")
        }
    }
}

/// Exactly one of --gateway, --group, --all.
struct TargetOptions: ParsableArguments {
    @Option(help: ArgumentHelp("One gateway.", valueName: "id")) var gateway: String?
    @Option(help: ArgumentHelp("Every gateway in a group.", valueName: "name")) var group: String?
    @Flag(help: "The whole fleet.") var all = false

    func target() throws -> DocumentTarget {
        let chosen = [gateway != nil, group != nil, all].filter { $0 }.count
        guard chosen == 1 else { throw UsageFailure("name exactly one target: --gateway ID, --group NAME or --all") }
        do {
            if let gateway { return .gateway(try Identifier(gateway, field: "gateway")) }
            if let group { return .group(try Identifier(group, field: "group")) }
        } catch {
            throw UsageFailure(error.reason)
        }
        return .all
    }
}

/// Reads an operator's private key; never echoes it.
func loadSigningKey(_ path: String) throws -> SigningKey {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        throw UsageFailure("cannot read the key file \(path)")
    }
    guard let key = try? SigningKey(pem: text) else {
        throw UsageFailure("\(path) is not an Ed25519 private key in PEM form; make one with 'spectra-ctl keys generate'")
    }
    return key
}

/// Parses `30s`, `10m`, `2h`, `7d` (a bare number is seconds).
func parseDuration(_ text: String, option: String) throws -> TimeInterval {
    guard let seconds = DurationText.seconds(text) else {
        throw UsageFailure("\(option) must be a duration like 30s, 10m, 2h or 7d, got '\(text)'")
    }
    return seconds
}

