import Foundation
import SpectraProtocol

/// Envelopes as the aggregator reads them, both ways (full and without telemetry channels);
/// anything that decodes must encode and decode again to the same value.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let data = Data(bytes: start, count: count)
    if let envelope = try? Envelope.decode(data) {
        let again = try? Envelope.decode(envelope.encoded())
        precondition(again == envelope, "an envelope did not survive encode/decode")
    }
    _ = try? Envelope.decodeSkippingChannels(data)
    return 0
}
