import ArgumentParser
import Crypto
import FleetControl
import Foundation
import SpectraProtocol

struct FirmwareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "firmware", abstract: "Signed firmware manifests and staged rollouts.",
        subcommands: [Publish.self, Rollout.self, Status.self])

    static func defaultStatePath(fleet: String, version: String) -> String { "var/rollouts/\(fleet)-\(version).json" }

    struct Publish: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a signed manifest for a firmware image (nothing is sent; 'rollout' sends it).",
            discussion: """
                Example:
                  spectra-ctl firmware publish --file sculpt-2.5.0.bin --version 2.5.0 \\
                      --url https://updates.example/sculpt-2.5.0.bin --key keys/signing.key
                writes firmware-2.5.0.manifest.json (the image's sha256 and size, signed).
                """)

        @Option(help: ArgumentHelp("The firmware image.", valueName: "file")) var file: String
        @Option(help: ArgumentHelp("Its version string.", valueName: "version")) var version: String
        @Option(help: ArgumentHelp("Where gateways download it (http or https).", valueName: "url")) var url: String
        @Option(help: ArgumentHelp("The operator's private signing key (PEM).", valueName: "file")) var key: String
        @Option(help: ArgumentHelp("Headband hardware revision it is built for.", valueName: "rev")) var hardware = "sculpt-r2"
        @Option(help: ArgumentHelp("Fleet (default: from --config or SPECTRA_FLEET, else demo).", valueName: "name")) var fleet: String?
        @Option(help: ArgumentHelp("Where to write the manifest (default firmware-VERSION.manifest.json).", valueName: "file")) var out: String?
        @Option(help: ArgumentHelp("How long the manifest stays valid: gateways refuse it after that (a replay cannot install it).", valueName: "duration"))
        var expires = "30d"
        @Flag(help: "A deliberate downgrade: gateways install it even over a newer version.") var allowDowngrade = false
        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            guard let scheme = URL(string: url)?.scheme, ["http", "https"].contains(scheme) else {
                throw UsageFailure("--url must be an http:// or https:// address, got '\(url)'")
            }
            guard !version.isEmpty, version.count <= 64 else { throw UsageFailure("--version must be 1-64 characters") }
            guard let image = FileManager.default.contents(atPath: file) else { throw UsageFailure("cannot read the image \(file)") }
            guard !image.isEmpty else { throw UsageFailure("\(file) is empty") }
            let signingKey = try loadSigningKey(key)
            let fleet = try await connection.fleet(fleet)
            let sha256 = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()
            let validity = try parseDuration(expires, option: "--expires")
            let manifest = FirmwareManifest(
                version: version, url: url, sha256: sha256, sizeBytes: image.count, hardware: hardware, allowDowngrade: allowDowngrade)
            // The document version only has to grow: seconds since 1970 do (and stay within
            // what gateways allow for the issue time).
            let now = Date()
            let document = DocumentPayload(
                kind: .firmware, fleet: fleet, target: .all, version: Int(now.timeIntervalSince1970), issuedAt: now,
                expiresAt: now.addingTimeInterval(validity), body: .firmware(manifest))
            let signed = signingKey.sign(document.encoded())
            let path = out ?? "firmware-\(version).manifest.json"
            do {
                try signed.encoded().write(to: URL(fileURLWithPath: path))
            } catch {
                throw UsageFailure("cannot write \(path): \(error.localizedDescription)")
            }
            print("wrote \(path): firmware \(version)\(allowDowngrade ? " (a downgrade)" : ""), \(image.count) bytes, sha256 \(sha256), fleet \(fleet), key \(signed.kid), valid until \(WireFormat.timestamp(now.addingTimeInterval(validity)))")
        }
    }

    struct Rollout: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Roll a manifest out in waves, halting by itself past a failure threshold.",
            discussion: """
                Waves are cumulative shares of the fleet's (or group's) gateways. Each wave's gateways get
                the manifest; the next wave starts once they all installed (or failed within the
                threshold) and the soak time passed. Past the threshold the rollout halts and the manifest
                is withdrawn from gateways that have not acted on it. The state is written to --state
                after every step; running the same command again resumes it.

                Example:
                  spectra-ctl firmware rollout --manifest firmware-2.5.0.manifest.json --waves 1,5,25,100 --max-failure-pct 5 --group pilot
                """)

        @OptionGroup var connection: ConnectionOptions
        @Option(help: ArgumentHelp("The signed manifest from 'firmware publish'.", valueName: "file")) var manifest: String
        @Option(help: ArgumentHelp("Cumulative percentages, e.g. 1,5,25,100.", valueName: "list")) var waves = "1,5,25,100"
        @Option(name: .customLong("max-failure-pct"), help: ArgumentHelp("Halt when more than this share failed.", valueName: "percent"))
        var maxFailurePct = 5.0
        @Option(help: ArgumentHelp("Only this group's gateways.", valueName: "name")) var group: String?
        @Option(help: ArgumentHelp("Wait after each wave before the next.", valueName: "duration")) var soak = "60s"
        @Option(name: .customLong("wave-timeout"), help: ArgumentHelp("A gateway that has not answered by then counts as failed.", valueName: "duration"))
        var waveTimeout = "10m"
        @Option(help: ArgumentHelp("State file (default var/rollouts/FLEET-VERSION.json).", valueName: "file")) var state: String?

        func run() async throws {
            let waveList = waves.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !waveList.isEmpty, waveList.allSatisfy({ $0 != nil && $0! > 0 && $0! <= 100 }),
                zip(waveList, waveList.dropFirst()).allSatisfy({ $0! < $1! }), waveList.last! == 100
            else { throw UsageFailure("--waves must be increasing percentages ending at 100, e.g. 1,5,25,100") }
            guard (0...100).contains(maxFailurePct) else { throw UsageFailure("--max-failure-pct must be 0-100") }
            let soakSeconds = soak == "0" || soak == "0s" ? 0 : try parseDuration(soak, option: "--soak")
            let timeoutSeconds = try parseDuration(waveTimeout, option: "--wave-timeout")
            guard let data = FileManager.default.contents(atPath: manifest) else { throw UsageFailure("cannot read \(manifest)") }
            let signed: SignedDocument
            let document: DocumentPayload
            do {
                signed = try SignedDocument.decode(data)
                guard let bytes = Data(base64Encoded: signed.payload) else { throw UsageFailure("\(manifest): payload is not base64") }
                document = try WireFormat.decode(DocumentPayload.self, from: bytes)
            } catch let error as ProtocolError {
                throw UsageFailure("\(manifest) is not a signed manifest: \(error.description)")
            }
            guard document.kind == .firmware, case .firmware(let firmware)? = document.body else {
                throw UsageFailure("\(manifest) is a \(document.kind) document, not a firmware manifest")
            }
            let groupID = try group.map { try Identifier($0, field: "group") }
            let statePath = state ?? FirmwareCommand.defaultStatePath(fleet: document.fleet.rawValue, version: firmware.version)

            let client = try await connection.connect()
            var current: RolloutState
            if FileManager.default.fileExists(atPath: statePath) {
                current = try RolloutState.load(from: statePath)
                guard current.firmwareVersion == firmware.version, current.fleet == document.fleet.rawValue else {
                    throw UsageFailure("\(statePath) belongs to another rollout (\(current.fleet) \(current.firmwareVersion)); pass another --state")
                }
                if current.status != .running {
                    print("rollout of \(current.firmwareVersion) already \(current.status.rawValue)\(current.haltReason.map { ": \($0)" } ?? "")")
                    await client.disconnect()
                    throw ExitCode(current.status == .completed ? 0 : 1)
                }
                print("resuming the rollout of \(firmware.version) at wave \(current.currentWave + 1) (\(statePath))")
            } else {
                let directory = try await FleetDirectory.read(fleet: document.fleet, from: client)
                let gateways = directory.gateways(for: groupID.map { .group($0) } ?? .all).map(\.rawValue)
                guard !gateways.isEmpty else {
                    await client.disconnect()
                    throw UsageFailure("no gateway of fleet \(document.fleet)\(group.map { " in group \($0)" } ?? "") has reported its state; nothing to roll out to")
                }
                current = RolloutState(
                    fleet: document.fleet.rawValue, group: group, firmwareVersion: firmware.version, manifest: signed,
                    waves: waveList.map { $0! }, maxFailurePct: maxFailurePct, soakSeconds: soakSeconds,
                    waveTimeoutSeconds: timeoutSeconds, gateways: gateways, currentWave: 0, sent: [], results: [:],
                    status: .running, haltReason: nil, updatedAt: Date())
                print("rolling \(firmware.version) out to \(gateways.count) gateway(s) in \(waveList.count) waves (state: \(statePath))")
            }
            let runner = RolloutRunner(connection: client, statePath: statePath, log: { line in
                print(line)
                fflush(nil)  // progress shows at once, also through a pipe
            })
            let final = try await runner.run(current)
            await client.disconnect()
            if final.status == .halted { throw ExitCode(1) }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show rollouts from their state files.",
            discussion: "Example: spectra-ctl firmware status   (or --state var/rollouts/demo-2.5.0.json, --json)")

        @Option(help: ArgumentHelp("One state file (default: every file in var/rollouts).", valueName: "file")) var state: String?
        @Flag(help: "Print the state as JSON.") var json = false

        func run() async throws {
            var paths: [String] = []
            if let state {
                paths = [state]
            } else {
                let folder = "var/rollouts"
                paths = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".json") }.sorted().map { "\(folder)/\($0)" }
                if paths.isEmpty { print("no rollouts in \(folder)"); return }
            }
            for path in paths {
                let rollout: RolloutState
                do { rollout = try RolloutState.load(from: path) } catch let error as OperatorError { throw UsageFailure(error.description) }
                if json {
                    print(String(decoding: try Data(contentsOf: URL(fileURLWithPath: path)), as: UTF8.self))
                    continue
                }
                let installed = rollout.results.values.filter { $0 == "installed" }.count
                print("\(rollout.fleet) \(rollout.firmwareVersion): \(rollout.status.rawValue), wave \(min(rollout.currentWave + 1, rollout.waves.count))/\(rollout.waves.count), sent \(rollout.sent.count) of \(rollout.gateways.count), installed \(installed), failed \(rollout.failures.count) (\(String(format: "%.1f", rollout.failurePct)) %, limit \(String(format: "%.1f", rollout.maxFailurePct)) %)")
                if let reason = rollout.haltReason { print("  halted: \(reason)") }
                for gateway in rollout.failures { print("  \(gateway): \(rollout.results[gateway] ?? "")") }
            }
        }
    }
}
