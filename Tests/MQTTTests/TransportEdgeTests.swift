import Foundation
@testable import MQTT
import SpectraTesting
import Testing

/// The socket work the client does itself: packets read from a stream that arrives a few bytes
/// at a time, with nothing to read (`EAGAIN`) in the middle of a header, a length or a payload,
/// and TLS records split the same way.
@Suite("MQTT transport: the socket's edge cases")
struct TransportEdgeTests {
    @Test("packets and TLS records cut into pieces of 1-7 bytes arrive whole and in order", arguments: [false, true])
    func chunkedStream(tls: Bool) async throws {
        let pki = try await TestPKI()
        defer { pki.remove() }
        let broker = tls ? try await MosquittoBroker.tls(pki) : try await MosquittoBroker()
        let proxy = try ChunkingProxy(targetPort: broker.port)
        defer { proxy.stop() }
        func configuration(_ id: String, port: Int) -> MQTTConfiguration {
            MQTTConfiguration(
                host: tls ? "localhost" : "127.0.0.1", port: port, clientID: id,
                tls: tls ? .init(caFile: pki.caCert, certFile: pki.clientCert, keyFile: pki.clientKey) : nil)
        }
        let subscriber = MQTTClient(configuration("edge-sub", port: proxy.port))
        let received = Collector(subscriber.messages)
        try await subscriber.connect()
        try await subscriber.subscribe([Subscription("edge/#", qos: .atLeastOnce)])
        let publisher = MQTTClient(configuration("edge-pub", port: broker.port))
        try await publisher.connect()

        // Small packets, and some (40 KiB) over two TLS records and one read's worth.
        let payloads = (0..<300).map { index -> [UInt8] in
            let size = index % 60 == 0 ? 40_000 + index : 1 + (index * 37) % 300
            return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
        }
        for payload in payloads { try await publisher.publish(OutgoingMessage(topic: "edge/x", payload: payload, qos: .atLeastOnce)) }
        #expect(await received.waitFor(count: payloads.count, timeout: 60), "stalled after \(received.count) of \(payloads.count)")
        let got = received.elements.map(\.payload)
        let firstWrong = zip(got, payloads).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(got.count == payloads.count && firstWrong == nil, "message \(firstWrong ?? got.count) differs from the one published")
        await subscriber.disconnect()
        await publisher.disconnect()
        await broker.stop()
    }
}
