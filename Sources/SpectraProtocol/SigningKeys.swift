import Crypto
import Foundation

/// An Ed25519 private key that signs config and firmware documents (the operator's).
///
/// Stored as a standard PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`), the same form
/// `openssl genpkey -algorithm ed25519` writes.
public struct SigningKey: Sendable {
    let key: Curve25519.Signing.PrivateKey

    /// A new random key.
    public init() { key = Curve25519.Signing.PrivateKey() }

    /// A key from its 32 raw bytes.
    /// - Throws: ``ProtocolError`` `badKey` when the bytes are not a key.
    public init(rawRepresentation: Data) throws(ProtocolError) {
        do {
            key = try Curve25519.Signing.PrivateKey(rawRepresentation: rawRepresentation)
        } catch {
            throw ProtocolError(.badKey, "not a 32-byte Ed25519 private key")
        }
    }

    /// A key from PKCS#8 PEM text.
    /// - Throws: ``ProtocolError`` `badKey` when the text is not an Ed25519 private key.
    public init(pem: String) throws(ProtocolError) {
        let der = try PEM.decode(pem, label: "PRIVATE KEY")
        guard der.count == PEM.pkcs8Prefix.count + 32, der.starts(with: PEM.pkcs8Prefix) else {
            throw ProtocolError(.badKey, "the PEM is not an Ed25519 private key (PKCS#8)")
        }
        try self.init(rawRepresentation: Data(der.suffix(32)))
    }

    /// The key as PKCS#8 PEM text. Write it to a file created with mode 0600.
    public var pem: String { PEM.encode(PEM.pkcs8Prefix + key.rawRepresentation, label: "PRIVATE KEY") }

    /// The matching public key.
    public var verifyingKey: VerifyingKey { VerifyingKey(key: key.publicKey) }

    /// The key id of the matching public key.
    public var keyID: String { verifyingKey.keyID }

    /// Signs `payload` and wraps it as a ``SignedDocument``.
    public func sign(_ payload: Data) -> SignedDocument {
        let signature: Data
        do {
            signature = try key.signature(for: payload)
        } catch {
            preconditionFailure("Ed25519 signing failed: \(error)")
        }
        return SignedDocument(
            kid: keyID, payload: payload.base64EncodedString(), sig: signature.base64EncodedString())
    }
}

/// An Ed25519 public key that agents trust for signed documents.
public struct VerifyingKey: Sendable, Hashable {
    let key: Curve25519.Signing.PublicKey

    init(key: Curve25519.Signing.PublicKey) { self.key = key }

    /// A key from its 32 raw bytes.
    /// - Throws: ``ProtocolError`` `badKey`.
    public init(rawRepresentation: Data) throws(ProtocolError) {
        do {
            key = try Curve25519.Signing.PublicKey(rawRepresentation: rawRepresentation)
        } catch {
            throw ProtocolError(.badKey, "not a 32-byte Ed25519 public key")
        }
    }

    /// A key from SubjectPublicKeyInfo PEM text (`-----BEGIN PUBLIC KEY-----`).
    /// - Throws: ``ProtocolError`` `badKey`.
    public init(pem: String) throws(ProtocolError) {
        let der = try PEM.decode(pem, label: "PUBLIC KEY")
        guard der.count == PEM.spkiPrefix.count + 32, der.starts(with: PEM.spkiPrefix) else {
            throw ProtocolError(.badKey, "the PEM is not an Ed25519 public key (SubjectPublicKeyInfo)")
        }
        try self.init(rawRepresentation: Data(der.suffix(32)))
    }

    /// The key as SubjectPublicKeyInfo PEM text.
    public var pem: String { PEM.encode(PEM.spkiPrefix + key.rawRepresentation, label: "PUBLIC KEY") }

    /// The 32 raw bytes.
    public var rawRepresentation: Data { key.rawRepresentation }

    /// Hex of the first 8 bytes of SHA-256 of the raw public key: 16 lower-case hex digits.
    public var keyID: String {
        SHA256.hash(data: key.rawRepresentation).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `signature` is this key's Ed25519 signature over `payload`.
    public func isValidSignature(_ signature: Data, for payload: Data) -> Bool {
        key.isValidSignature(signature, for: payload)
    }

    public static func == (lhs: VerifyingKey, rhs: VerifyingKey) -> Bool {
        lhs.rawRepresentation == rhs.rawRepresentation
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(rawRepresentation) }
}

/// Minimal PEM for the two fixed-size Ed25519 DER forms.
enum PEM {
    /// PKCS#8 header for an Ed25519 private key (RFC 8410), followed by the 32 raw bytes.
    static let pkcs8Prefix = Data([
        0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ])
    /// SubjectPublicKeyInfo header for an Ed25519 public key, followed by the 32 raw bytes.
    static let spkiPrefix = Data([0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00])

    static func encode(_ der: Data, label: String) -> String {
        "-----BEGIN \(label)-----\n\(der.base64EncodedString(options: [.lineLength64Characters]))\n-----END \(label)-----\n"
    }

    static func decode(_ text: String, label: String) throws(ProtocolError) -> Data {
        let begin = "-----BEGIN \(label)-----"
        let end = "-----END \(label)-----"
        guard text.utf8.count < 16 * 1024,
            let start = text.range(of: begin), let stop = text.range(of: end), start.upperBound <= stop.lowerBound
        else {
            throw ProtocolError(.badKey, "expected a PEM block '\(begin)'")
        }
        let body = text[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace }
        guard let der = Data(base64Encoded: String(body)) else {
            throw ProtocolError(.badBase64, "the PEM body is not base64")
        }
        return der
    }
}
