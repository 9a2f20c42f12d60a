import Foundation
import SpectraConfig
import SpectraProtocol
import Waveform

/// The gateway's desired configuration: verifies signed documents exactly as the contract says,
/// keeps one applied document per layer, and merges them fleet < group < gateway.
///
/// A document is applied only if its key is trusted, its signature verifies, its fleet and
/// target match this gateway (and the topic it came on), its version is above the last applied
/// for that layer, it has not expired, and its body is within the engine's hard limits.
/// The same version again is a no-op; a `null` body with a higher version clears the layer;
/// an empty retained message changes nothing.
public struct DesiredConfig: Sendable {
    public let fleet: Identifier
    public let gateway: Identifier
    /// Groups in precedence order (a later group overrides an earlier one).
    public let groups: [Identifier]
    public let keyring: Keyring
    public private(set) var applied: AppliedLayers

    public init(fleet: Identifier, gateway: Identifier, groups: [Identifier], keyring: Keyring, applied: AppliedLayers = AppliedLayers()) {
        self.fleet = fleet
        self.gateway = gateway
        self.groups = groups
        self.keyring = keyring
        self.applied = applied
    }

    /// The config topics this gateway follows.
    public var topics: [Topic] {
        [.fleetConfig(fleet: fleet)] + groups.map { .groupConfig(fleet: fleet, group: $0) }
            + [.gatewayConfig(fleet: fleet, gateway: gateway)]
    }

    /// Decides what to do with a config document received on `topic`.
    public mutating func receive(_ payload: Data, on topic: Topic, now: Date = Date()) -> ConfigDecision {
        let layer: String
        let expected: DocumentTarget
        switch topic {
        case .fleetConfig: (layer, expected) = ("all", .all)
        case .groupConfig(_, let group): (layer, expected) = ("group:\(group)", .group(group))
        case .gatewayConfig: (layer, expected) = ("gateway", .gateway(gateway))
        default: return .unchanged
        }
        guard !payload.isEmpty else { return .unchanged }
        let verified: VerifiedDocument
        do {
            verified = try keyring.verify(payload)
        } catch {
            return .rejected(layer: layer, version: 0, reason: error.description)
        }
        let document = verified.document
        guard document.kind == .config else {
            return .rejected(layer: layer, version: document.version, reason: "unknownKind: a \(document.kind.rawValue) document on a config topic")
        }
        do {
            try document.checkApplies(fleet: fleet, gateway: gateway, groups: Set(groups), now: now)
        } catch {
            return .rejected(layer: layer, version: document.version, reason: error.description)
        }
        guard document.target == expected else {
            return .rejected(
                layer: layer, version: document.version,
                reason: "wrongTarget: a document for \(document.target) arrived on the \(layer) topic")
        }
        if let current = applied.layers[layer] {
            if document.reset {
                // A reset counts by issue time, not version: only one issued after what is
                // applied, so replaying an older reset changes nothing.
                guard document.issuedAt > (current.issuedAt ?? .distantPast) else {
                    // The applied reset itself again (it stays retained): nothing to do.
                    if document.version == current.version && document.issuedAt == current.issuedAt { return .unchanged }
                    return .rejected(
                        layer: layer, version: document.version,
                        reason: "staleReset: a reset issued at \(WireFormat.timestamp(document.issuedAt)) is not after the applied document (\(current.issuedAt.map(WireFormat.timestamp) ?? "?"))")
                }
            } else if document.version == current.version {
                return .unchanged
            } else if document.version < current.version {
                return .rejected(
                    layer: layer, version: document.version,
                    reason: "staleVersion: version \(document.version) is not above the applied version \(current.version)")
            } else if let appliedIssue = current.issuedAt, document.issuedAt < appliedIssue {
                // Issued before what is applied: an old document replayed (after a reset took
                // the layer back to a lower version, the document it undid would otherwise
                // apply again).
                return .rejected(
                    layer: layer, version: document.version,
                    reason: "staleVersion: issued at \(WireFormat.timestamp(document.issuedAt)), before the applied document (\(WireFormat.timestamp(appliedIssue)))")
            }
        }
        var body: ConfigBody?
        if case .config(let config) = document.body {
            if let problem = config.hardLimitProblem {
                return .rejected(layer: layer, version: document.version, reason: "hardLimit: \(problem)")
            }
            body = config
        }
        applied.layers[layer] = LayerState(
            version: document.version, body: body, keyID: verified.keyID, appliedAt: now, issuedAt: document.issuedAt,
            expiresAt: document.expiresAt)
        return .applied(layer: layer, version: document.version)
    }

