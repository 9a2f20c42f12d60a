import MQTT

extension BrokerConfiguration {
    /// The client settings these `mqtt.*` keys give, for a client named `clientID`; the rest
    /// (session, Will, backoff, acknowledgement window) is the caller's.
    public func client(
        id clientID: String, cleanStart: Bool = true, sessionExpirySeconds: UInt32 = 0,
        will: MQTTConfiguration.Will? = nil, backoff: Backoff = Backoff(), acknowledgeWhenSettled: Int? = nil
    ) -> MQTTConfiguration {
        MQTTConfiguration(
            host: host, port: port, clientID: clientID, protocolVersion: protocolVersion == .v5 ? .v5 : .v311,
            cleanStart: cleanStart, sessionExpirySeconds: sessionExpirySeconds, keepaliveSeconds: keepaliveSeconds,
            username: username, password: password,
            tls: tls ? .init(caFile: caFile ?? "", certFile: certFile, keyFile: keyFile) : nil,
            will: will, backoff: backoff, acknowledgeWhenSettled: acknowledgeWhenSettled)
    }
}
