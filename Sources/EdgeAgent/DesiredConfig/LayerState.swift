import Foundation
import SpectraProtocol

/// One config layer as applied: the document version and its body (nil once cleared).
public struct LayerState: Sendable, Equatable, Codable {
    public var version: Int
    public var body: ConfigBody?
    /// The key that signed it.
    public var keyID: String
    public var appliedAt: Date
    /// When the applied document was issued (nil in state written before it was kept): a
    /// reset must be issued later.
    public var issuedAt: Date?
    /// When the applied document stops applying (nil: never).
    public var expiresAt: Date?
    /// Why the layer stopped applying although no document replaced it (its key is no longer
    /// trusted, or it expired); its version still bounds what may come next.
    public var dropped: String?

    public init(
        version: Int, body: ConfigBody?, keyID: String, appliedAt: Date, issuedAt: Date? = nil, expiresAt: Date? = nil,
        dropped: String? = nil
    ) {
        self.expiresAt = expiresAt
        self.dropped = dropped
        self.version = version
        self.body = body
        self.keyID = keyID
        self.appliedAt = appliedAt
        self.issuedAt = issuedAt
    }
}

/// Every applied layer, persisted so a restart neither re-applies nor forgets.
public struct AppliedLayers: Sendable, Equatable, Codable {
    /// By layer name: `all`, `group:NAME`, `gateway`.
    public var layers: [String: LayerState] = [:]
    /// The last firmware document accepted, by version.
    public var firmwareVersion: Int?

    public init() {}

    /// Applied versions per layer, for the retained `state`.
    public var versions: [String: Int] { layers.mapValues(\.version) }
}

/// The outcome of a received config document.
public enum ConfigDecision: Sendable, Equatable {
    /// Nothing changes and nothing is reported (an empty retained message, or the same version again).
    case unchanged
    /// Applied: publish `config.applied`.
    case applied(layer: String, version: Int)
    /// Refused: publish `config.rejected` with the reason; what was applied stays.
    case rejected(layer: String, version: Int, reason: String)
}
