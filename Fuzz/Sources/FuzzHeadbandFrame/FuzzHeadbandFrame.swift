import HeadbandLink
import Waveform

/// The headband link from both ends: bytes a device (or a damaged cable) sends the gateway,
/// and requests a gateway sends the device. Nothing traps; every frame that decodes
/// re-encodes to bytes that decode to it again; every reply the device makes is a valid frame.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    var decoder = LinkFrameDecoder()
    var device = HeadbandDevice(band: SimulatedHeadband(channels: 4), channels: 4)
    for frame in decoder.feed(bytes) {
        var again = LinkFrameDecoder()
        precondition(again.feed(LinkFraming.encode(frame)) == [frame], "a frame did not survive re-encoding")
        // The gateway's decoders on whatever body came.
        _ = LinkMessages.decodeInfo(frame.body)
        _ = LinkMessages.decodeReports(frame.body, channels: 4, maxPairs: 64)
        _ = LinkMessages.decodeSegmentReply(frame.body, channels: 4, maxPairs: 64)
        _ = LinkMessages.decodeStatus(frame.body)
        _ = LinkMessages.decodeError(frame.body)
        _ = LinkMessages.decodeFirmwareCommitted(frame.body)
        // The device's side of the same frame.
        for reply in device.handle(frame, now: 0) {
            var check = LinkFrameDecoder()
            precondition(check.feed(LinkFraming.encode(reply)).count == 1, "the device made an invalid frame")
        }
    }
    return 0
}
