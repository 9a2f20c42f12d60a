import Foundation
import SpectraProtocol

/// Envelopes as the aggregator reads them, both ways (full and without telemetry channels);
/// anything that decodes must encode and decode again to the same value, and the aggregator's
/// fast path must agree with the reference decoder on every input.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    if let envelope = try? Envelope.decode(data) {
        let again = try? Envelope.decode(envelope.encoded())
        precondition(again == envelope, "an envelope did not survive encode/decode")
    }
    let reference = Result { () throws(ProtocolError) in try Envelope.decodeSkippingChannels(data) }
    let fast = Result { () throws(ProtocolError) in try Envelope.decodeForIngest(data) }
    switch (reference, fast) {
    case (.success(let a), .success(let b)): precondition(a == b, "the fast path read \(b), the reference \(a)")
    case (.failure(let a), .failure(let b)): precondition(a.code == b.code, "the fast path failed with \(b), the reference with \(a)")
    default: preconditionFailure("the fast path and the reference disagree: \(fast) against \(reference)")
    }
    return 0
}
