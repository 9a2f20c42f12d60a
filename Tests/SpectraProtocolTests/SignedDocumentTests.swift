import Foundation
import SpectraTesting
import Testing
@testable import SpectraProtocol

@Suite("Signed documents")
struct SignedDocumentTests {
    let operatorKey = SigningKey()
    let otherKey = SigningKey()
    var keyring: Keyring { Keyring([operatorKey.verifyingKey]) }

    @Test("a signed config verifies and decodes to the document that was signed")
    func signAndVerify() throws {
        let signed = operatorKey.sign(Samples.configPayload.encoded())
        let verified = try keyring.verify(signed.encoded())
        #expect(verified.document == Samples.configPayload)
        #expect(verified.keyID == operatorKey.keyID)
        #expect(verified.payloadBytes == Samples.configPayload.encoded())
    }

    @Test("payloads match their golden fixtures")
    func fixtures() throws {
        try Fixture.expect(Samples.configPayload.encoded(), matches: "document-config.json")
        try Fixture.expect(Samples.firmwarePayload.encoded(), matches: "document-firmware.json")
        let clear = DocumentPayload(kind: .config, fleet: Samples.fleet, target: .all, version: 9, issuedAt: Samples.ts, body: nil)
        try Fixture.expect(clear.encoded(), matches: "document-clear.json")
        #expect(try WireFormat.decode(DocumentPayload.self, from: clear.encoded()) == clear)
        #expect(try WireFormat.decode(DocumentPayload.self, from: Samples.firmwarePayload.encoded()) == Samples.firmwarePayload)
    }

