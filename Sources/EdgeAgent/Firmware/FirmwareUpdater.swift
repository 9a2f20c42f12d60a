import Crypto
import Foundation
import SpectraProtocol

/// Takes signed firmware manifests (`cmd/firmware`): verifies them like config documents,
/// downloads the image over HTTP(S) with a size limit and a timeout, checks its SHA-256, stages
/// it, and installs it on the headband only when no session runs. Every stage is reported as
/// `firmware.progress`; a failed install rolls back.
public actor FirmwareUpdater {
    /// The largest image accepted, whatever the manifest says, bytes.
    public static let maxImageBytes = 64 << 20

    private let fleet: Identifier
    private let gateway: Identifier
    private let keyring: Keyring
    private let hardware: String
    private let stagingDirectory: String
    private let sessions: SessionController
    private let report: @Sendable (FirmwareProgress) async -> Void
    private let accepted: @Sendable (Int, String) async -> Void
    private var lastVersion: Int?
    private var busy = false
    /// Download timeout, seconds.
    public var timeoutSeconds: Double = 60

    /// - Parameters:
    ///   - lastVersion: the last manifest version accepted (persisted by the caller).
    ///   - accepted: told (document version, firmware version) when a manifest is taken, to persist it.
    public init(
        fleet: Identifier, gateway: Identifier, keyring: Keyring, hardware: String, stagingDirectory: String,
        sessions: SessionController, lastVersion: Int?,
        report: @escaping @Sendable (FirmwareProgress) async -> Void,
        accepted: @escaping @Sendable (Int, String) async -> Void
    ) {
        self.fleet = fleet
        self.gateway = gateway
        self.keyring = keyring
        self.hardware = hardware
        self.stagingDirectory = stagingDirectory
        self.sessions = sessions
        self.lastVersion = lastVersion
        self.report = report
        self.accepted = accepted
    }

    /// Handles a message received on this gateway's `cmd/firmware` topic.
    public func receive(_ payload: Data, now: Date = Date()) async {
        guard !payload.isEmpty else { return }
        let verified: VerifiedDocument
        do {
            verified = try keyring.verify(payload)
        } catch {
            await report(FirmwareProgress(version: "?", stage: .rejected, detail: error.description))
            return
        }
        let document = verified.document
        guard document.kind == .firmware, case .firmware(let manifest) = document.body else {
            await report(FirmwareProgress(version: "?", stage: .rejected, detail: "unknownKind: not a firmware manifest"))
            return
        }
        do {
            try document.checkApplies(fleet: fleet, gateway: gateway, groups: [], now: now)
        } catch {
            await report(FirmwareProgress(version: manifest.version, stage: .rejected, detail: error.description))
            return
        }
        if let lastVersion {
            if document.version == lastVersion { return }
            guard document.version > lastVersion else {
                await report(FirmwareProgress(
                    version: manifest.version, stage: .rejected,
                    detail: "staleVersion: manifest version \(document.version) is not above \(lastVersion)"))
                return
            }
        }
        guard manifest.hardware == hardware else {
            await report(FirmwareProgress(
                version: manifest.version, stage: .rejected, detail: "wrong hardware: the image is for \(manifest.hardware), this headband is \(hardware)"))
            return
        }
        guard manifest.sizeBytes <= Self.maxImageBytes else {
            await report(FirmwareProgress(version: manifest.version, stage: .rejected, detail: "image of \(manifest.sizeBytes) bytes is over the 64 MiB limit"))
            return
        }
        guard !busy else {
            await report(FirmwareProgress(version: manifest.version, stage: .rejected, detail: "another firmware update is in progress"))
            return
        }
        busy = true
        defer { busy = false }
        lastVersion = document.version
        await accepted(document.version, manifest.version)
        await report(FirmwareProgress(version: manifest.version, stage: .received))
        await report(FirmwareProgress(version: manifest.version, stage: .downloading))
        let image: [UInt8]
        do {
            image = try await download(manifest)
        } catch {
            await report(FirmwareProgress(version: manifest.version, stage: .failed, detail: "\(error)"))
            return
        }
        let digest = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()
        guard digest == manifest.sha256 else {
            await report(FirmwareProgress(
                version: manifest.version, stage: .rejected, detail: "sha256 mismatch: the image hashes to \(digest), the manifest says \(manifest.sha256)"))
            return
        }
        let staged = "\(stagingDirectory)/headband-\(manifest.version).bin"
        try? FileManager.default.createDirectory(atPath: stagingDirectory, withIntermediateDirectories: true)
        try? Data(image).write(to: URL(fileURLWithPath: staged), options: .atomic)
        await report(FirmwareProgress(version: manifest.version, stage: .verified))
        // Install only between sessions.
        while true {
            if let installed = await sessions.installFirmware(image, version: manifest.version) {
                if installed {
                    await report(FirmwareProgress(version: manifest.version, stage: .installing))
                    await report(FirmwareProgress(version: manifest.version, stage: .installed))
                } else {
                    await report(FirmwareProgress(version: manifest.version, stage: .installing))
                    await report(FirmwareProgress(version: manifest.version, stage: .failed, detail: "the headband's boot check failed"))
                    await report(FirmwareProgress(
                        version: manifest.version, stage: .rolledBack, detail: "running \(await sessions.firmwareVersion) again"))
                }
                return
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
    }

    /// Downloads the image; a body longer than the manifest says is cut off as it arrives.
    private func download(_ manifest: FirmwareManifest) async throws -> [UInt8] {
        let body: [UInt8]
        do {
            body = try await HTTPDownload.get(manifest.url, maxBytes: manifest.sizeBytes, timeout: .seconds(timeoutSeconds))
        } catch where error.code == .tooLarge {
            throw FirmwareError("download larger than the manifest's \(manifest.sizeBytes) bytes: \(error)")
        } catch {
            throw FirmwareError("download failed: \(error)")
        }
        guard body.count == manifest.sizeBytes else {
            throw FirmwareError("download size \(body.count) bytes differs from the manifest's \(manifest.sizeBytes)")
        }
        return body
    }
}

/// A firmware download or install failure.
struct FirmwareError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
