import Foundation

/// The signed bytes of a config or firmware document.
///
/// `{"kind":"config"|"firmware","fleet":..,"target":{"gateway"|"group"|"all":..},
/// "version":Int,"issuedAt":iso8601,"expiresAt":iso8601?,"body":{...}|null}`.
/// A `null` body clears the layer.
///
/// Versions are bounded by issue time, so that no document can put a layer out of reach of
/// every later one (SECURITY.md, "Document versions"): a version is at most `issuedAt` in Unix seconds
/// plus a day (``versionCeiling(issuedAt:)``), and `issuedAt` is at most a day after the
/// receiver's clock. A document with `"reset": true` is applied when it
/// was issued after the layer's applied document, whatever the two versions: the operator's
/// way back from a version that went too far, which no replay of an older reset can undo.
public struct DocumentPayload: Sendable, Equatable {
    /// The two document kinds.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case config
        case firmware
    }

    public var kind: Kind
    public var fleet: Identifier
    public var target: DocumentTarget
    /// Increases with every document for the same layer; an agent applies only a higher one.
    public var version: Int
    public var issuedAt: Date
    public var expiresAt: Date?
    /// The content; nil clears the layer.
    public var body: DocumentBody?
    /// Applied when issued after the layer's applied document, even with a version not above
    /// its version (the layer then continues from this version).
    public var reset: Bool

    /// How far ahead of the receiver's clock `issuedAt` may be, seconds.
    public static let maxIssueAheadSeconds: Double = 86_400
    /// The highest version a document issued at `issuedAt` may carry: its Unix time in whole
    /// seconds, plus a day (room for counting up by one, several documents a second).
    public static func versionCeiling(issuedAt: Date) -> Int {
        let seconds = issuedAt.timeIntervalSince1970
        // issuedAt is a decoded date; far outside any real range it is clamped, not trapped on.
        guard seconds.isFinite else { return Int(maxIssueAheadSeconds) }
        return Int(max(0, min(seconds, 1e12))) + Int(maxIssueAheadSeconds)
    }

    /// The version `spectra-ctl` gives the next document of a layer whose current version is
    /// `previous` (1 for the first): one more, or nil when that would pass the ceiling of a
    /// document issued `now` (the layer then needs a reset).
    public static func nextVersion(after previous: Int?, now: Date) -> Int? {
        guard let previous else { return 1 }
        let (next, overflow) = previous.addingReportingOverflow(1)
        guard !overflow, next <= versionCeiling(issuedAt: now) else { return nil }
        return max(1, next)
    }

    public init(
        kind: Kind, fleet: Identifier, target: DocumentTarget, version: Int, issuedAt: Date,
        expiresAt: Date? = nil, body: DocumentBody?, reset: Bool = false
    ) {
        self.reset = reset
        self.kind = kind
        self.fleet = fleet
        self.target = target
        self.version = version
        self.issuedAt = issuedAt
        self.expiresAt = expiresAt
        self.body = body
    }

    /// The document as the bytes to sign.
    public func encoded() -> Data { WireFormat.encode(self) }

    /// Checks that the document is for this gateway and still valid.
    /// - Throws: ``ProtocolError`` `wrongTarget` (another fleet, gateway or group) or `expired`.
    public func checkApplies(
        fleet: Identifier, gateway: Identifier, groups: Set<Identifier>, now: Date
    ) throws(ProtocolError) {
        guard self.fleet == fleet else {
            throw ProtocolError(.wrongTarget, path: "fleet", "document is for fleet '\(self.fleet)', not '\(fleet)'")
        }
        switch target {
        case .gateway(let id) where id != gateway:
            throw ProtocolError(.wrongTarget, path: "target", "document is for gateway '\(id)', not '\(gateway)'")
        case .group(let name) where !groups.contains(name):
            throw ProtocolError(.wrongTarget, path: "target", "this gateway is not in group '\(name)'")
        default:
            break
        }
        if let expiresAt, expiresAt <= now {
            throw ProtocolError(
                .expired, path: "expiresAt", "document expired at \(WireFormat.timestamp(expiresAt))")
        }
        guard issuedAt.timeIntervalSince(now) <= Self.maxIssueAheadSeconds else {
            throw ProtocolError(
                .issuedInFuture, path: "issuedAt",
                "document issued at \(WireFormat.timestamp(issuedAt)), more than a day after this gateway's clock (\(WireFormat.timestamp(now)))")
        }
        let ceiling = Self.versionCeiling(issuedAt: issuedAt)
        guard version <= ceiling else {
            throw ProtocolError(
                .versionTooHigh, path: "version",
                "version \(version) is above \(ceiling), the highest a document issued at \(WireFormat.timestamp(issuedAt)) may carry (its Unix time in seconds, plus a day)")
        }
    }
}