    /// Stops applying the layers that no longer hold: signed by a key ``keyring`` no longer
    /// trusts (checked at every start, which is when `trust.keys` is read), or past their
    /// `expiresAt`, judged only while the wall clock is synchronised (`clockSynced`): a clock
    /// that is wrong neither ends a layer early nor keeps it, and the check runs again once it
    /// is right. A dropped layer keeps its version (so nothing older can come back) and applies
    /// no body.
    /// - Returns: each dropped layer, as the `config.rejected` to report.
    public mutating func revalidate(now: Date, clockSynced: Bool) -> [ConfigDecision] {
        var dropped: [ConfigDecision] = []
        for name in applied.layers.keys.sorted() {
            guard var layer = applied.layers[name], layer.dropped == nil, layer.body != nil else { continue }
            let reason: String
            if keyring.keys[layer.keyID] == nil {
                reason = "untrustedKey: key \(layer.keyID), which signed version \(layer.version), is no longer in trust.keys"
            } else if clockSynced, let expiresAt = layer.expiresAt, expiresAt <= now {
                reason = "expired: version \(layer.version) expired at \(WireFormat.timestamp(expiresAt))"
            } else {
                continue
            }
            layer.body = nil
            layer.dropped = reason
            applied.layers[name] = layer
            dropped.append(.rejected(layer: name, version: layer.version, reason: reason))
        }
        return dropped
    }

    /// The merged configuration: fleet < groups (in order) < gateway; cleared layers count as absent.
    public var effective: ConfigBody {
        var merged = ConfigBody()
        let ordered = ["all"] + groups.map { "group:\($0)" } + ["gateway"]
        for name in ordered {
            guard let body = applied.layers[name]?.body else { continue }
            if let value = body.maxLevel { merged.maxLevel = value }
            if let value = body.levelUnlock { merged.levelUnlock = value }
            if let value = body.telemetryIntervalS { merged.telemetryIntervalS = value }
            if let value = body.idleTelemetryIntervalS { merged.idleTelemetryIntervalS = value }
            if let value = body.headband { merged.headband = value }
            if let rows = body.levels {
                var byLevel = Dictionary(uniqueKeysWithValues: (merged.levels ?? []).map { ($0.level, $0) })
                for row in rows { byLevel[row.level] = row }
                merged.levels = byLevel.values.sorted { $0.level < $1.level }
            }
        }
        return merged
    }

    /// `profile` with the merged level overrides applied (the hard limits were checked on receipt,
    /// and the result is validated again).
    public func profile(applyingTo profile: CalibrationProfile) throws(WaveformError) -> CalibrationProfile {
        var result = profile
        let merged = effective
        for entry in merged.levels ?? [] {
            guard let index = result.levels.firstIndex(where: { $0.level == entry.level }) else { continue }
            var row = result.levels[index]
            row.peakMicroAmps = entry.peakMicroAmps
            if let value = entry.frequencyHz { row.frequencyHz = value }
            if let value = entry.phaseWidthMicros { row.phaseWidthMicros = value }
            if let value = entry.rampUpS { row.rampUpS = value }
            if let value = entry.rampDownS { row.rampDownS = value }
            if let value = entry.dwellS { row.dwellS = value }
            result.levels[index] = row
        }
        if let unlock = merged.levelUnlock {
            result.levelUnlock = .init(level2AfterSessions: unlock.level2AfterSessions, level3AfterSessions: unlock.level3AfterSessions)
        }
        if let watchdog = merged.headband?.sessionWatchdogS { result.sessionSeconds = min(result.sessionSeconds, watchdog) }
        try result.validate()
        return result
    }
}
