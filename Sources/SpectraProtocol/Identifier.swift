/// A fleet name, gateway id or group name: `[A-Za-z0-9_-]{1,64}`.
///
/// The grammar keeps ids safe to place in an MQTT topic level: no `/`, `+`, `#`, NUL or
/// spaces can ever reach a topic string built from one.
public struct Identifier: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The longest id the contract allows, in characters.
    public static let maxLength = 64

    /// The id's text.
    public let rawValue: String

    /// Validates `text` and wraps it.
    /// - Throws: ``ProtocolError`` with code `invalidIdentifier` when `text` is empty, longer
    ///   than 64 characters or holds anything outside `A-Z a-z 0-9 _ -`.
    public init(_ text: String, field: String = "id") throws(ProtocolError) {
        guard Self.isValid(text) else {
            throw ProtocolError(
                .invalidIdentifier, path: field,
                "\(Self.describe(text)) is not a valid id: use 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        }
        self.rawValue = text
    }

    /// Whether `text` matches `[A-Za-z0-9_-]{1,64}`.
    public static func isValid(_ text: String) -> Bool {
        let bytes = text.utf8
        guard !bytes.isEmpty, bytes.count <= maxLength else { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
                true
            default:
                false
            }
        }
    }

    /// A short, printable rendering of untrusted text for error messages.
    static func describe(_ text: String) -> String {
        let clipped = text.count > 40 ? String(text.prefix(40)) + "..." : text
        let printable = clipped.unicodeScalars.map { scalar in
            scalar.value < 0x20 || scalar.value == 0x7F ? "\\u{\(String(scalar.value, radix: 16))}" : String(scalar)
        }.joined()
        return "'\(printable)'"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        // The coding path is only rendered for an error: ids are decoded on every message.
        guard Self.isValid(text) else {
            throw ProtocolError(
                .invalidIdentifier, path: decoder.codingPath.dottedPath,
                "\(Self.describe(text)) is not a valid id: use 1-64 characters of A-Z, a-z, 0-9, '_' or '-'")
        }
        self.rawValue = text
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public static func < (lhs: Identifier, rhs: Identifier) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { rawValue }
}

extension Array where Element == any CodingKey {
    /// `body.levels[2].peakMicroAmps` for a decoding path.
    var dottedPath: String {
        var out = ""
        for key in self {
            if let index = key.intValue {
                out += "[\(index)]"
            } else {
                out += out.isEmpty ? key.stringValue : "." + key.stringValue
            }
        }
        return out
    }
}
