/// MQTT quality of service.
public enum QoS: Int32, Sendable, Hashable, Comparable, CaseIterable {
    case atMostOnce = 0
    case atLeastOnce = 1
    case exactlyOnce = 2

    public static func < (lhs: QoS, rhs: QoS) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// An MQTT 5 user property (a name/value pair on a message).
public struct UserProperty: Sendable, Hashable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// A message received from the broker, copied out of libmosquitto.
public struct MQTTMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    /// Whether the broker delivered it as a retained message (sent on subscribe).
    public var retain: Bool
    public var userProperties: [UserProperty]
    /// Where the message stands in its connection's deliveries; hand it back to
    /// ``MQTTClient/settle(through:)`` when the client acknowledges only settled messages.
    public var delivery: Delivery

    public init(
        topic: String, payload: [UInt8], qos: QoS, retain: Bool, userProperties: [UserProperty] = [],
        delivery: Delivery = Delivery(connection: 0, ordinal: 0)
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.userProperties = userProperties
        self.delivery = delivery
    }

    /// The value of the first user property named `name`.
    public func userProperty(_ name: String) -> String? {
        userProperties.first { $0.name == name }?.value
    }
}

/// The place of a received message among its connection's deliveries: the connection's number
/// (from 1, one per connect), the message's ordinal in it (from 1), and the broker session the
/// connection belonged to (numbered from 0; a new number whenever the broker did not have the
/// session, so connections with the same number continued one session).
public struct Delivery: Sendable, Hashable {
    public var connection: UInt64
    public var ordinal: Int
    public var session: UInt64

    public init(connection: UInt64, ordinal: Int, session: UInt64 = 0) {
        self.connection = connection
        self.ordinal = ordinal
        self.session = session
    }
}

/// A message to publish.
public struct OutgoingMessage: Sendable, Hashable {
    public var topic: String
    public var payload: [UInt8]
    public var qos: QoS
    public var retain: Bool
    public var userProperties: [UserProperty]

    public init(topic: String, payload: [UInt8], qos: QoS = .atLeastOnce, retain: Bool = false, userProperties: [UserProperty] = []) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.userProperties = userProperties
    }
}

/// The broker's answer to a publish sent with ``MQTTClient/send(_:token:)``.
public struct PublishAcknowledgement: Sendable, Hashable {
    /// The caller's token given with the message.
    public var token: UInt64
    /// The MQTT 5 reason code (0 = success; 0x10 = no matching subscribers, also success).
    public var reasonCode: Int32

    /// Whether the broker accepted the message.
    public var isSuccess: Bool { reasonCode < 0x80 }

    public init(token: UInt64, reasonCode: Int32 = 0) {
        self.token = token
        self.reasonCode = reasonCode
    }
}

/// A subscription request.
public struct Subscription: Sendable, Hashable {
    /// A topic filter, or `$share/GROUP/filter` for a shared subscription (MQTT 5).
    public var filter: String
    public var qos: QoS

    public init(_ filter: String, qos: QoS = .atLeastOnce) {
        self.filter = filter
        self.qos = qos
    }
}

/// Where the connection stands.
public enum ConnectionState: Sendable, Hashable {
    case connecting
    /// Connected; `sessionPresent` says the broker kept this client's persistent session.
    case connected(sessionPresent: Bool)
    /// Not connected, with why; a reconnect follows unless the client was stopped.
    case disconnected(reason: String)
}
