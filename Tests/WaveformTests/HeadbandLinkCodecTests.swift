import HeadbandLink
import Testing
import Waveform

/// The headband link's framing, messages and device side, in process: what a damaged or
/// hostile byte stream does to them.
@Suite("headband link codec")
struct HeadbandLinkCodecTests {
    static func random(_ count: Int, seed: inout UInt64) -> [UInt8] {
        (0..<count).map { _ in
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: seed >> 56)
        }
    }

    @Test("COBS removes every zero and round-trips any bytes, at the 254-byte block edges too")
    func cobs() {
        var seed: UInt64 = 3
        var cases: [[UInt8]] = [[], [0], [0, 0], [1], Array(repeating: 7, count: 253), Array(repeating: 7, count: 254),
                                Array(repeating: 7, count: 255), Array(repeating: 0, count: 600)]
        for count in [1, 10, 300, 1000] { cases.append(Self.random(count, seed: &seed)) }
        for bytes in cases {
            let encoded = LinkFraming.cobsEncode(bytes)
            #expect(!encoded.contains(0))
            #expect(LinkFraming.cobsDecode(encoded[...]) == bytes, "\(bytes.count) bytes")
        }
        #expect(LinkFraming.crc32(Array("123456789".utf8)) == 0xCBF4_3926, "the standard CRC-32 check value")
    }

    @Test("frames split from one stream; a damaged frame is dropped and counted and the next one still arrives")
    func frames() {
        let first = LinkFrame(type: .segment, seq: 1, body: [0, 1, 2, 0, 255])
        let second = LinkFrame(type: .status, seq: 65_535, body: [3])
        var decoder = LinkFrameDecoder()
        #expect(decoder.feed(LinkFraming.encode(first) + LinkFraming.encode(second)) == [first, second])
        var damaged = LinkFraming.encode(first)
        damaged[3] ^= 0x20
        #expect(decoder.feed(damaged + LinkFraming.encode(second)) == [second])
        #expect(decoder.corrupted == 1)
        // Byte by byte, as a slow UART delivers them.
        var slow: [LinkFrame] = []
        for byte in LinkFraming.encode(first) { slow += decoder.feed([byte]) }
        #expect(slow == [first])
    }

    @Test("a million hostile bytes never trap the decoder, and what they hold is refused or decoded within bounds")
    func hostileBytes() {
        var seed: UInt64 = 11
        var decoder = LinkFrameDecoder()
        var device = HeadbandDevice(band: SimulatedHeadband(channels: 4), channels: 4)
        var decoded = 0
        for _ in 0..<1000 {
            var chunk = Self.random(1000, seed: &seed)
            // Mostly short runs between zeros, so some frames get through COBS to the CRC.
            for index in stride(from: 0, to: chunk.count, by: 37) { chunk[index] = 0 }
            for frame in decoder.feed(chunk) {
                decoded += 1
                _ = device.handle(frame, now: 0)
            }
        }
        #expect(decoder.pending.count <= LinkFraming.maxFrameBytes + 20)
        #expect(decoder.corrupted > 1000)
        // An endless run without a zero is cut off, not buffered.
        var flood = LinkFrameDecoder()
        _ = flood.feed(Array(repeating: 0x41, count: 100_000))
        #expect(flood.pending.count <= LinkFraming.maxFrameBytes + 20)
        #expect(flood.feed([0]).isEmpty && flood.refused == 1)
    }

    @Test("the device refuses a segment past its own limits or with non-finite values, and never executes it")
    func deviceLimits() {
        var device = HeadbandDevice(band: SimulatedHeadband(channels: 4), channels: 4)
        _ = device.handle(LinkFrame(type: .beginSession, seq: 1, body: LinkMessages.encode(f32: 900)), now: 0)
        func segment(_ change: (inout Segment) -> Void) -> Segment {
            var segment = Segment(
                channelIndex: 0, channelID: "ch0", startS: 0, pairs: 2, frequencyHz: 10, phaseWidthMicros: 20_000,
                startMicroAmps: 200, stepMicroAmps: 0, leadingPositive: true, vibrationRpm: 0, level: 1)
            change(&segment)
            return segment
        }
        var seq: UInt16 = 1
        for hostile in [
            segment { $0.startMicroAmps = 1200 }, segment { $0.startMicroAmps = .nan }, segment { $0.frequencyHz = .infinity },
            segment { $0.channelIndex = 9 }, segment { $0.pairs = 500 }, segment { $0.startMicroAmps = -5 },
            segment { $0.stepMicroAmps = 900 }, segment { $0.stepMicroAmps = -300 },
        ] {
            seq += 1
            let reply = device.handle(LinkFrame(type: .segment, seq: seq, body: LinkMessages.encode(hostile)), now: 0)
            #expect(reply.first?.type == .error && LinkMessages.decodeError(reply.first?.body ?? [])?.code == .outOfRange, "\(hostile)")
        }
        #expect(device.band.stimulatedS == 0, "nothing was delivered")
        // A valid one runs once, even when the request comes twice (a retransmission).
        let good = LinkFrame(type: .segment, seq: 100, body: LinkMessages.encode(segment { _ in }))
        let once = device.handle(good, now: 0.1)
        let again = device.handle(good, now: 0.2)
        #expect(once == again && once.first?.type == .segmentReply)
        #expect(abs(device.band.stimulatedS - 0.2) < 1e-9, "two pairs at 10 Hz, delivered once: \(device.band.stimulatedS)")
    }

    @Test("the device watchdog stops output when the gateway is silent, and refuses segments until a new session")
    func watchdog() {
        var device = HeadbandDevice(band: SimulatedHeadband(channels: 4), channels: 4, watchdogMs: 500)
        #expect(device.tick(now: 10) == nil, "no session: nothing to stop")
        _ = device.handle(LinkFrame(type: .beginSession, seq: 1, body: LinkMessages.encode(f32: 900)), now: 1)
        #expect(device.tick(now: 1.4) == nil)
        #expect(device.tick(now: 1.6)?.hasPrefix("watchdog:") == true)
        let refused = device.handle(LinkFrame(type: .segment, seq: 2, body: []), now: 2)
        #expect(LinkMessages.decodeError(refused.first?.body ?? [])?.code == .watchdogStopped)
        _ = device.handle(LinkFrame(type: .beginSession, seq: 3, body: LinkMessages.encode(f32: 900)), now: 3)
        #expect(!device.watchdogStopped)
        // An ended session disarms it.
        _ = device.handle(LinkFrame(type: .endSession, seq: 4), now: 3.1)
        #expect(device.tick(now: 10) == nil)
    }
}
