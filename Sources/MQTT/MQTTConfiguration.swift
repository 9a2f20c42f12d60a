/// How one client connects. Every parameter has a default for a local broker.
public struct MQTTConfiguration: Sendable, Hashable {
    /// MQTT protocol version.
    public enum ProtocolVersion: Sendable, Hashable {
        case v311
        case v5
    }

    /// TLS settings; the broker's certificate is always verified against `caFile` and the host name.
    public struct TLS: Sendable, Hashable {
        /// PEM file of the CA that signed the broker's certificate.
        public var caFile: String
        /// PEM client certificate, when the broker requires one.
        public var certFile: String?
        /// PEM key of the client certificate.
        public var keyFile: String?

        public init(caFile: String, certFile: String? = nil, keyFile: String? = nil) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    /// The Will: what the broker publishes if this client vanishes without a clean disconnect.
    public struct Will: Sendable, Hashable {
        public var topic: String
        public var payload: [UInt8]
        public var qos: QoS
        public var retain: Bool

        public init(topic: String, payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = true) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
        }
    }

    public var host: String
    public var port: Int
    /// The client id; a persistent session is kept under it.
    public var clientID: String
    public var protocolVersion: ProtocolVersion
    /// Start a new session (true) or resume the persistent one (false).
    public var cleanStart: Bool
    /// How long the broker keeps a persistent session after a disconnect, seconds (MQTT 5).
    public var sessionExpirySeconds: UInt32
    /// Keepalive, seconds (at least 5); a silent link is noticed within about 1.5 keepalives.
    public var keepaliveSeconds: Int
    public var username: String?
    public var password: String?
    public var tls: TLS?
    public var will: Will?
    /// Reconnect delays.
    public var backoff: Backoff
    /// Received messages buffered for a slow consumer before new ones are dropped (and counted).
    public var receiveBufferCapacity: Int
    /// When set, received messages are acknowledged to the broker only after the consumer has
    /// settled them (``MQTTClient/settle(through:)``), and reading pauses while this many are
    /// unsettled. A consumer that dies before settling gets the messages again from its
    /// persistent session, instead of losing what the library had already acknowledged.
    ///
    /// Meant for consumers that commit what they receive (the aggregator). While anything is
    /// unsettled, nothing else is written either (PUBACKs are queued in order with every other
    /// packet), so keep the window's processing time well under the keepalive. Kept under the
    /// broker's flow-control limit: the client announces a Receive Maximum of 65,535.
    public var acknowledgeWhenSettled: Int?

    public init(
        host: String = "127.0.0.1", port: Int = 1883, clientID: String, protocolVersion: ProtocolVersion = .v5,
        cleanStart: Bool = true, sessionExpirySeconds: UInt32 = 0, keepaliveSeconds: Int = 30,
        username: String? = nil, password: String? = nil, tls: TLS? = nil, will: Will? = nil,
        backoff: Backoff = Backoff(), receiveBufferCapacity: Int = 100_000, acknowledgeWhenSettled: Int? = nil
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.cleanStart = cleanStart
        self.sessionExpirySeconds = sessionExpirySeconds
        self.keepaliveSeconds = keepaliveSeconds
        self.username = username
        self.password = password
        self.tls = tls
        self.will = will
        self.backoff = backoff
        self.receiveBufferCapacity = receiveBufferCapacity
        self.acknowledgeWhenSettled = acknowledgeWhenSettled.map { max(1, min($0, receiveBufferCapacity, 65_535)) }
    }
}
