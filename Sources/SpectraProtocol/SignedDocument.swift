import Foundation

/// The signed wrapper for config and firmware documents:
/// `{"kid": "<key id>", "payload": "<base64 bytes>", "sig": "<base64 Ed25519 signature>"}`.
///
/// The signature covers the exact payload bytes, so no JSON canonicalisation is needed.
public struct SignedDocument: Sendable, Equatable, Codable {
    /// The signing key's id (see ``VerifyingKey/keyID``).
    public var kid: String
    /// Base64 of the document bytes.
    public var payload: String
    /// Base64 of the Ed25519 signature of the document bytes.
    public var sig: String

    public init(kid: String, payload: String, sig: String) {
        self.kid = kid
        self.payload = payload
        self.sig = sig
    }

    /// Reads the wrapper from untrusted bytes (no signature check yet).
    /// - Throws: ``ProtocolError`` from ``WireFormat/decode(_:from:)``.
    public static func decode(_ data: Data) throws(ProtocolError) -> SignedDocument {
        try WireFormat.decode(SignedDocument.self, from: data)
    }

    /// The wrapper as wire JSON.
    public func encoded() -> Data { WireFormat.encode(self) }
}

/// A document whose signature verified against a trusted key.
public struct VerifiedDocument: Sendable, Equatable {
    /// The exact signed bytes.
    public var payloadBytes: Data
    /// The decoded document.
    public var document: DocumentPayload
    /// The key that signed it.
    public var keyID: String
}

/// The keys an agent trusts, by key id.
public struct Keyring: Sendable {
    /// Trusted keys by ``VerifyingKey/keyID``.
    public private(set) var keys: [String: VerifyingKey]

    /// A keyring trusting `keys`.
    public init(_ keys: [VerifyingKey]) {
        self.keys = Dictionary(keys.map { ($0.keyID, $0) }, uniquingKeysWith: { first, _ in first })
    }

    /// Verifies a signed document received as bytes and decodes its payload.
    ///
    /// Checks, in order: size and JSON shape, that `kid` is trusted, that `payload` and `sig`
    /// are base64, that the signature verifies over the payload bytes, and that the payload is a
    /// well-formed document. Target, expiry and version are the caller's checks
    /// (``DocumentPayload/checkApplies(fleet:gateway:groups:now:)``).
    /// - Throws: ``ProtocolError``: `unknownKeyID`, `badBase64`, `badSignature`, or a decoding code.
    public func verify(_ data: Data) throws(ProtocolError) -> VerifiedDocument {
        try verify(try SignedDocument.decode(data))
    }

    /// Verifies an already-parsed wrapper; see ``verify(_:)-(Data)``.
    public func verify(_ signed: SignedDocument) throws(ProtocolError) -> VerifiedDocument {
        guard let key = keys[signed.kid] else {
            throw ProtocolError(
                .unknownKeyID, path: "kid",
                "key id \(Identifier.describe(signed.kid)) is not trusted here; add its public key to the trusted keys")
        }
        guard let payload = Data(base64Encoded: signed.payload) else {
            throw ProtocolError(.badBase64, path: "payload", "payload is not valid base64")
        }
        guard let signature = Data(base64Encoded: signed.sig) else {
            throw ProtocolError(.badBase64, path: "sig", "signature is not valid base64")
        }
        guard key.isValidSignature(signature, for: payload) else {
            throw ProtocolError(
                .badSignature, path: "sig", "the signature does not verify over the payload with key \(signed.kid)")
        }
        let document = try WireFormat.decode(DocumentPayload.self, from: payload)
        return VerifiedDocument(payloadBytes: payload, document: document, keyID: signed.kid)
    }
}
