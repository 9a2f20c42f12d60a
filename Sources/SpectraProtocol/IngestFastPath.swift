import Foundation

extension Envelope {
    /// Decodes an envelope exactly as ``decodeSkippingChannels(_:)`` does, several times faster
    /// for the bulk of a fleet's traffic: ordinary telemetry is read straight from the bytes,
    /// and everything else (events, and any telemetry out of the ordinary) goes through the
    /// reference decoder, which also says what is wrong with a bad message.
    public static func decodeForIngest(_ data: Data) throws(ProtocolError) -> Envelope {
        if let envelope = TelemetryFastPath.read(data) { return envelope }
        return try decodeSkippingChannels(data)
    }
}

/// Reads a telemetry envelope (per-channel readings skipped) straight from its JSON bytes.
///
/// It accepts only what `JSONDecoder` with the contract's rules accepts and gives up (nil) at
/// anything it does not handle itself: an escape in a string, a duplicate key, a number with a
/// fraction where an integer goes, a value the contract refuses, nesting past 32 levels, an
/// event. Giving up costs nothing but speed: the caller then asks the reference decoder. The
/// envelope fuzz target checks that whatever this returns equals the reference's result.
struct TelemetryFastPath {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0

    static func read(_ data: Data) -> Envelope? {
        data.withUnsafeBytes { bytes in
            var reader = TelemetryFastPath(bytes: bytes)
            return reader.envelope()
        }
    }

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    // MARK: The envelope and its body

    private mutating func envelope() -> Envelope? {
        var version: Int64?, kind: String?, fleet: Identifier?, gateway: Identifier?, epoch: UUID?, boot: UUID?
        var seq: Int64?, mono: Int64?, timestamp: Date?, synced: Bool?, body: Telemetry?
        guard object({ key, reader in
            switch key {
            case "v": return fill(&version, reader.integer())
            case "kind": return fill(&kind, reader.string())
            case "fleet": return fill(&fleet, reader.identifier())
            case "gw": return fill(&gateway, reader.identifier())
            case "epoch": return fill(&epoch, reader.uuid())
            case "boot": return fill(&boot, reader.uuid())
            case "seq": return fill(&seq, reader.integer())
            case "mono": return fill(&mono, reader.integer())
            case "ts": return fill(&timestamp, reader.string().flatMap(Timestamp.parse))
            case "synced": return fill(&synced, reader.boolean())
            case "body": return fill(&body, reader.telemetry())
            default: return reader.skipValue(depth: 1)
            }
        }) else { return nil }
        skipSpace()
        guard index == bytes.count, version == Int64(Envelope.currentVersion), kind == "telemetry",
              let fleet, let gateway, let epoch, let boot, let seq, seq >= 0, let mono, mono >= 0,
              let timestamp, let synced, let body
        else { return nil }
        return Envelope(
            fleet: fleet, gateway: gateway, epoch: epoch, seq: UInt64(seq), boot: boot, monoNanos: UInt64(mono),
            timestamp: timestamp, synced: synced, message: .telemetry(body))
    }

    private mutating func telemetry() -> Telemetry? {
        // Double optionals: nil when absent, .some(nil) for null.
        var sessionId: Identifier??, level: Int64??, elapsed: Double??, vibration: Double??
        var battery: Double?, temperature: Double?, agent: Telemetry.Agent?, channels: Bool?
        guard object({ key, reader in
            switch key {
            case "sessionId": return fill(&sessionId, reader.optional { $0.identifier() })
            case "level": return fill(&level, reader.optional { $0.integer() })
            case "elapsedS": return fill(&elapsed, reader.optional { $0.number() })
            case "vibrationRpm": return fill(&vibration, reader.optional { $0.number() })
            case "batteryPct": return fill(&battery, reader.number())
            case "headbandTempC": return fill(&temperature, reader.number())
            case "agent": return fill(&agent, reader.agent())
            case "channels": return fill(&channels, reader.skipValue(depth: 2) ? true : nil)
            default: return reader.skipValue(depth: 2)
            }
        }) else { return nil }
        guard channels != nil, let battery, let temperature, let agent else { return nil }
        return Telemetry(
            sessionId: sessionId ?? nil, level: (level ?? nil).map { Int($0) }, elapsedS: elapsed ?? nil, channels: [],
            vibrationRpm: vibration ?? nil, batteryPct: battery, headbandTempC: temperature, agent: agent)
    }

