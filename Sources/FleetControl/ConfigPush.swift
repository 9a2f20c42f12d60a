import Foundation
import MQTT
import SpectraProtocol
import Synchronization

/// Signed config documents on the broker: reading the current one per layer, pushing the next
/// version, and waiting for gateways to report what they did with it.
public enum ConfigPush {
    /// The retained topic of a layer.
    public static func topic(fleet: Identifier, target: DocumentTarget) -> Topic {
        switch target {
        case .gateway(let gateway): .gatewayConfig(fleet: fleet, gateway: gateway)
        case .group(let group): .groupConfig(fleet: fleet, group: group)
        case .all: .fleetConfig(fleet: fleet)
        }
    }

    /// The retained document of a layer, decoded but not verified (nil when there is none).
    public static func current(fleet: Identifier, target: DocumentTarget, on connection: OperatorClient) async throws
        -> (signed: SignedDocument, payload: DocumentPayload)?
    {
        let path = topic(fleet: fleet, target: target).path
        guard let message = try await connection.retained(path, quietSeconds: 0.3, maxSeconds: 2).last(where: { $0.topic == path }),
            !message.payload.isEmpty,
            let signed = try? SignedDocument.decode(Data(message.payload)),
            let bytes = Data(base64Encoded: signed.payload),
            let payload = try? WireFormat.decode(DocumentPayload.self, from: bytes)
        else { return nil }
        return (signed, payload)
    }

    /// What a targeted gateway reported.
    public enum Outcome: Sendable, Equatable, CustomStringConvertible {
        case applied
        case rejected(String)
        case noAnswer

        public var description: String {
            switch self {
            case .applied: "applied"
            case .rejected(let reason): "rejected: \(reason)"
            case .noAnswer: "no answer"
            }
        }
    }

    public struct Report: Sendable {
        public var topic: String
        public var version: Int
        public var keyID: String
        /// Per targeted gateway, when waiting was asked for.
        public var outcomes: [(gateway: String, outcome: Outcome)]
    }

    /// Signs and publishes the next version of a layer (one above the retained document's),
    /// retained at QoS 1.
    /// - Parameters:
    ///   - body: the config, or nil to clear the layer.
    ///   - reset: publish a reset (`"reset": true`, version 1): the way back from a retained
    ///     document whose version is out of reach; gateways apply it because it is issued later.
    /// - Throws: ``OperatorError`` when the retained document's version leaves no room for a
    ///   next one and `reset` is not set.
    ///   - waitSeconds: when set, waits that long for `config.applied` / `config.rejected` from
    ///     every gateway the target reaches (from their retained state) and reports each.
    public static func push(
        fleet: Identifier, target: DocumentTarget, body: ConfigBody?, key: SigningKey, expiresIn: TimeInterval?,
        waitSeconds: Double?, reset: Bool = false, trusted: [VerifyingKey] = [], force: Bool = false,
        audit: AuditLog = AuditLog(), on connection: OperatorClient, now: Date = Date()
    ) async throws -> Report {
        let previous = try await current(fleet: fleet, target: target, on: connection)
        // The retained document is the broker's word: its version counts only once it verifies
        // against a key the operator trusts (their own, and --trust).
        if let previous, !reset, !force {
            do {
                _ = try Keyring([key.verifyingKey] + trusted).verify(previous.signed)
            } catch {
                throw OperatorError(
                    "the retained \(target.layer) document (version \(previous.payload.version), key \(previous.signed.kid)) does not verify against your key or the --trust keys (\(error)): pass --trust with the key that signed it, or --force to publish over it")
            }
        }
        // What the gateways report having applied counts too: a broker that lost its retained
        // document must not make the next version one they refuse as stale.
        let reported = try await FleetDirectory.read(fleet: fleet, from: connection).appliedVersion(of: target)
        let base = max(previous?.payload.version ?? 0, reported ?? 0)
        let version: Int
        if reset {
            version = 1
        } else if let next = DocumentPayload.nextVersion(after: base == 0 ? nil : base, now: now) {
            version = next
        } else {
            throw OperatorError(
                "the \(target.layer) layer is at version \(base), above what a document issued now may carry (gateways refuse it, or it froze the layer): publish a reset with --reset, which gateways apply because it is issued later")
        }
        let document = DocumentPayload(
            kind: .config, fleet: fleet, target: target, version: version, issuedAt: now,
            expiresAt: expiresIn.map { now.addingTimeInterval($0) }, body: body.map(DocumentBody.config), reset: reset)
        let signed = key.sign(document.encoded())

        var targets: [Identifier] = []
        var watcher: Task<Void, Never>?
        let answers = Mutex<[String: Outcome]>([:])
        if waitSeconds != nil {
            targets = try await FleetDirectory.read(fleet: fleet, from: connection).gateways(for: target)
            let messages = connection.messages()
            let layer = target.layer
            watcher = Task {
                for await message in messages {
                    guard case .event(_, let gateway)? = try? Topic(parsing: message.topic),
                        let envelope = try? Envelope.decode(Data(message.payload)), case .event(let event) = envelope.message
                    else { continue }
                    switch event {
                    case .configApplied(let outcome) where outcome.layer == layer && outcome.version == version:
                        answers.withLock { $0[gateway.rawValue] = .applied }
                    case .configRejected(let outcome) where outcome.layer == layer && outcome.version == version:
                        answers.withLock { $0[gateway.rawValue] = .rejected(outcome.reason ?? "no reason given") }
                    default: break
                    }
                }
            }
            _ = try await connection.client.subscribe([Subscription(TopicFilter.allGateways(fleet: fleet, leaf: "event"))])
        }
        defer { watcher?.cancel() }

        let path = topic(fleet: fleet, target: target).path
        let bytes = signed.encoded()
        try await connection.client.publish(OutgoingMessage(topic: path, payload: [UInt8](bytes), qos: .atLeastOnce, retain: true))
        audit.append(
            action: reset ? "config.reset" : body == nil ? "config.clear" : "config.push", fleet: fleet.rawValue, target: target.auditName,
            topic: path, payload: bytes, version: version, keyID: signed.kid,
            detail: force && previous != nil ? "published over an unverified retained document (--force)" : nil)

        var outcomes: [(String, Outcome)] = []
        if let waitSeconds {
            let wanted = Set(targets.map(\.rawValue))
            let deadline = ContinuousClock.now + .seconds(waitSeconds)
            while ContinuousClock.now < deadline, !wanted.isSubset(of: Set(answers.withLock { $0.keys })) {
                try await Task.sleep(for: .milliseconds(50))
            }
            let final = answers.withLock { $0 }
            outcomes = wanted.sorted().map { ($0, final[$0] ?? .noAnswer) }
        }
        return Report(topic: path, version: version, keyID: signed.kid, outcomes: outcomes)
    }
}
