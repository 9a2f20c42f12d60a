import Foundation
import MQTT
import SpectraProtocol

/// One received MQTT message, parsed and validated: what the store applies.
public enum IngestRecord: Sendable {
    /// An event or telemetry envelope, with the time it arrived, whether it was replayed
    /// from a backlog (MQTT 5 user property `historical=true`), and the bytes as received
    /// (kept for raw events; telemetry's per-channel readings are not decoded).
    case envelope(Envelope, receivedAt: Date, historical: Bool, payload: Data? = nil)
    /// A retained birth or Will; `retained` when the broker sent the one it keeps (on
    /// subscribing) rather than one the gateway has just published.
    case status(fleet: Identifier, gateway: Identifier, GatewayStatus, receivedAt: Date, retained: Bool = false)
    /// The retained reported state.
    case state(fleet: Identifier, gateway: Identifier, ReportedState, receivedAt: Date)
    /// A message from this gateway's topics that was refused (bad input, a limit, or something
    /// the store could not apply): recorded against the gateway, so the API and dashboard can
    /// show whose input is being refused and why.
    case refused(GatewayKey, Refusal, receivedAt: Date, payload: Data? = nil)

    /// The reason label a message that cannot be ingested is counted under (`/metrics`
    /// `spectra_aggregator_parse_failures_total{reason=...}`).
    public struct Refusal: Error, Sendable, Hashable {
        public var reason: String
        public var detail: String
        /// The gateway whose topic the message came on, when the topic named one.
        public var gateway: GatewayKey?

        public init(reason: String, detail: String, gateway: GatewayKey? = nil) {
            self.reason = reason
            self.detail = detail
            self.gateway = gateway
        }

        /// Refused by the per-gateway message rate limit.
        public static let rateLimited = "rate_limited"
        /// Refused by the limit on new outbox epochs per gateway per day.
        public static let epochLimit = "epoch_limit"
        /// Well-formed, but the store could not apply it (recorded and acknowledged, never retried).
        public static let storeRefused = "store_refused"

        /// Every reason a message can be refused under: the protocol's error codes and ingest's
        /// own. `/metrics` shows each from the start at 0, so that a rate or an alert on
        /// `increase()` sees the first refusal too.
        public static let allReasons: [String] = ProtocolError.Code.allCases.map(\.rawValue) + [
            "topic_mismatch", "kind_mismatch", "empty", "unexpected_topic", "internal", rateLimited, epochLimit, storeRefused,
        ]
    }

    /// The gateway a record is about, when it names one.
    public var gateway: GatewayKey? {
        switch self {
        case .envelope(let envelope, _, _, _): GatewayKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue)
        case .status(let fleet, let gateway, _, _, _), .state(let fleet, let gateway, _, _):
            GatewayKey(fleet: fleet.rawValue, gateway: gateway.rawValue)
        case .refused(let gateway, _, _, _): gateway
        }
    }

    /// Parses a received message.
    /// - Throws: ``Refusal``: the ``ProtocolError`` code of the payload or topic, `topic_mismatch`
    ///   when the envelope's fleet or gateway is not the topic's, `kind_mismatch` when an
    ///   envelope arrives on the other class's topic, `unexpected_topic` for a topic the
    ///   aggregator does not ingest, `empty` for an empty (cleared) retained message.
    public static func parse(_ message: MQTTMessage, receivedAt: Date = Date()) throws(Refusal) -> IngestRecord {
        let topic: Topic
        do {
            topic = try Topic(parsing: message.topic)
        } catch {
            throw Refusal(reason: error.code.rawValue, detail: error.description)
        }
        let source = topic.gatewayKey
        do {
            switch topic {
            case .event(let fleet, let gateway), .telemetry(let fleet, let gateway):
                let envelope = try Envelope.decodeForIngest(message.payload)
                try WireRanges.checkArrival(envelope, receivedAt: receivedAt)
                guard envelope.fleet == fleet, envelope.gateway == gateway else {
                    throw Refusal(
                        reason: "topic_mismatch",
                        detail: "envelope says \(envelope.fleet)/\(envelope.gateway) on \(message.topic)")
                }
                let expected: Envelope.Kind = if case .event = topic { .event } else { .telemetry }
                guard envelope.kind == expected else {
                    throw Refusal(reason: "kind_mismatch", detail: "a \(envelope.kind) envelope on \(message.topic)")
                }
                return .envelope(
                    envelope, receivedAt: receivedAt, historical: envelope.historical || message.userProperty("historical") == "true",
                    payload: envelope.kind == .event ? Data(message.payload) : nil)
            case .status(let fleet, let gateway):
                let data = Data(message.payload)
                guard !data.isEmpty else { throw Refusal(reason: "empty", detail: "cleared retained status on \(message.topic)") }
                return .status(
                    fleet: fleet, gateway: gateway, try WireFormat.decode(GatewayStatus.self, from: data), receivedAt: receivedAt,
                    retained: message.retain)
            case .state(let fleet, let gateway):
                let data = Data(message.payload)
                guard !data.isEmpty else { throw Refusal(reason: "empty", detail: "cleared retained state on \(message.topic)") }
                return .state(fleet: fleet, gateway: gateway, try WireFormat.decode(ReportedState.self, from: data), receivedAt: receivedAt)
            default:
                throw Refusal(reason: "unexpected_topic", detail: "\(message.topic) is not ingested")
            }
        } catch let error as ProtocolError {
            throw Refusal(reason: error.code.rawValue, detail: error.description, gateway: source)
        } catch var refusal as Refusal {
            refusal.gateway = source
            throw refusal
        } catch {
            throw Refusal(reason: "internal", detail: "\(error)", gateway: source)
        }
    }
}

extension Topic {
    /// The gateway a topic belongs to, for the gateway topics the aggregator ingests.
    var gatewayKey: GatewayKey? {
        switch self {
        case .event(let fleet, let gateway), .telemetry(let fleet, let gateway), .status(let fleet, let gateway),
            .state(let fleet, let gateway):
            GatewayKey(fleet: fleet.rawValue, gateway: gateway.rawValue)
        default:
            nil
        }
    }
}
