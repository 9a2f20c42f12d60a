import ArgumentParser
import Foundation
import MQTT

/// QoS 1 publish throughput of one MQTTClient into a broker, with a window of messages in flight.
struct MQTTPublishBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt-publish", abstract: "QoS 1 publish throughput of one client, acknowledged by the broker.")

    @Option(help: "Broker port on 127.0.0.1.") var port: Int
    @Option(help: "Messages to publish.") var messages = 100_000
    @Option(help: "Payload bytes per message.") var bytes = 466
    @Option(help: "Messages in flight before waiting for acknowledgements.") var window = 2_000
    @Option(help: "Topic.") var topic = "bench/publish"

    func run() async throws {
        let client = MQTTClient(MQTTConfiguration(port: port, clientID: "bench-\(getpid())"))
        try await client.connect()
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: bytes)
        let acks = client.acknowledgements
        let start = monotonicSeconds()
        var acknowledged = 0
        var sent = 0
        var iterator = acks.makeAsyncIterator()
        while acknowledged < messages {
            // Refill in batches once half the window is acknowledged.
            if sent < messages && sent - acknowledged <= window / 2 {
                let batch = min(window - (sent - acknowledged), messages - sent)
                try await client.send((0..<batch).map { index in
                    (OutgoingMessage(topic: topic, payload: payload), UInt64(sent + index))
                })
                sent += batch
                continue
            }
            guard let batch = await iterator.next() else { break }
            if let refused = batch.first(where: { !$0.isSuccess }) {
                throw ValidationError("broker refused message \(refused.token): reason \(refused.reasonCode)")
            }
            acknowledged += batch.count
        }
        let seconds = monotonicSeconds() - start
        await client.disconnect()
        report(["bench": "mqtt-publish", "messages": messages, "bytes": bytes, "seconds": seconds, "perSecond": Double(messages) / seconds])
    }
}
