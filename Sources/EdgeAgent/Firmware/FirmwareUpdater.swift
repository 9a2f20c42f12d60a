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
    /// A manifest that arrived during an update: handled once it is over (the latest wins).
    private var pending: Data?
    /// Download timeout for a small image, seconds; larger ones get more (``timeout(for:)``).
    public var timeoutSeconds: Double = 60
    /// Waits before each retry of a failed download, seconds: after the last, the manifest is
    /// tried again when it next arrives (the broker's retained copy, at a reconnect or restart).
    public var retryDelaysSeconds: [Double] = [2, 5, 15]

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
            // Not lost: handled when the update under way is over.
            pending = payload
            return
        }
        // Anti-rollback: only a newer image, unless the manifest is a signed downgrade.
        let installed = await sessions.firmwareVersion
        if !manifest.allowDowngrade && !FirmwareManifest.isOlder(installed, than: manifest.version) {
            lastVersion = document.version
            await accepted(document.version, manifest.version)
            await report(FirmwareProgress(
                version: manifest.version, stage: .rejected,
                detail: "rollback: \(manifest.version) is not newer than the installed \(installed) (a downgrade must be signed with allowDowngrade)"))
            return
        }
        busy = true
        await update(manifest, documentVersion: document.version)
        busy = false
        if let next = pending {
            pending = nil
            await receive(next)
        }
    }

    /// Downloads (retrying), verifies, stages and installs one accepted manifest.
    private func update(_ manifest: FirmwareManifest, documentVersion: Int) async {
        await report(FirmwareProgress(version: manifest.version, stage: .received))
        await report(FirmwareProgress(version: manifest.version, stage: .downloading))
        var image: [UInt8]?
        var attempt = 0
        // What earlier attempts received: a retry asks only for the rest (HTTP Range).
        var partial: [UInt8] = []
        while image == nil {
            do {
                image = try await download(manifest, resumeFrom: partial)
            } catch {
                partial = error.partial
                guard attempt < retryDelaysSeconds.count else {
                    // Not recorded as taken: the manifest is tried again when it next arrives.
                    await report(FirmwareProgress(
                        version: manifest.version, stage: .failed,
                        detail: "\(error) (after \(attempt + 1) attempts; tried again when the manifest next arrives)"))
                    return
                }
                let delay = retryDelaysSeconds[attempt]
                attempt += 1
                await report(FirmwareProgress(
                    version: manifest.version, stage: .downloading, detail: "attempt \(attempt + 1) in \(Int(delay)) s after: \(error)"))
                try? await Task.sleep(for: .seconds(delay))
            }
        }
        guard let image else { return }
        let digest = SHA256.hash(data: image).map { String(format: "%02x", $0) }.joined()
        lastVersion = documentVersion
        await accepted(documentVersion, manifest.version)
        guard digest == manifest.sha256 else {
            await report(FirmwareProgress(
                version: manifest.version, stage: .rejected, detail: "sha256 mismatch: the image hashes to \(digest), the manifest says \(manifest.sha256)"))
            return
        }
        let staged = "\(stagingDirectory)/\(Self.stagingName(manifest.version))"
        do {
            try FileManager.default.createDirectory(atPath: stagingDirectory, withIntermediateDirectories: true)
            try Data(image).write(to: URL(fileURLWithPath: staged), options: .atomic)
        } catch {
            await report(FirmwareProgress(version: manifest.version, stage: .failed, detail: "staging the image in \(stagingDirectory) failed: \(error)"))
            return
        }
        await report(FirmwareProgress(version: manifest.version, stage: .verified))
        // Install only between sessions.
        while true {
            if let installed = await sessions.installFirmware(image, version: manifest.version) {
                // Older staged images are not needed any more (this one is kept for the record).
                removeStaged(except: staged)
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

    /// The staged image's file name: the version with anything but `A-Z a-z 0-9 . _ -` replaced,
    /// so a manifest cannot name a path outside the staging folder.
    static func stagingName(_ version: String) -> String {
        let safe = String(version.prefix(64).map { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) ? $0 : "_" })
        return "headband-\(safe == "." || safe == ".." ? "_" : safe).bin"
    }

    /// Removes staged images other than `kept` (installed or rolled back: no longer needed but
    /// the latest, for the record).
    private func removeStaged(except kept: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: stagingDirectory) else { return }
        for name in names where "\(stagingDirectory)/\(name)" != kept && name.hasPrefix("headband-") {
            try? FileManager.default.removeItem(atPath: "\(stagingDirectory)/\(name)")
        }
    }

    /// The download's time limit: the base for a small image, plus a second for every 50 kB
    /// (a slow cellular link), so a large image is not cut off by a limit meant for a small one.
    func timeout(for sizeBytes: Int) -> Double {
        timeoutSeconds + Double(max(0, sizeBytes)) / 50_000
    }

    /// Downloads the image; a body longer than the manifest says is cut off as it arrives.
    private func download(_ manifest: FirmwareManifest, resumeFrom partial: [UInt8]) async throws(FirmwareError) -> [UInt8] {
        let body: [UInt8]
        do {
            body = try await HTTPDownload.get(
                manifest.url, maxBytes: manifest.sizeBytes, timeout: .seconds(timeout(for: manifest.sizeBytes)), resumeFrom: partial)
        } catch where error.code == .tooLarge {
            throw FirmwareError("download larger than the manifest's \(manifest.sizeBytes) bytes: \(error)")
        } catch {
            throw FirmwareError("download failed: \(error)\(error.partial.isEmpty ? "" : " (\(error.partial.count) bytes kept to resume from)")", partial: error.partial)
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
    /// Bytes of the image received before a download failed, to resume from.
    var partial: [UInt8]
    init(_ description: String, partial: [UInt8] = []) {
        self.description = description
        self.partial = partial
    }
}
