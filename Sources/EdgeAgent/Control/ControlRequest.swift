import Foundation

/// One request on the local control socket: a JSON object on one line, e.g.
/// `{"command":"start","level":2}`. Parsing never traps on any bytes.
public enum ControlRequest: Sendable, Equatable {
    case start(level: Int?)
    case stop
    case level(Int)
    case status

    /// The longest request line read, bytes.
    public static let maxBytes = 64 * 1024

    /// Parses a request line.
    /// - Returns: the request, or the one-line error the client gets back.
    public static func parse(_ bytes: Data) -> Result<ControlRequest, ControlRequestError> {
        guard bytes.count <= maxBytes else { return .failure(ControlRequestError("the request is longer than \(maxBytes) bytes")) }
        guard let object = try? JSONSerialization.jsonObject(with: bytes) as? [String: Any] else {
            return .failure(ControlRequestError("send one JSON object per line, e.g. {\"command\":\"status\"}"))
        }
        switch object["command"] as? String {
        case "start":
            switch object["level"] {
            case nil, is NSNull: return .success(.start(level: nil))
            case let level as Int where (1...3).contains(level): return .success(.start(level: level))
            default: return .failure(ControlRequestError("level must be 1, 2 or 3"))
            }
        case "stop":
            return .success(.stop)
        case "level":
            guard let level = object["level"] as? Int, (1...3).contains(level) else { return .failure(ControlRequestError("level must be 1, 2 or 3")) }
            return .success(.level(level))
        case "status":
            return .success(.status)
        default:
            return .failure(ControlRequestError("unknown command; use start, stop, level or status"))
        }
    }
}

/// Why a control request was refused, in one line.
public struct ControlRequestError: Error, Sendable, Equatable {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
}
