/// Why bytes from the network, a file or a user were refused by the wire contract.
///
/// Every decoder in this module throws only this type, so a caller can count refusals by
/// ``Code`` (the aggregator's parse-failure metric) and show ``description`` to a person.
public struct ProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of refusal. Each has its own metric label (``Code/label``).
    public enum Code: String, Sendable, Hashable, CaseIterable {
        /// The payload is larger than ``WireFormat/maxPayloadBytes``.
        case oversize
        /// The bytes are not JSON (truncated, not UTF-8, trailing garbage).
        case malformedJSON
        /// A required field is missing or null.
        case missingField
        /// A field has the wrong JSON type (a string where a number belongs, ...).
        case wrongType
        /// A field has the right type but a value outside the contract.
        case invalidValue
        /// A number or text outside the range the contract gives that field (``WireRanges``):
        /// negative, non-finite, or more than a real gateway can produce.
        case outOfRange
        /// The envelope's `v` is not one this build understands.
        case unsupportedVersion
        /// The envelope or document `kind` is not one the contract names.
        case unknownKind
        /// An event `type` that the contract does not name.
        case unknownEventType
        /// A fleet, gateway or group id outside `[A-Za-z0-9_-]{1,64}`.
        case invalidIdentifier
        /// A topic outside the `spectra/v1/...` contract.
        case invalidTopic
        /// Base64 that does not decode.
        case badBase64
        /// A signed document whose key id is not trusted here.
        case unknownKeyID
        /// A signature that does not verify over the payload bytes.
        case badSignature
        /// A signed document that has expired.
        case expired
        /// A signed document for another fleet or another target.
        case wrongTarget
        /// A key file that cannot be read as a key.
        case badKey
        /// A signed document issued more than a day after the receiver's clock.
        case issuedInFuture
        /// A signed document whose version is above what its issue time allows.
        case versionTooHigh

        /// A stable, lower-case label for metrics and logs.
        public var label: String { rawValue }
    }

    /// The kind of refusal.
    public var code: Code
    /// The field path (`body.levels[2].peakMicroAmps`), topic or id the refusal is about.
    public var path: String
    /// What is wrong and what to do about it, in one line.
    public var reason: String

    /// Creates an error.
    public init(_ code: Code, path: String = "", _ reason: String) {
        self.code = code
        self.path = path
        self.reason = reason
    }

    public var description: String {
        path.isEmpty ? "\(code.label): \(reason)" : "\(code.label) at \(path): \(reason)"
    }
}
