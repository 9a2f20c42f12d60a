import Foundation
import MQTT
import Outbox
import SpectraProtocol

/// What a gateway puts on the broker, built in one place for the agent, the fleet simulator and
/// the light load generator: envelopes into the outbox (events and telemetry, each to its topic
/// and outbox class), and its presence (the retained birth, offline status and state, and the
/// Will). A change to the uplink's wire lands here once.
public struct GatewayUplink: Sendable {
    public let envelopes: EnvelopeFactory
    public let agentVersion: String

    public init(envelopes: EnvelopeFactory, agentVersion: String = AgentVersion.current) {
        self.envelopes = envelopes
        self.agentVersion = agentVersion
    }

    public var fleet: Identifier { envelopes.fleet }
    public var gateway: Identifier { envelopes.gateway }

    /// The outbox entry for `message` with the outbox's `seq` and `epoch`.
    /// - Parameters:
    ///   - now: the gateway's wall clock (default: the system's).
    ///   - synced: whether it is trusted (default: ``EnvelopeFactory/clock``).
    public func outboxMessage(_ message: Message, seq: UInt64, epoch: UUID, now: Date = Date(), synced: Bool? = nil) -> OutboxMessage {
        let payload = envelopes.envelope(message, seq: seq, epoch: epoch, now: now, synced: synced).encodedBytes()
        switch message {
        case .event:
            return OutboxMessage(messageClass: .event, topic: Topic.event(fleet: fleet, gateway: gateway).path, payload: payload)
        case .telemetry:
            return OutboxMessage(messageClass: .telemetry, topic: Topic.telemetry(fleet: fleet, gateway: gateway).path, payload: payload)
        }
    }

    /// Queues `message` in `outbox` (stamped when the outbox gives it its seq).
    public func enqueue(_ message: Message, into outbox: Outbox, now: Date? = nil, synced: Bool? = nil) async {
        let uplink = self
        await outbox.enqueue { seq, epoch in
            uplink.outboxMessage(message, seq: seq, epoch: epoch, now: now ?? Date(), synced: synced)
        }
    }

    /// The retained status: online (the birth), or offline with a reason (`shutdown`, `outage`).
    public func status(online: Bool, reason: String? = nil, ts: Date = Date()) -> OutgoingMessage {
        let status = GatewayStatus(online: online, boot: envelopes.boot, ts: ts, agentVersion: agentVersion, reason: reason)
        return OutgoingMessage(topic: Topic.status(fleet: fleet, gateway: gateway).path, payload: [UInt8](WireFormat.encode(status)), retain: true)
    }

    /// The retained reported state.
    public func state(_ state: ReportedState) -> OutgoingMessage {
        OutgoingMessage(topic: Topic.state(fleet: fleet, gateway: gateway).path, payload: [UInt8](WireFormat.encode(state)), retain: true)
    }

    /// The Will: offline (`lost`), dated when the client is made (the aggregator dates a live
    /// Will by its arrival).
    public func will(ts: Date = Date()) -> MQTTConfiguration.Will {
        let status = GatewayStatus(online: false, boot: envelopes.boot, ts: ts, agentVersion: agentVersion, reason: "lost")
        return .init(
            topic: Topic.status(fleet: fleet, gateway: gateway).path, payload: [UInt8](WireFormat.encode(status)), qos: .atLeastOnce,
            retain: true)
    }
}
