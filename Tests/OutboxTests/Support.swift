import Foundation
import MQTT
@testable @_spi(Testing) import Outbox
import SpectraTesting

/// A temporary folder for one test's databases.
struct TempFolder {
    let url: URL
    init() throws { url = try TestEnvironment.temporaryDirectory("outbox") }
    func path(_ name: String) -> String { url.appendingPathComponent(name).path }
    func remove() { try? FileManager.default.removeItem(at: url) }
}

/// A message whose payload names its seq, so a witness can check what arrived.
func numbered(_ seq: UInt64, _ epoch: UUID, _ messageClass: MessageClass = .event, size: Int = 0) -> OutboxMessage {
    var text = "\(seq)"
    if size > text.count { text += String(repeating: ".", count: size - text.count) }
    return OutboxMessage(messageClass: messageClass, topic: "spectra/v1/demo/gw/gw-1/\(messageClass == .telemetry ? "telemetry" : "event")", payload: Array(text.utf8))
}

func seqOf(_ message: MQTTMessage) -> UInt64? {
    UInt64(String(decoding: message.payload.prefix { $0 != UInt8(ascii: ".") }, as: UTF8.self))
}

extension MosquittoBroker {
    func mqtt(_ id: String, keepalive: Int = 30, cleanStart: Bool = true) -> MQTTConfiguration {
        MQTTConfiguration(
            port: port, clientID: id, cleanStart: cleanStart, sessionExpirySeconds: cleanStart ? 0 : 3600,
            keepaliveSeconds: keepalive, backoff: Backoff(minimumSeconds: 0.1, maximumSeconds: 0.5))
    }

    /// A persistent QoS 1 subscriber to everything the outbox sends.
    func witness() async throws -> (MQTTClient, Collector<MQTTMessage>) {
        let client = MQTTClient(mqtt("witness-\(UUID().uuidString.prefix(6))", cleanStart: false))
        let collector = Collector(client.messages)
        try await client.connect()
        try await client.subscribe([Subscription("spectra/#")])
        return (client, collector)
    }
}

extension Outbox {
    /// Runs the dispatcher (as the agent's service group does) and attaches `transport`; the
    /// dispatcher ends at ``Outbox/close()``. Attaching again only replaces the transport.
    func dispatching(through transport: any PublishTransport) async {
        if !running { Task { await self.run() } }
        await attach(transport)
    }
}
