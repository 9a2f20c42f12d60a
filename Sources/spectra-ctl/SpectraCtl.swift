import ArgumentParser
import Foundation
import SpectraProtocol

@main
struct SpectraCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-ctl",
        abstract: "The operator's tool: signing keys, config pushes, firmware rollouts, fleet queries.",
        discussion: """
            Broker options (--broker, --tls-ca, --tls-cert, --tls-key, --username) come from flags, the
            environment (SPECTRA_MQTT_URL, SPECTRA_MQTT_PASSWORD, ...) or a --config file with the same
            mqtt.* keys as the agent and aggregator; fleet and aggregator.url likewise. The queries
            (gateways, stats, sessions) send the API token in SPECTRA_AGGREGATOR_TOKEN or the config's
            aggregator.token (gateways and sessions need the operator role, stats viewer).

            Examples:
              spectra-ctl keys generate --out ~/.spectra/keys
              spectra-ctl config push --fleet demo --group pilot --file level2.yaml --key ~/.spectra/keys/signing.key --wait
              spectra-ctl firmware rollout --manifest firmware-2.5.0.manifest.json --waves 1,5,25,100 --max-failure-pct 5
              SPECTRA_AGGREGATOR_TOKEN=... spectra-ctl gateways --aggregator http://127.0.0.1:8080
            """,
        version: SpectraVersion.current,
        subcommands: [Keys.self, ConfigCommand.self, FirmwareCommand.self, StopCommand.self, Gateways.self, Stats.self, Sessions.self, Watch.self]
    )
}

/// One line on standard error and a non-zero exit: how every bad input ends.
/// ArgumentParser prints it as "Error: ..." alone (no usage block), exit status 1.
struct UsageFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make and inspect Ed25519 signing keys.", subcommands: [Generate.self, ID.self])

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new signing key pair.",
            discussion: """
                Writes DIR/signing.key (private, mode 0600) and DIR/signing.pub (public; give it to
                gateways under trust.keys). Prints the key id, never the private key.

                Example: spectra-ctl keys generate --out ~/.spectra/keys
                """)

        @Option(help: ArgumentHelp("Folder to write the key pair to (created if missing).", valueName: "dir"))
        var out: String

        @Flag(help: "Replace an existing key pair in that folder.")
        var force = false

        func run() async throws {
            let key = SigningKey()
            let folder = URL(fileURLWithPath: out)
            let privatePath = folder.appendingPathComponent("signing.key").path
            let publicPath = folder.appendingPathComponent("signing.pub").path
            let files = FileManager.default
            if !force && (files.fileExists(atPath: privatePath) || files.fileExists(atPath: publicPath)) {
                throw UsageFailure("\(privatePath) already exists; pass --force to replace it or choose another --out")
            }
            do {
                try files.createDirectory(at: folder, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
                try? files.removeItem(atPath: privatePath)
                guard files.createFile(atPath: privatePath, contents: Data(key.pem.utf8), attributes: [.posixPermissions: 0o600]) else {
                    throw UsageFailure("cannot write \(privatePath)")
                }
                try Data(key.verifyingKey.pem.utf8).write(to: URL(fileURLWithPath: publicPath))
            } catch {
                throw UsageFailure("cannot write the key pair to \(out): \(error)")
            }
            print(key.keyID)
        }
    }

    struct ID: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "id",
            abstract: "Print the key id of a private or public key file.",
            discussion: "Example: spectra-ctl keys id ~/.spectra/keys/signing.pub")

        @Argument(help: ArgumentHelp("A PEM key file (private or public).", valueName: "file"))
        var file: String

        func run() async throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw UsageFailure("cannot read \(file)")
            }
            if let publicKey = try? VerifyingKey(pem: text) {
                print(publicKey.keyID)
            } else if let privateKey = try? SigningKey(pem: text) {
                print(privateKey.keyID)
            } else {
                throw UsageFailure("\(file) is not an Ed25519 key in PEM form")
            }
        }
    }
}
