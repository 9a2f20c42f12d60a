import CMosquitto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

// MARK: C callbacks: copy data out, hand it to the core.

func onConnectCallback(
    _: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ reason: Int32, _ flags: Int32, _ properties: OpaquePointer?
) {
    CallbackContext.core(context)?.onConnect(reason: reason, flags: flags, capabilities: capabilities(properties))
}

/// Reads what a CONNACK's properties say the broker lacks (absent means available).
func capabilities(_ properties: OpaquePointer?) -> BrokerCapabilities {
    var result = BrokerCapabilities()
    guard properties != nil else { return result }
    result.announced = true
    func byte(_ identifier: mqtt5_property) -> UInt8? {
        var value: UInt8 = 0
        return mosquitto_property_read_byte(properties, Int32(identifier.rawValue), &value, false) == nil ? nil : value
    }
    if let value = byte(MQTT_PROP_SHARED_SUB_AVAILABLE) { result.sharedSubscriptions = value != 0 }
    if let value = byte(MQTT_PROP_WILDCARD_SUB_AVAILABLE) { result.wildcardSubscriptions = value != 0 }
    if let value = byte(MQTT_PROP_RETAIN_AVAILABLE) { result.retain = value != 0 }
    if let value = byte(MQTT_PROP_MAXIMUM_QOS) { result.maximumQoS = QoS(rawValue: Int32(min(value, 2))) ?? .exactlyOnce }
    var size: UInt32 = 0
    if mosquitto_property_read_int32(properties, Int32(MQTT_PROP_MAXIMUM_PACKET_SIZE.rawValue), &size, false) != nil {
        result.maximumPacketSize = Int(size)
    }
    return result
}

func onDisconnectCallback(_: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ rc: Int32, _: OpaquePointer?) {
    CallbackContext.core(context)?.onDisconnect(rc: rc)
}

func onLogCallback(_ handle: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ level: Int32, _ message: UnsafePointer<CChar>?) {
    guard level == Int32(MOSQ_LOG_ERR), let message else { return }
    CallbackContext.core(context)?.onLog(handle, level: level, message: String(cString: message))
}

/// OpenSSL's verdict on the broker's certificate ("certificate has expired", "hostname
/// mismatch", "unable to get local issuer certificate"), read from the library libmosquitto
/// already loaded (looked up at run time: no build-time dependency on OpenSSL's headers).
enum TLSVerification {
    private typealias VerifyResult = @convention(c) (UnsafeMutableRawPointer?) -> Int
    private typealias ErrorString = @convention(c) (Int) -> UnsafePointer<CChar>?
    private static let functions: (VerifyResult, ErrorString)? = {
        guard let verify = dlsym(nil, "SSL_get_verify_result"), let text = dlsym(nil, "X509_verify_cert_error_string") else { return nil }
        return (unsafeBitCast(verify, to: VerifyResult.self), unsafeBitCast(text, to: ErrorString.self))
    }()

    /// The verification failure of `handle`'s TLS session, nil when it verified (or is gone).
    static func result(_ handle: OpaquePointer?, host: String) -> String? {
        guard let handle, let (verify, text) = functions, let ssl = mosquitto_ssl_get(handle) else { return nil }
        let code = verify(ssl)
        guard code != 0 else { return nil }
        // libmosquitto checks the name itself and fails the check without a code of its own
        // (X509_V_ERR_UNSPECIFIED): the certificate does not name the host.
        if code == 1 { return "the broker's certificate was not accepted (it does not name \(host))" }
        guard let reason = text(code) else { return nil }
        return "the broker's certificate was not accepted (\(String(cString: reason)))"
    }
}

func onPublishCallback(_: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ mid: Int32, _ reason: Int32, _: OpaquePointer?) {
    CallbackContext.core(context)?.onPublish(mid: mid, reason: reason)
}

func onMessageCallback(
    _: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ message: UnsafePointer<mosquitto_message>?, _ properties: OpaquePointer?
) {
    guard let core = CallbackContext.core(context), let message else { return }
    let raw = message.pointee
    let topic = raw.topic.map { String(cString: $0) } ?? ""
    var payload: [UInt8] = []
    if let bytes = raw.payload, raw.payloadlen > 0 {
        payload = Array(UnsafeRawBufferPointer(start: bytes, count: Int(raw.payloadlen)))
    }
    var userProperties: [UserProperty] = []
    var name: UnsafeMutablePointer<CChar>?
    var value: UnsafeMutablePointer<CChar>?
    var cursor = mosquitto_property_read_string_pair(properties, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &value, false)
    while cursor != nil {
        if let name, let value { userProperties.append(UserProperty(String(cString: name), String(cString: value))) }
        free(name)
        free(value)
        name = nil
        value = nil
        cursor = mosquitto_property_read_string_pair(cursor, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &value, true)
    }
    core.onMessage(MQTTMessage(
        topic: topic, payload: payload, qos: QoS(rawValue: raw.qos) ?? .atMostOnce, retain: raw.retain,
        userProperties: userProperties))
}

func onSubscribeCallback(
    _: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ mid: Int32, _ count: Int32, _ granted: UnsafePointer<Int32>?, _: OpaquePointer?
) {
    let list = granted.map { Array(UnsafeBufferPointer(start: $0, count: Int(count))) } ?? []
    CallbackContext.core(context)?.onSubscribe(mid: mid, granted: list)
}

func onUnsubscribeCallback(_: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ mid: Int32, _: OpaquePointer?) {
    CallbackContext.core(context)?.onUnsubscribe(mid: mid)
}