    @Test("the key id is the hex of the first 8 bytes of SHA-256 of the raw public key")
    func keyID() async throws {
        // RFC 8032 test vector 1's public key.
        let raw = Data(hex: "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
        let key = try VerifyingKey(rawRepresentation: raw)
        #expect(key.keyID.count == 16)
        #expect(try await key.keyID == VerifyingKeyIDReference.compute(raw))
    }

    @Test("keys survive a PEM round trip in openssl's formats")
    func pemRoundTrip() throws {
        let restored = try SigningKey(pem: operatorKey.pem)
        #expect(restored.keyID == operatorKey.keyID)
        #expect(operatorKey.pem.hasPrefix("-----BEGIN PRIVATE KEY-----"))
        let publicKey = try VerifyingKey(pem: operatorKey.verifyingKey.pem)
        #expect(publicKey == operatorKey.verifyingKey)
        #expect(operatorKey.verifyingKey.pem.hasPrefix("-----BEGIN PUBLIC KEY-----"))
    }

    @Test("target, fleet and expiry are checked")
    func applicability() throws {
        let gw = Samples.gateway
        let clinic = try Identifier("clinic-a")
        let payload = Samples.configPayload
        try payload.checkApplies(fleet: Samples.fleet, gateway: gw, groups: [clinic], now: Samples.ts)
        #expect(throws: ProtocolError(.wrongTarget, path: "target", "this gateway is not in group 'clinic-a'")) {
            try payload.checkApplies(fleet: Samples.fleet, gateway: gw, groups: [], now: Samples.ts)
        }
        let otherFleet = try Identifier("other")
        #expect { try payload.checkApplies(fleet: otherFleet, gateway: gw, groups: [clinic], now: Samples.ts) } throws: {
            ($0 as? ProtocolError)?.code == .wrongTarget
        }
        #expect {
            try payload.checkApplies(fleet: Samples.fleet, gateway: gw, groups: [clinic], now: Samples.ts.addingTimeInterval(8 * 86_400))
        } throws: { ($0 as? ProtocolError)?.code == .expired }
        var forOther = payload
        forOther.target = .gateway(try Identifier("gw-0002"))
        #expect { try forOther.checkApplies(fleet: Samples.fleet, gateway: gw, groups: [], now: Samples.ts) } throws: {
            ($0 as? ProtocolError)?.code == .wrongTarget
        }
    }

    func hostileCases() throws -> [(String, Data, ProtocolError.Code)] {
        let good = operatorKey.sign(Samples.configPayload.encoded())
        var unknownKey = good
        unknownKey.kid = otherKey.keyID
        var badPayloadBase64 = good
        badPayloadBase64.payload = "%%%not base64%%%"
        var badSigBase64 = good
        badSigBase64.sig = "@@@"
        let otherPayload = operatorKey.sign(Samples.firmwarePayload.encoded())
        var sigForOther = good
        sigForOther.sig = otherPayload.sig
        var tampered = good
        var bytes = Samples.configPayload.encoded()
        bytes[bytes.startIndex + 10] ^= 0x01
        tampered.payload = bytes.base64EncodedString()
        var truncatedSig = good
        truncatedSig.sig = Data(base64Encoded: good.sig)!.prefix(32).base64EncodedString()
        var signedByOther = otherKey.sign(Samples.configPayload.encoded())
        signedByOther.kid = operatorKey.keyID
        func signedJSON(_ text: String) -> Data { operatorKey.sign(Data(text.utf8)).encoded() }
        let base = String(decoding: Samples.configPayload.encoded(), as: UTF8.self)
        return [
            ("unknown key id", unknownKey.encoded(), .unknownKeyID),
            ("payload not base64", badPayloadBase64.encoded(), .badBase64),
            ("signature not base64", badSigBase64.encoded(), .badBase64),
            ("signature for another payload", sigForOther.encoded(), .badSignature),
            ("payload tampered after signing", tampered.encoded(), .badSignature),
            ("truncated signature", truncatedSig.encoded(), .badSignature),
            ("signed by another key under a trusted id", signedByOther.encoded(), .badSignature),
            ("wrapper missing sig", Data("{\"kid\":\"\(good.kid)\",\"payload\":\"\(good.payload)\"}".utf8), .missingField),
            ("wrapper not JSON", Data("kid=1".utf8), .malformedJSON),
            ("signed payload not JSON", signedJSON("not json"), .malformedJSON),
            ("signed payload of unknown kind", signedJSON(base.replacingOccurrences(of: "\"config\"", with: "\"script\"")), .unknownKind),
            ("target with two keys", signedJSON(base.replacingOccurrences(of: "{\"group\":\"clinic-a\"}", with: "{\"group\":\"clinic-a\",\"all\":true}")), .invalidValue),
            ("target group with wildcard", signedJSON(base.replacingOccurrences(of: "clinic-a", with: "clinic/#")), .invalidIdentifier),
            ("version zero", signedJSON(base.replacingOccurrences(of: "\"version\":7", with: "\"version\":0")), .invalidValue),
            ("maxLevel 5", signedJSON(base.replacingOccurrences(of: "\"maxLevel\":2", with: "\"maxLevel\":5")), .invalidValue),
            ("telemetry interval negative", signedJSON(base.replacingOccurrences(of: "\"telemetryIntervalS\":1", with: "\"telemetryIntervalS\":-1")), .invalidValue),
            ("missing body", signedJSON(base.replacingOccurrences(of: "\"body\"", with: "\"bodyX\"")), .missingField),
            ("firmware sha256 not hex", operatorKey.sign(Data(String(decoding: Samples.firmwarePayload.encoded(), as: UTF8.self)
                .replacingOccurrences(of: String(repeating: "ab", count: 32), with: String(repeating: "zz", count: 32)).utf8)).encoded(), .invalidValue),
            ("firmware url not http", operatorKey.sign(Data(String(decoding: Samples.firmwarePayload.encoded(), as: UTF8.self)
                .replacingOccurrences(of: "https://fw.example", with: "file:///etc").utf8)).encoded(), .invalidValue),
            ("oversize document", Data(repeating: 0x20, count: WireFormat.maxPayloadBytes + 10), .oversize),
        ]
    }

    @Test("hostile signed documents are refused with the right error")
    func hostile() throws {
        let cases = try hostileCases()
        #expect(cases.count >= 20)
        for (name, bytes, code) in cases {
            do {
                _ = try keyring.verify(bytes)
                Issue.record("\(name): accepted")
            } catch {
                #expect(error.code == code, "\(name): got \(error)")
            }
        }
    }

    @Test("garbage key files are refused")
    func badKeys() {
        #expect { try SigningKey(pem: "hello") } throws: { ($0 as? ProtocolError)?.code == .badKey }
        #expect { try VerifyingKey(pem: operatorKey.pem) } throws: { ($0 as? ProtocolError)?.code == .badKey }
        #expect { try SigningKey(pem: "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----") } throws: {
            ($0 as? ProtocolError)?.code == .badBase64
        }
        #expect { try VerifyingKey(rawRepresentation: Data([1, 2, 3])) } throws: { ($0 as? ProtocolError)?.code == .badKey }
    }
}

/// An independent computation of a key id (SHA-256 via the system's sha256sum).
enum VerifyingKeyIDReference {
    static func compute(_ data: Data) async throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("kid-\(UUID().uuidString)")
        try data.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        return String(try await ChildProcess.run("/usr/bin/sha256sum", [url.path]).stdout.prefix(16))
    }
}

extension Data {
    init(hex: String) {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        self.init(bytes)
    }
}