/// Who a document is for.
public enum DocumentTarget: Sendable, Hashable, Codable, CustomStringConvertible {
    case gateway(Identifier)
    case group(Identifier)
    case all

    /// The config layer name: `gateway`, `group:NAME` or `all`.
    public var layer: String {
        switch self {
        case .gateway: "gateway"
        case .group(let name): "group:\(name)"
        case .all: "all"
        }
    }

    public var description: String {
        switch self {
        case .gateway(let id): "gateway \(id)"
        case .group(let name): "group \(name)"
        case .all: "all"
        }
    }

    enum CodingKeys: String, CodingKey { case gateway, group, all }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let present = c.allKeys
        guard present.count == 1, let key = present.first else {
            throw ProtocolError(
                .invalidValue, path: decoder.codingPath.dottedPath,
                "target needs exactly one of 'gateway', 'group' or 'all'")
        }
        switch key {
        case .gateway: self = .gateway(try c.decode(Identifier.self, forKey: .gateway))
        case .group: self = .group(try c.decode(Identifier.self, forKey: .group))
        case .all: self = .all
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .gateway(let id): try c.encode(id, forKey: .gateway)
        case .group(let name): try c.encode(name, forKey: .group)
        case .all: try c.encode(true, forKey: .all)
        }
    }
}

/// The content of a document, by kind.
public enum DocumentBody: Sendable, Equatable {
    case config(ConfigBody)
    case firmware(FirmwareManifest)
}

extension DocumentPayload: Codable {
    enum CodingKeys: String, CodingKey { case kind, fleet, target, version, issuedAt, expiresAt, body, reset }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let kindText = try c.decode(String.self, forKey: .kind)
        guard let kind = Kind(rawValue: kindText) else {
            throw ProtocolError(
                .unknownKind, path: "kind", "\(Identifier.describe(kindText)) is not 'config' or 'firmware'")
        }
        self.kind = kind
        fleet = try c.decode(Identifier.self, forKey: .fleet)
        target = try c.decode(DocumentTarget.self, forKey: .target)
        version = try c.decode(Int.self, forKey: .version)
        guard version > 0 else {
            throw ProtocolError(.invalidValue, path: "version", "version must be a positive integer")
        }
        issuedAt = try c.decode(Date.self, forKey: .issuedAt)
        expiresAt = try c.decodeIfPresent(Date.self, forKey: .expiresAt)
        reset = try c.decodeIfPresent(Bool.self, forKey: .reset) ?? false
        if c.contains(.body), try !c.decodeNil(forKey: .body) {
            switch kind {
            case .config: body = .config(try c.decode(ConfigBody.self, forKey: .body))
            case .firmware: body = .firmware(try c.decode(FirmwareManifest.self, forKey: .body))
            }
        } else if c.contains(.body) {
            body = nil
        } else {
            throw ProtocolError(.missingField, path: "body", "required field 'body' is missing (use null to clear)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(fleet, forKey: .fleet)
        try c.encode(target, forKey: .target)
        try c.encode(version, forKey: .version)
        try c.encode(issuedAt, forKey: .issuedAt)
        try c.encodeIfPresent(expiresAt, forKey: .expiresAt)
        if reset { try c.encode(true, forKey: .reset) }
        switch body {
        case .config(let config): try c.encode(config, forKey: .body)
        case .firmware(let manifest): try c.encode(manifest, forKey: .body)
        case nil: try c.encodeNil(forKey: .body)
        }
    }
}
