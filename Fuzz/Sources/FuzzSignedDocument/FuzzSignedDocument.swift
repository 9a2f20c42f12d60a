import Foundation
import SpectraProtocol

/// Signed documents: the wrapper, verification with a trusted key, and the payload.
private let keyring = Keyring([SigningKey().verifyingKey])

@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    _ = try? keyring.verify(data)
    if let signed = try? SignedDocument.decode(data), let payload = Data(base64Encoded: signed.payload) {
        _ = try? WireFormat.decode(DocumentPayload.self, from: payload)
    }
    _ = try? WireFormat.decode(DocumentPayload.self, from: data)
    return 0
}
