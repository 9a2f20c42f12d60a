/// The headband link's framing (docs/headband-protocol.md): each frame is
/// `version, type, seq (u16 LE), body, CRC-32 (LE)`, COBS-encoded and ended by a 0x00 byte, so
/// a receiver finds the next frame after any corruption by waiting for the next zero.
public enum LinkFraming {
    /// The protocol version this build speaks.
    public static let version: UInt8 = 1
    /// Largest decoded frame (header, body and CRC), bytes.
    public static let maxFrameBytes = 2048

    /// CRC-32 (IEEE 802.3, reflected, as zlib and Ethernet compute it).
    public static func crc32(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8)
        }
        return crc ^ 0xFFFF_FFFF
    }

    private static let table: [UInt32] = (0..<256).map { index in
        var value = UInt32(index)
        for _ in 0..<8 { value = value & 1 == 1 ? 0xEDB8_8320 ^ (value >> 1) : value >> 1 }
        return value
    }

    /// COBS: `bytes` without any 0x00, one byte longer per 254 bytes of input (plus one).
    public static func cobsEncode(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0]
        out.reserveCapacity(bytes.count + bytes.count / 254 + 2)
        var codeIndex = 0
        var code: UInt8 = 1
        for byte in bytes {
            if byte == 0 {
                out[codeIndex] = code
                codeIndex = out.count
                out.append(0)
                code = 1
            } else {
                out.append(byte)
                code += 1
                if code == 0xFF {
                    out[codeIndex] = code
                    codeIndex = out.count
                    out.append(0)
                    code = 1
                }
            }
        }
        out[codeIndex] = code
        return out
    }

    /// The bytes `cobsEncode` made, or nil for input no encoder makes (a zero, a code past the end).
    public static func cobsDecode(_ bytes: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let code = Int(bytes[index])
            guard code != 0 else { return nil }
            let end = index + code
            guard end <= bytes.endIndex else { return nil }
            var position = index + 1
            while position < end {
                guard bytes[position] != 0 else { return nil }
                out.append(bytes[position])
                position += 1
            }
            index = end
            if code != 0xFF && index < bytes.endIndex { out.append(0) }
        }
        return out
    }

    /// One frame on the wire, delimiter included.
    public static func encode(_ frame: LinkFrame) -> [UInt8] {
        var raw: [UInt8] = [version, frame.type.rawValue, UInt8(frame.seq & 0xFF), UInt8(frame.seq >> 8)]
        raw += frame.body
        let crc = crc32(raw)
        raw += [UInt8(crc & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8((crc >> 16) & 0xFF), UInt8(crc >> 24)]
        return cobsEncode(raw) + [0]
    }
}

/// What a frame carries: its type, the request's sequence number (a reply echoes it), a body.
public struct LinkFrame: Sendable, Hashable {
    public var type: LinkMessageType
    public var seq: UInt16
    public var body: [UInt8]

    public init(type: LinkMessageType, seq: UInt16, body: [UInt8] = []) {
        self.type = type
        self.seq = seq
        self.body = body
    }
}

/// Every frame type. Requests go from the gateway to the headband; each has one reply type
/// (the request's with the high bit set) or ``error``.
public enum LinkMessageType: UInt8, Sendable, Hashable, CaseIterable {
    case hello = 0x01, beginSession = 0x02, segment = 0x03, idle = 0x04, status = 0x05
    case firmwareBegin = 0x06, firmwareChunk = 0x07, firmwareCommit = 0x08, endSession = 0x09
    case helloReply = 0x81, beginSessionReply = 0x82, segmentReply = 0x83, idleReply = 0x84, statusReply = 0x85
    case firmwareBeginReply = 0x86, firmwareChunkReply = 0x87, firmwareCommitReply = 0x88, endSessionReply = 0x89
    case error = 0xFF

    /// The reply type a request expects.
    public var reply: LinkMessageType? { LinkMessageType(rawValue: rawValue | 0x80) }
}

/// Splits a byte stream into frames. Never traps: bytes that do not make a valid frame (a bad
/// COBS run, a CRC mismatch, another protocol version, an unknown type, more than
/// ``LinkFraming/maxFrameBytes``) are dropped and counted, and decoding resumes at the next 0x00.
public struct LinkFrameDecoder: Sendable {
    public private(set) var pending: [UInt8] = []
    /// Frames dropped because their bytes were damaged (COBS or CRC).
    public private(set) var corrupted = 0
    /// Frames dropped for being too long, of another version or of an unknown type.
    public private(set) var refused = 0
    private var overflowing = false

    public init() {}

    /// Feeds received bytes; returns the complete frames they finish.
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [LinkFrame] {
        var frames: [LinkFrame] = []
        for byte in bytes {
            guard byte == 0 else {
                if pending.count < LinkFraming.maxFrameBytes + LinkFraming.maxFrameBytes / 254 + 2 {
                    pending.append(byte)
                } else {
                    overflowing = true
                }
                continue
            }
            defer {
                pending.removeAll(keepingCapacity: true)
                overflowing = false
            }
            if overflowing {
                refused += 1
                continue
            }
            guard !pending.isEmpty else { continue }
            guard let raw = LinkFraming.cobsDecode(pending[...]), raw.count >= 8 else {
                corrupted += 1
                continue
            }
            let content = raw[..<(raw.count - 4)]
            let stored = UInt32(raw[raw.count - 4]) | UInt32(raw[raw.count - 3]) << 8 | UInt32(raw[raw.count - 2]) << 16 | UInt32(raw[raw.count - 1]) << 24
            guard LinkFraming.crc32(content) == stored else {
                corrupted += 1
                continue
            }
            guard raw.count <= LinkFraming.maxFrameBytes, raw[0] == LinkFraming.version, let type = LinkMessageType(rawValue: raw[1]) else {
                refused += 1
                continue
            }
            frames.append(LinkFrame(type: type, seq: UInt16(raw[2]) | UInt16(raw[3]) << 8, body: Array(raw[4..<(raw.count - 4)])))
        }
        return frames
    }
}
