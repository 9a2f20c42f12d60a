import Foundation

/// JSON coding for everything on the wire: camelCase keys, ISO 8601 UTC timestamps with
/// milliseconds, and decoding that turns every failure into one ``ProtocolError``.
public enum WireFormat {
    /// The largest payload any decoder here accepts, in bytes (256 KiB).
    public static let maxPayloadBytes = 256 * 1024

    /// Formats `date` as `2026-11-27T03:05:06.123Z`.
    public static func timestamp(_ date: Date) -> String {
        Timestamp.format(date)
    }

    /// Parses an ISO 8601 UTC timestamp, with or without fractional seconds.
    public static func parseTimestamp(_ text: String) -> Date? {
        Timestamp.parse(text)
    }

    /// A new encoder with the wire settings (sorted keys, so fixtures compare byte for byte).
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A NaN from a sensor must never crash a publisher; it goes out as a string and
        // consumers that expect a number refuse it.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(timestamp(date))
        }
        return encoder
    }

    /// A `userInfo` key: when true, telemetry bodies are decoded without their per-channel
    /// readings (`channels` comes back empty), for readers that only count and summarise.
    public static let skipTelemetryChannels = CodingUserInfoKey(rawValue: "spectra.skipTelemetryChannels")!

    // Coders are safe to share once configured (their options are only read), and making one
    // per message costs more than coding a small one.
    private static let sharedDecoder = decoder()
    private static let sharedEncoder = encoder()
    private static let channelSkippingDecoder: JSONDecoder = {
        let skipping = WireFormat.decoder()
        skipping.userInfo = [skipTelemetryChannels: true]
        return skipping
    }()

    /// A new decoder with the wire settings.
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parseTimestamp(text) else {
                throw ProtocolError(
                    .invalidValue, path: decoder.codingPath.dottedPath,
                    "\(Identifier.describe(text)) is not an ISO 8601 timestamp such as 2026-11-27T03:05:06.123Z")
            }
            return date
        }
        return decoder
    }

    /// Encodes `value` as wire JSON.
    public static func encode(_ value: some Encodable) -> Data {
        do {
            return try sharedEncoder.encode(value)
        } catch {
            // Every wire type encodes plain values only; failing here is a programming error.
            preconditionFailure("wire type failed to encode: \(error)")
        }
    }

    /// Decodes untrusted bytes as `type`.
    /// - Throws: ``ProtocolError``: `oversize` past ``maxPayloadBytes``, `malformedJSON`,
    ///   `missingField`, `wrongType`, or the type's own validation error.
    public static func decode<T: Decodable>(
        _ type: T.Type, from data: Data, userInfo: [CodingUserInfoKey: any Sendable] = [:]
    ) throws(ProtocolError) -> T {
        guard data.count <= maxPayloadBytes else {
            throw ProtocolError(.oversize, "payload is \(data.count) bytes; the limit is \(maxPayloadBytes)")
        }
        do {
            let decoder: JSONDecoder
            if userInfo.isEmpty {
                decoder = sharedDecoder
            } else if userInfo.count == 1, userInfo[skipTelemetryChannels] as? Bool == true {
                decoder = channelSkippingDecoder
            } else {
                decoder = self.decoder()
                decoder.userInfo = userInfo
            }
            return try decoder.decode(type, from: data)
        } catch let error as ProtocolError {
            throw error
        } catch let error as DecodingError {
            throw ProtocolError(decoding: error)
        } catch {
            throw ProtocolError(.malformedJSON, "\(error)")
        }
    }
}

extension ProtocolError {
    /// Maps Foundation's decoding errors onto the contract's codes.
    init(decoding error: DecodingError) {
        switch error {
        case .keyNotFound(let key, let context):
            let path = (context.codingPath + [key]).dottedPath
            self.init(.missingField, path: path, "required field '\(key.stringValue)' is missing")
        case .valueNotFound(_, let context):
            self.init(.missingField, path: context.codingPath.dottedPath, "a required value is null")
        case .typeMismatch(let type, let context):
            self.init(
                .wrongType, path: context.codingPath.dottedPath,
                "expected \(Self.jsonTypeName(type))")
        case .dataCorrupted(let context):
            if context.codingPath.isEmpty {
                self.init(.malformedJSON, "the payload is not valid JSON: \(context.debugDescription)")
            } else {
                self.init(.invalidValue, path: context.codingPath.dottedPath, context.debugDescription)
            }
        @unknown default:
            self.init(.malformedJSON, "\(error)")
        }
    }

    private static func jsonTypeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Bool.Type: "true or false"
        case is Int.Type, is Int64.Type, is UInt64.Type, is Int32.Type, is UInt32.Type: "an integer"
        case is Double.Type, is Float.Type: "a number"
        default: "a JSON \(type)"
        }
    }
}