    private mutating func agent() -> Telemetry.Agent? {
        var depth: Int64?, bytesHeld: Int64?, oldest: Double?, reconnects: Int64?, rss: Int64?
        guard object({ key, reader in
            switch key {
            case "outboxDepth": return fill(&depth, reader.integer())
            case "outboxBytes": return fill(&bytesHeld, reader.integer())
            case "oldestUnackedS": return fill(&oldest, reader.number())
            case "reconnects": return fill(&reconnects, reader.integer())
            case "rssKiB": return fill(&rss, reader.integer())
            default: return reader.skipValue(depth: 3)
            }
        }), let depth, let bytesHeld, let oldest, let reconnects, let rss else { return nil }
        return Telemetry.Agent(
            outboxDepth: Int(depth), outboxBytes: Int(bytesHeld), oldestUnackedS: oldest, reconnects: Int(reconnects),
            rssKiB: Int(rss))
    }

    // MARK: JSON pieces

    /// Reads `{ "key": value, ... }`, handing each key to `member`, which reads the value
    /// and returns false to give up.
    private mutating func object(_ member: (String, inout TelemetryFastPath) -> Bool) -> Bool {
        skipSpace()
        guard take(UInt8(ascii: "{")) else { return false }
        skipSpace()
        if take(UInt8(ascii: "}")) { return true }
        while true {
            skipSpace()
            guard let key = string() else { return false }
            skipSpace()
            guard take(UInt8(ascii: ":")) else { return false }
            skipSpace()
            guard member(key, &self) else { return false }
            skipSpace()
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "}"))
        }
    }

    /// `null` (.some(nil)) or a value read by `read`; nil, and the reader failed, when neither.
    private mutating func optional<T>(_ read: (inout TelemetryFastPath) -> T?) -> T?? {
        if literal("null") { return .some(nil) }
        guard let value = read(&self) else { return nil }
        return .some(value)
    }

    private mutating func identifier() -> Identifier? {
        guard let text = string() else { return nil }
        return try? Identifier(text, field: "")
    }

    /// A UUID string (``UUID/init(wireText:)``), read without making a `String` of it.
    private mutating func uuid() -> UUID? {
        guard let range = stringRange() else { return nil }
        return UUID(wireBytes: UnsafeRawBufferPointer(rebasing: bytes[range]))
    }

    /// A string without escapes or control characters, valid UTF-8.
    private mutating func string() -> String? {
        guard let range = stringRange() else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// Steps over a string without escapes or control characters, valid UTF-8; returns where
    /// its content is.
    private mutating func stringRange() -> Range<Int>? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = index
        var ascii = true
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let range = start..<index
                index += 1
                if !ascii {
                    guard String(validating: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self) != nil else { return nil }
                }
                return range
            }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            if byte >= 0x80 { ascii = false }
            index += 1
        }
        return nil
    }

    private mutating func boolean() -> Bool? {
        if literal("true") { return true }
        if literal("false") { return false }
        return nil
    }

    /// An integer token (no fraction or exponent) that fits 64 bits.
    private mutating func integer() -> Int64? {
        guard let token = numberToken(), !token.fractional else { return nil }
        var value: Int64 = 0
        let negative = bytes[token.range.lowerBound] == UInt8(ascii: "-")
        for position in token.range.dropFirst(negative ? 1 : 0) {
            let digit = Int64(bytes[position] &- UInt8(ascii: "0"))
            let (shifted, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (next, overflow2) = negative ? shifted.subtractingReportingOverflow(digit) : shifted.addingReportingOverflow(digit)
            guard !overflow1 && !overflow2 else { return nil }
            value = next
        }
        return value
    }

    /// A finite number.
    private mutating func number() -> Double? {
        guard let token = numberToken() else { return nil }
        if let value = exactDecimal(token.range) { return value }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[token.range]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { return nil }
        return value
    }

    /// A decimal without exponent and with at most 15 significant digits, as one correctly
    /// rounded division of two exactly representable numbers (so the same value the general
    /// parser gives); nil for any other token.
    private func exactDecimal(_ range: Range<Int>) -> Double? {
        var mantissa: Int64 = 0, digitCount = 0, fractionDigits = 0, inFraction = false
        var position = range.lowerBound
        let negative = bytes[position] == UInt8(ascii: "-")
        if negative { position += 1 }
        while position < range.upperBound {
            let byte = bytes[position]
            if byte == UInt8(ascii: ".") {
                inFraction = true
            } else if byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") {
                mantissa = mantissa * 10 + Int64(byte - UInt8(ascii: "0"))
                digitCount += 1
                if inFraction { fractionDigits += 1 }
                guard digitCount <= 15 else { return nil }
            } else {
                return nil  // an exponent
            }
            position += 1
        }
        let magnitude = Double(mantissa) / Self.powersOfTen[fractionDigits]
        return negative ? -magnitude : magnitude
    }

    private static let powersOfTen: [Double] = (0...15).map { exponent in (0..<exponent).reduce(1.0) { value, _ in value * 10 } }

    /// A number as JSON writes it: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    private mutating func numberToken() -> (range: Range<Int>, fractional: Bool)? {
        let start = index
        _ = take(UInt8(ascii: "-"))
        guard index < bytes.count else { return nil }
        if take(UInt8(ascii: "0")) {
            // A leading zero stands alone.
        } else if digits() == 0 {
            return nil
        }
        var fractional = false
        if take(UInt8(ascii: ".")) {
            guard digits() > 0 else { return nil }
            fractional = true
        }
        if take(UInt8(ascii: "e")) || take(UInt8(ascii: "E")) {
            if !take(UInt8(ascii: "+")) { _ = take(UInt8(ascii: "-")) }
            guard digits() > 0 else { return nil }
            fractional = true
        }
        return (start..<index, fractional)
    }

    private mutating func digits() -> Int {
        let start = index
        while index < bytes.count, bytes[index] >= UInt8(ascii: "0"), bytes[index] <= UInt8(ascii: "9") { index += 1 }
        return index - start
    }

    /// Steps over any value, nested at most 32 deep.
    private mutating func skipValue(depth: Int) -> Bool {
        guard depth <= 32, index < bytes.count else { return false }
        switch bytes[index] {
        case UInt8(ascii: "\""): return stringRange() != nil
        case UInt8(ascii: "{"): return object { _, reader in reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["):
            index += 1
            skipSpace()
            if take(UInt8(ascii: "]")) { return true }
            while true {
                skipSpace()
                guard skipValue(depth: depth + 1) else { return false }
                skipSpace()
                if take(UInt8(ascii: ",")) { continue }
                return take(UInt8(ascii: "]"))
            }
        case UInt8(ascii: "t"): return literal("true")
        case UInt8(ascii: "f"): return literal("false")
        case UInt8(ascii: "n"): return literal("null")
        default: return numberToken() != nil
        }
    }

    private mutating func literal(_ word: StaticString) -> Bool {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count else { return false }
        for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
        index += count
        return true
    }

    private mutating func take(_ byte: UInt8) -> Bool {
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    private mutating func skipSpace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }
}

/// Puts a member's value in `slot`; false (give up) when the value did not read, or when the key
/// came before (unknown keys are only stepped over, as the reference ignores them).
private func fill<T>(_ slot: inout T?, _ value: T?) -> Bool {
    guard case .none = slot, let value else { return false }
    slot = value
    return true
}
