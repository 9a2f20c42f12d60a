import Crypto
import Foundation
import SpectraProtocol

/// The operator's local record of what was sent to the fleet: one JSON object per line, appended
/// for every config push, clear and reset, every stop and every rollout step.
///
/// Where: `SPECTRA_AUDIT_LOG`, else `var/audit.jsonl` under the working directory (beside the
/// rollouts' state). A record that cannot be written is reported on standard error, and the
/// action it describes has already happened.
public struct AuditLog: Sendable {
    public let path: String

    public init(path: String? = nil) {
        self.path = path ?? ProcessInfo.processInfo.environment["SPECTRA_AUDIT_LOG"] ?? "var/audit.jsonl"
    }

    /// One record.
    public struct Record: Sendable, Codable, Equatable {
        public var ts: String
        /// Who: the login name and uid that ran the command.
        public var user: String
        /// `config.push`, `config.clear`, `config.reset`, `stop`, `firmware.rollout`, ...
        public var action: String
        public var fleet: String
        /// `all`, `group:NAME`, `gateway:ID`.
        public var target: String
        public var version: Int?
        public var keyId: String?
        /// SHA-256 of the bytes published (the signed document, or the stop's payload), hex.
        public var sha256: String?
        public var topic: String
        public var detail: String?
    }

    /// Appends a record; returns the error that kept it from being written, if one did.
    @discardableResult
    public func append(
        action: String, fleet: String, target: String, topic: String, payload: Data?, version: Int? = nil, keyID: String? = nil,
        detail: String? = nil, now: Date = Date()
    ) -> (any Error)? {
        let environment = ProcessInfo.processInfo.environment
        let user = "\(environment["SUDO_USER"].map { "\($0) via sudo as " } ?? "")\(environment["USER"] ?? "?") (uid \(getuid()))"
        let record = Record(
            ts: ISO8601DateFormatter().string(from: now), user: user, action: action, fleet: fleet, target: target, version: version,
            keyId: keyID, sha256: payload.map { SHA256.hash(data: $0).map { String(format: "%02x", $0) }.joined() }, topic: topic, detail: detail)
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            var line = try encoder.encode(record)
            line.append(0x0A)
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
            if !FileManager.default.fileExists(atPath: path) {
                guard FileManager.default.createFile(atPath: path, contents: nil, attributes: [.posixPermissions: 0o600]) else {
                    throw CocoaError(.fileWriteNoPermission)
                }
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            defer { try? handle.close() }
            try handle.seekToEnd()
            try handle.write(contentsOf: line)
            return nil
        } catch {
            FileHandle.standardError.write(Data("spectra-ctl: could not append to the audit log \(path): \(error)\n".utf8))
            return error
        }
    }
}

extension DocumentTarget {
    /// The audit log's form: `all`, `group:NAME`, `gateway:ID`.
    public var auditName: String {
        switch self {
        case .all: "all"
        case .group(let name): "group:\(name)"
        case .gateway(let id): "gateway:\(id)"
        }
    }
}
