import ArgumentParser
import FleetControl
import Foundation
import SpectraProtocol

struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Signed level and headband config per layer (fleet < group < gateway).",
        subcommands: [Push.self, Show.self, Clear.self])

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate, sign and publish the next version of a config layer.",
            discussion: """
                The body is checked against the same hard limits the agents enforce before anything is
                published; the version is one above the layer's retained document.

                Example:
                  spectra-ctl config push --fleet demo --group pilot --file level2.yaml --key keys/signing.key --expires 7d --wait

                with level2.yaml:
                  maxLevel: 2
                  levelUnlock: {level2AfterSessions: 5, level3AfterSessions: 20}
                """)

        @OptionGroup var connection: ConnectionOptions
        @Option(help: ArgumentHelp("Fleet (default: fleet from --config or SPECTRA_FLEET, else demo).", valueName: "name")) var fleet: String?
        @OptionGroup var target: TargetOptions
        @Option(help: ArgumentHelp("The config body, YAML.", valueName: "file")) var file: String
        @Option(help: ArgumentHelp("The operator's private signing key (PEM).", valueName: "file")) var key: String
        @Option(help: ArgumentHelp("Validity, e.g. 7d or 12h (default: no expiry).", valueName: "duration")) var expires: String?
        @Flag(help: "Wait for the targeted gateways' config.applied / config.rejected and report each.") var wait = false
        @Option(help: ArgumentHelp("How long --wait waits.", valueName: "duration")) var timeout = "30s"
        @Flag(help: "Publish a reset: applied by gateways because it is issued later, whatever the layer's version (the way back from a version pushed too far).")
        var reset = false
        @Option(help: ArgumentHelp("Another operator's public key the retained document may be signed with (repeatable; your own key always counts).", valueName: "file"))
        var trust: [String] = []
        @Flag(help: "Publish even over a retained document that does not verify against your key or --trust.") var force = false

        func run() async throws {
            let target = try target.target()
            let body: ConfigBody
            do {
                body = try ConfigBodyFile.load(path: file)
            } catch let error as OperatorError {
                throw UsageFailure(error.description)
            }
            let signingKey = try loadSigningKey(key)
            let expiresIn = try expires.map { try parseDuration($0, option: "--expires") }
            let waitSeconds = wait ? try parseDuration(timeout, option: "--timeout") : nil
            let fleet = try await connection.fleet(fleet)
            let client = try await connection.connect()
            defer { Task { await client.disconnect() } }
            let report: ConfigPush.Report
            do {
                report = try await ConfigPush.push(
                    fleet: fleet, target: target, body: body, key: signingKey, expiresIn: expiresIn, waitSeconds: waitSeconds, reset: reset,
                    trusted: try loadTrustedKeys(trust), force: force, on: client)
            } catch let error as OperatorError {
                throw UsageFailure(error.description)
            }
            print("published \(reset ? "a reset of " : "")\(target.layer) version \(report.version) (key \(report.keyID)) on \(report.topic)")
            try finish(report, waited: wait)
            await client.disconnect()
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Clear a layer: a signed document with no body, one version up.",
            discussion: "Example: spectra-ctl config clear --fleet demo --group pilot --key keys/signing.key")

        @OptionGroup var connection: ConnectionOptions
        @Option(help: ArgumentHelp("Fleet (default: from --config or SPECTRA_FLEET, else demo).", valueName: "name")) var fleet: String?
        @OptionGroup var target: TargetOptions
        @Option(help: ArgumentHelp("The operator's private signing key (PEM).", valueName: "file")) var key: String
        @Flag(help: "Wait for the targeted gateways to report.") var wait = false
        @Option(help: ArgumentHelp("How long --wait waits.", valueName: "duration")) var timeout = "30s"
        @Option(help: ArgumentHelp("Another operator's public key the retained document may be signed with (repeatable).", valueName: "file"))
        var trust: [String] = []
        @Flag(help: "Clear even over a retained document that does not verify against your key or --trust.") var force = false

        func run() async throws {
            let target = try target.target()
            let signingKey = try loadSigningKey(key)
            let waitSeconds = wait ? try parseDuration(timeout, option: "--timeout") : nil
            let fleet = try await connection.fleet(fleet)
            let client = try await connection.connect()
            let report: ConfigPush.Report
            do {
                report = try await ConfigPush.push(
                    fleet: fleet, target: target, body: nil, key: signingKey, expiresIn: nil, waitSeconds: waitSeconds,
                    trusted: try loadTrustedKeys(trust), force: force, on: client)
            } catch let error as OperatorError {
                throw UsageFailure(error.description)
            }
            print("cleared \(target.layer) with version \(report.version) (key \(report.keyID))")
            await client.disconnect()
            try finish(report, waited: wait)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the current signed documents per layer, verified against trusted keys.",
            discussion: """
                Example: spectra-ctl config show --fleet demo --trust keys/signing.pub
                """)

        @OptionGroup var connection: ConnectionOptions
        @Option(help: ArgumentHelp("Fleet (default: from --config or SPECTRA_FLEET, else demo).", valueName: "name")) var fleet: String?
        @Option(help: ArgumentHelp("A public (or private) key file to verify against (repeatable).", valueName: "file")) var trust: [String] = []
        @Flag(help: "One JSON object per layer.") var json = false

        func run() async throws {
            let keys = try loadTrustedKeys(trust)
            let keyring = Keyring(keys)
            let fleet = try await connection.fleet(fleet)
            let client = try await connection.connect()
            var messages: [(String, [UInt8])] = []
            for filter in ["all/cmd/config", "group/+/cmd/config", "gw/+/cmd/config"] {
                messages += try await client.retained("spectra/v1/\(fleet)/\(filter)").map { ($0.topic, $0.payload) }
            }
            await client.disconnect()
            if messages.isEmpty { print("no config documents are retained for fleet \(fleet)") }
            for (topic, payload) in messages where !payload.isEmpty {
                let line = describe(topic: topic, payload: Data(payload), keyring: keyring, checkSignature: !keys.isEmpty)
                if json {
                    let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
                    print(String(decoding: data, as: UTF8.self))
                } else {
                    let body = line["body"].flatMap { try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys, .fragmentsAllowed]) }
                        .map { String(decoding: $0, as: UTF8.self) } ?? "null"
                    print("\(line["layer"] ?? "?")  version \(line["version"] ?? "?")  \(line["signature"] ?? "")  issued \(line["issuedAt"] ?? "?")  expires \(line["expiresAt"] ?? "never")")
                    print("  \(body)")
                }
            }
        }

        func describe(topic: String, payload: Data, keyring: Keyring, checkSignature: Bool) -> [String: Any] {
            var line: [String: Any] = ["topic": topic]
            if case .groupConfig(_, let group)? = try? Topic(parsing: topic) { line["layer"] = "group:\(group)" }
            else if case .gatewayConfig(_, let gateway)? = try? Topic(parsing: topic) { line["layer"] = "gateway:\(gateway)" }
            else { line["layer"] = "all" }
            guard let signed = try? SignedDocument.decode(payload), let bytes = Data(base64Encoded: signed.payload),
                let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any]
            else {
                line["signature"] = "UNREADABLE (not a signed document)"
                return line
            }
            line["version"] = object["version"]
            line["issuedAt"] = object["issuedAt"]
            line["expiresAt"] = object["expiresAt"]
            line["body"] = object["body"]
            line["kid"] = signed.kid
            if checkSignature {
                do {
                    _ = try keyring.verify(signed)
                    line["signature"] = "verified (key \(signed.kid))"
                } catch {
                    line["signature"] = "NOT VERIFIED: \(error.description)"
                }
            } else {
                line["signature"] = "signature not checked (pass --trust)"
            }
            return line
        }
    }
}

/// Prints the per-gateway outcomes of a --wait and fails when any gateway did not apply.
func finish(_ report: ConfigPush.Report, waited: Bool) throws {
    guard waited else { return }
    if report.outcomes.isEmpty { print("no gateway of that target has reported its state yet; nothing to wait for") }
    for (gateway, outcome) in report.outcomes { print("  \(gateway): \(outcome)") }
    let failed = report.outcomes.filter { $0.outcome != .applied }
    if !failed.isEmpty {
        FileHandle.standardError.write(Data("spectra-ctl: \(failed.count) of \(report.outcomes.count) gateway(s) did not apply version \(report.version)\n".utf8))
        throw ExitCode(1)
    }
}

/// The keys in `paths`: public keys, or private keys (their public half).
func loadTrustedKeys(_ paths: [String]) throws -> [VerifyingKey] {
    var keys: [VerifyingKey] = []
    for path in paths {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw UsageFailure("cannot read \(path)") }
        if let key = try? VerifyingKey(pem: text) {
            keys.append(key)
        } else if let key = try? SigningKey(pem: text) {
            keys.append(key.verifyingKey)
        } else {
            throw UsageFailure("\(path) is not an Ed25519 key in PEM form")
        }
    }
    return keys
}
