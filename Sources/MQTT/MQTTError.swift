import CMosquitto

#if canImport(Glibc)
import Glibc
#endif

/// An MQTT failure with a code and a message that says what to do about it.
///
/// Wraps libmosquitto's `MOSQ_ERR_*` codes (``Kind/library``) and MQTT reason codes from the
/// broker (``Kind/refused`` for CONNACK, ``Kind/rejected`` for PUBACK and SUBACK).
public struct MQTTError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Where the failure came from.
    public enum Kind: String, Sendable, Hashable {
        /// libmosquitto returned an error (`code` is a `MOSQ_ERR_*` value).
        case library
        /// The broker refused the connection (`code` is the CONNACK reason code).
        case refused
        /// The broker refused a publish or subscription (`code` is the MQTT 5 reason code).
        case rejected
        /// The client is not connected right now.
        case notConnected
        /// The connection dropped before the broker acknowledged.
        case connectionLost
        /// No answer in time.
        case timedOut
        /// The client was shut down.
        case closed
    }

    public var kind: Kind
    /// The library error or reason code (0 when not applicable).
    public var code: Int32
    /// What happened and what to do.
    public var message: String

    public init(_ kind: Kind, code: Int32 = 0, _ message: String) {
        self.kind = kind
        self.code = code
        self.message = message
    }

    public var description: String { message }

    /// Whether the failure is about credentials or permissions (retrying unchanged will not help).
    public var isAuthorization: Bool {
        switch kind {
        case .refused, .rejected: [4, 5, 0x86, 0x87, 0x8C].contains(code)
        case .library: code == Int32(MOSQ_ERR_AUTH.rawValue) || code == Int32(MOSQ_ERR_ACL_DENIED.rawValue)
        default: false
        }
    }

    /// Maps a libmosquitto return code, adding advice for the common cases.
    /// - Parameter systemError: the `errno` that goes with `MOSQ_ERR_ERRNO`, read where the
    ///   failure happened: any system call since may have changed it.
    static func library(_ rc: Int32, _ context: String, systemError: Int32 = errno) -> MQTTError {
        let text = String(cString: mosquitto_strerror(rc))
        let advice: String
        switch mosq_err_t(rawValue: rc) {
        case MOSQ_ERR_ERRNO:
            advice = "connection failed (\(String(cString: strerror(systemError)))): check the broker URL and that the broker is running"
        case MOSQ_ERR_EAI:
            advice = "the broker's host name could not be resolved: check the URL's host and DNS"
        case MOSQ_ERR_TLS:
            advice = "TLS failed: check the CA file, the client certificate and key, and that the broker's certificate names this host"
        case MOSQ_ERR_CONN_REFUSED:
            advice = "the broker refused the connection: check the credentials and client id"
        case MOSQ_ERR_NO_CONN:
            advice = "not connected to the broker"
        case MOSQ_ERR_CONN_LOST:
            advice = "the broker closed the connection or the network dropped it (a broker restart, a takeover by the same client id, or a reset)"
        case MOSQ_ERR_KEEPALIVE:
            advice = "the broker stopped answering (keepalive expired): the link is silent or the broker is frozen"
        case MOSQ_ERR_INVAL, MOSQ_ERR_MALFORMED_UTF8:
            advice = "invalid argument (topic, payload or option)"
        case MOSQ_ERR_PAYLOAD_SIZE:
            advice = "payload too large for MQTT"
        case MOSQ_ERR_OVERSIZE_PACKET:
            advice = "packet larger than the broker's maximum packet size"
        case MOSQ_ERR_QOS_NOT_SUPPORTED:
            advice = "the broker does not take this QoS (its CONNACK says so): Spectra needs QoS 1, use a broker that has it"
        default:
            advice = text
        }
        return MQTTError(.library, code: rc, "\(context): \(advice) [\(text)]")
    }

    /// The MQTT reason code's name ("Not authorized", "Quota exceeded", ...).
    public static func reasonName(_ code: Int32) -> String { String(cString: mosquitto_reason_string(code)) }

    /// Maps a CONNACK reason (MQTT 3.1.1 return code or MQTT 5 reason code).
    static func connack(_ reason: Int32) -> MQTTError {
        let text = String(cString: mosquitto_reason_string(reason))
        let advice: String
        switch reason {
        case 4, 0x86: advice = "bad user name or password: check mqtt.username and mqtt.password"
        case 5, 0x87:
            advice = "not authorised: check mqtt.username and mqtt.password (or the client certificate) and the broker's ACL for this client id"
        case 2, 0x85: advice = "client id rejected: use 1-64 of A-Z a-z 0-9 _ -"
        case 3, 0x88, 0x89: advice = "the broker is unavailable or busy: it will be retried"
        default: advice = text
        }
        return MQTTError(.refused, code: reason, "broker refused the connection: \(advice) [reason \(reason): \(text)]")
    }
}
