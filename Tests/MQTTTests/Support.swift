import Foundation
@testable import MQTT
import SpectraTesting

extension MosquittoBroker {
    /// A client configuration for this broker.
    func client(_ id: String, keepalive: Int = 30, cleanStart: Bool = true, expiry: UInt32 = 0,
                will: MQTTConfiguration.Will? = nil, backoff: Backoff = Backoff(minimumSeconds: 0.1, maximumSeconds: 1)) -> MQTTConfiguration {
        MQTTConfiguration(
            host: "127.0.0.1", port: port, clientID: id, cleanStart: cleanStart, sessionExpirySeconds: expiry,
            keepaliveSeconds: keepalive, will: will, backoff: backoff)
    }
}

extension MosquittoBroker {
    /// A broker with one TLS listener that requires a client certificate from `pki`'s CA and
    /// takes its name as the user.
    static func tls(_ pki: TestPKI) async throws -> MosquittoBroker {
        try await MosquittoBroker(extraConfig: """
            listener {PORT} 127.0.0.1
            cafile \(pki.caCert)
            certfile \(pki.serverCert)
            keyfile \(pki.serverKey)
            require_certificate true
            use_identity_as_username true
            """, listener: false)
    }
}

/// A subscriber ("sub") and a publisher ("pub") on `broker`, both connected.
func connectedPair(_ broker: MosquittoBroker) async throws -> (subscriber: MQTTClient, publisher: MQTTClient) {
    let subscriber = MQTTClient(broker.client("sub"))
    let publisher = MQTTClient(broker.client("pub"))
    try await subscriber.connect()
    try await publisher.connect()
    return (subscriber, publisher)
}

func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
func text(_ message: MQTTMessage) -> String { String(decoding: message.payload, as: UTF8.self) }
