/// What the broker said, in its CONNACK, that it supports. MQTT 5 brokers say what they lack
/// (an absent property means "available"); an MQTT 3.1.1 CONNACK says nothing, so the
/// defaults stand and ``announced`` is false.
public struct BrokerCapabilities: Sendable, Hashable {
    /// Whether the broker takes `$share/GROUP/...` filters.
    public var sharedSubscriptions = true
    /// Whether the broker takes `+` and `#` in filters.
    public var wildcardSubscriptions = true
    /// Whether the broker keeps retained messages.
    public var retain = true
    /// The highest QoS the broker takes on a publish.
    public var maximumQoS: QoS = .exactlyOnce
    /// The largest packet the broker takes, bytes (nil: no limit said).
    public var maximumPacketSize: Int?
    /// Whether the CONNACK carried properties at all (MQTT 5).
    public var announced = false

    public init() {}

    /// What the broker lacks, in words, for a log line; empty when it lacks nothing.
    public var missing: [String] {
        var list: [String] = []
        if !sharedSubscriptions { list.append("shared subscriptions") }
        if !wildcardSubscriptions { list.append("wildcard subscriptions") }
        if !retain { list.append("retained messages") }
        if maximumQoS != .exactlyOnce { list.append("QoS above \(maximumQoS.rawValue)") }
        return list
    }
}
