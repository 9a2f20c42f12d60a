import Foundation

extension Envelope {
    /// Decodes an envelope exactly as ``decodeSkippingChannels(_:)`` does, several times faster
    /// for the bulk of a fleet's traffic: ordinary telemetry and the session events are read
    /// straight from the bytes, and everything else (the other events, and anything out of the
    /// ordinary) goes through the reference decoder, which also says what is wrong with a bad
    /// message.
    public static func decodeForIngest(_ data: Data) throws(ProtocolError) -> Envelope {
        if let envelope = data.withUnsafeBytes(IngestFastPath.read) {
            try WireRanges.check(envelope)
            return envelope
        }
        return try decodeSkippingChannels(data)
    }

    /// ``decodeForIngest(_:)-(Data)`` of a received payload's bytes, copied into `Data` only
    /// for the reference decoder.
    public static func decodeForIngest(_ bytes: [UInt8]) throws(ProtocolError) -> Envelope {
        if let envelope = bytes.withUnsafeBytes(IngestFastPath.read) {
            try WireRanges.check(envelope)
            return envelope
        }
        return try decodeSkippingChannels(Data(bytes))
    }
}

/// Reads a telemetry envelope (per-channel readings skipped) or a session event envelope
/// straight from its JSON bytes.
///
/// It accepts only what `JSONDecoder` with the contract's rules accepts and gives up (nil) at
/// anything it does not handle itself: an escape in a string, a duplicate key, a number with a
/// fraction where an integer goes, a value the contract refuses, nesting past 32 levels, an
/// event other than `session.*`. Giving up costs nothing but speed: the caller then asks the
/// reference decoder. The envelope fuzz target checks that whatever this returns equals the
/// reference's result.
struct IngestFastPath {
    private let bytes: UnsafeRawBufferPointer
    private var index = 0

    static func read(_ bytes: UnsafeRawBufferPointer) -> Envelope? {
        var reader = IngestFastPath(bytes: bytes)
        return reader.envelope()
    }

    static func read(_ data: Data) -> Envelope? {
        data.withUnsafeBytes(read)
    }

    private init(bytes: UnsafeRawBufferPointer, index: Int = 0) {
        self.bytes = bytes
        self.index = index
    }

    // MARK: The envelope and its body

    /// The body as first read: telemetry at once; anything else only stepped over (its place
    /// kept), since `body` comes before `type` in the contract's sorted keys.
    private enum Body {
        case telemetry(Telemetry)
        case other(Range<Int>)
    }

    private mutating func envelope() -> Envelope? {
        var version: Int64?, kind: String?, type: String?, fleet: Identifier?, gateway: Identifier?, epoch: UUID?, boot: UUID?
        var seq: Int64?, mono: Int64?, timestamp: Date?, synced: Bool?, body: Body?, historical: Bool?
        guard object({ key, reader in
            switch key {
            case "v": return fill(&version, reader.integer())
            case "kind": return fill(&kind, reader.string())
            case "type": return fill(&type, reader.string())
            case "fleet": return fill(&fleet, reader.identifier())
            case "gw": return fill(&gateway, reader.identifier())
            case "epoch": return fill(&epoch, reader.uuid())
            case "boot": return fill(&boot, reader.uuid())
            case "seq": return fill(&seq, reader.integer())
            case "mono": return fill(&mono, reader.integer())
            case "ts": return fill(&timestamp, reader.string().flatMap(Timestamp.parse))
            case "synced": return fill(&synced, reader.boolean())
            case "body": return fill(&body, reader.body())
            case "historical": return fill(&historical, reader.boolean())
            default: return reader.skipValue(depth: 1)
            }
        }) else { return nil }
        skipSpace()
        guard index == bytes.count, version == Int64(Envelope.currentVersion),
              let fleet, let gateway, let epoch, let boot, let seq, seq >= 0, let mono, mono >= 0,
              let timestamp, let synced, let body
        else { return nil }
        let message: Message
        switch (kind, body) {
        case ("telemetry", .telemetry(let telemetry)):
            message = .telemetry(telemetry)
        case ("event", .other(let range)):
            guard let type else { return nil }
            var reader = IngestFastPath(bytes: UnsafeRawBufferPointer(rebasing: bytes[..<range.upperBound]), index: range.lowerBound)
            guard let event = reader.event(type), reader.index == range.upperBound else { return nil }
            message = .event(event)
        default:
            return nil
        }
        return Envelope(
            fleet: fleet, gateway: gateway, epoch: epoch, seq: UInt64(seq), boot: boot, monoNanos: UInt64(mono),
            timestamp: timestamp, synced: synced, message: message, historical: historical ?? false)
    }

    /// Telemetry when the body reads as telemetry; otherwise where the body is.
    private mutating func body() -> Body? {
        var attempt = self
        if let telemetry = attempt.telemetry() {
            self = attempt
            return .telemetry(telemetry)
        }
        let start = index
        guard skipValue(depth: 1) else { return nil }
        return .other(start..<index)
    }

    // MARK: Session events

    private mutating func event(_ type: String) -> Event? {
        switch type {
        case "session.started": return sessionStarted().map(Event.sessionStarted)
        case "session.level_changed": return levelChanged().map(Event.sessionLevelChanged)
        case "session.paused": return pauseChange().map(Event.sessionPaused)
        case "session.resumed": return pauseChange().map(Event.sessionResumed)
        case "session.completed": return summary().map(Event.sessionCompleted)
        case "session.aborted":
            // The reference refuses an abort without a reason.
            guard let summary = summary(), summary.reason != nil else { return nil }
            return .sessionAborted(summary)
        default: return nil
        }
    }

    private mutating func sessionStarted() -> SessionStarted? {
        var sessionId: Identifier?, level: Int?, profileVersion: String?, channels: [String]?
        var phase: RegimenPhase??, day: Int64??, requestedBy: String??
        guard object({ key, reader in
            switch key {
            case "sessionId": return fill(&sessionId, reader.identifier())
            case "requestedBy": return fill(&requestedBy, reader.optional { $0.string() })
            case "level": return fill(&level, reader.level())
            case "profileVersion": return fill(&profileVersion, reader.string())
            case "channels": return fill(&channels, reader.strings())
            case "regimenPhase": return fill(&phase, reader.optional { $0.string().flatMap(RegimenPhase.init(rawValue:)) })
            case "regimenDay": return fill(&day, reader.optional { $0.integer() })
            default: return reader.skipValue(depth: 2)
            }
        }), let sessionId, let level, let profileVersion, let channels else { return nil }
        return SessionStarted(
            sessionId: sessionId, level: level, profileVersion: profileVersion, channels: channels,
            regimenPhase: phase ?? nil, regimenDay: (day ?? nil).map { Int($0) }, requestedBy: requestedBy ?? nil)
    }

    private mutating func levelChanged() -> LevelChanged? {
        var sessionId: Identifier?, from: Int?, to: Int?, requestedBy: String??
        guard object({ key, reader in
            switch key {
            case "sessionId": return fill(&sessionId, reader.identifier())
            case "requestedBy": return fill(&requestedBy, reader.optional { $0.string() })
            case "from": return fill(&from, reader.level())
            case "to": return fill(&to, reader.level())
            default: return reader.skipValue(depth: 2)
            }
        }), let sessionId, let from, let to else { return nil }
        return LevelChanged(sessionId: sessionId, from: from, to: to, requestedBy: requestedBy ?? nil)
    }

    private mutating func pauseChange() -> PauseChange? {
        var sessionId: Identifier?, reason: String?
        guard object({ key, reader in
            switch key {
            case "sessionId": return fill(&sessionId, reader.identifier())
            case "reason": return fill(&reason, reader.string())
            default: return reader.skipValue(depth: 2)
            }
        }), let sessionId, let reason else { return nil }
        return PauseChange(sessionId: sessionId, reason: reason)
    }

    private mutating func summary() -> SessionSummary? {
        var sessionId: Identifier?, duration: Double?, stimulating: Double?, levelSeconds: [String: Double]?
        var pauses: Int64?, charge: [String: Double]?, reason: String??, phase: RegimenPhase??, day: Int64??, requestedBy: String??
        guard object({ key, reader in
            switch key {
            case "requestedBy": return fill(&requestedBy, reader.optional { $0.string() })
            case "sessionId": return fill(&sessionId, reader.identifier())
            case "durationS": return fill(&duration, reader.number().flatMap { $0 >= 0 ? $0 : nil })
            case "stimulatingS": return fill(&stimulating, reader.number().flatMap { $0 >= 0 ? $0 : nil })
            case "levelSeconds":
                return fill(&levelSeconds, reader.numbers().flatMap { $0.keys.allSatisfy { ["1", "2", "3"].contains($0) } ? $0 : nil })
            case "pauses": return fill(&pauses, reader.integer())
            case "chargeMicroCoulombs": return fill(&charge, reader.numbers())
            case "reason": return fill(&reason, reader.optional { $0.string() })
            case "regimenPhase": return fill(&phase, reader.optional { $0.string().flatMap(RegimenPhase.init(rawValue:)) })
            case "regimenDay": return fill(&day, reader.optional { $0.integer() })
            default: return reader.skipValue(depth: 2)
            }
        }), let sessionId, let duration, let stimulating, let levelSeconds, let pauses, let charge else { return nil }
        return SessionSummary(
            sessionId: sessionId, durationS: duration, stimulatingS: stimulating, levelSeconds: levelSeconds, pauses: Int(pauses),
            chargeMicroCoulombs: charge, reason: (reason ?? nil).map(AbortReason.init(rawValue:)), regimenPhase: phase ?? nil,
            regimenDay: (day ?? nil).map { Int($0) }, requestedBy: requestedBy ?? nil)
    }

    /// A level as the reference reads one: a number that is a whole 1, 2 or 3 (`2.0` included).
    private mutating func level() -> Int? {
        guard let number = number(), number.rounded() == number, (1...3).contains(number) else { return nil }
        return Int(number)
    }

    /// `[ "text", ... ]`.
    private mutating func strings() -> [String]? {
        var values: [String] = []
        guard elements({ reader in
            guard let value = reader.string() else { return false }
            values.append(value)
            return true
        }) else { return nil }
        return values
    }

    /// `{ "key": number, ... }` with no key twice.
    private mutating func numbers() -> [String: Double]? {
        var values: [String: Double] = [:]
        guard object({ key, reader in
            guard values[key] == nil, let value = reader.number() else { return false }
            values[key] = value
            return true
        }) else { return nil }
        return values
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
        var depth: Int64?, bytesHeld: Int64?, oldest: Double?, reconnects: Int64?, rss: Int64?, refused: Int64??
        guard object({ key, reader in
            switch key {
            case "outboxDepth": return fill(&depth, reader.integer())
            case "outboxBytes": return fill(&bytesHeld, reader.integer())
            case "oldestUnackedS": return fill(&oldest, reader.number())
            case "reconnects": return fill(&reconnects, reader.integer())
            case "rssKiB": return fill(&rss, reader.integer())
            case "outboxRefused": return fill(&refused, reader.optional { $0.integer() })
            default: return reader.skipValue(depth: 3)
            }
        }), let depth, let bytesHeld, let oldest, let reconnects, let rss else { return nil }
        return Telemetry.Agent(
            outboxDepth: Int(depth), outboxBytes: Int(bytesHeld), oldestUnackedS: oldest, reconnects: Int(reconnects),
            rssKiB: Int(rss), outboxRefused: (refused ?? nil).map { Int($0) })
    }

    // MARK: JSON pieces

    /// Reads `{ "key": value, ... }`, handing each key to `member`, which reads the value
    /// and returns false to give up.
    private mutating func object(_ member: (String, inout IngestFastPath) -> Bool) -> Bool {
        members { key, reader in member(reader.text(key), &reader) }
    }

    /// ``object(_:)`` with where each key's text is rather than a `String` of it (a skipped
    /// object's keys are never looked at).
    @inline(__always)
    private mutating func members(_ member: (Range<Int>, inout IngestFastPath) -> Bool) -> Bool {
        skipSpace()
        guard take(UInt8(ascii: "{")) else { return false }
        skipSpace()
        if take(UInt8(ascii: "}")) { return true }
        while true {
            skipSpace()
            guard let key = stringRange() else { return false }
            skipSpace()
            guard take(UInt8(ascii: ":")) else { return false }
            skipSpace()
            guard member(key, &self) else { return false }
            skipSpace()
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "}"))
        }
    }

    /// Reads `[ value, ... ]`, handing each element to `element`, which reads it and returns
    /// false to give up.
    @inline(__always)
    private mutating func elements(_ element: (inout IngestFastPath) -> Bool) -> Bool {
        skipSpace()
        guard take(UInt8(ascii: "[")) else { return false }
        skipSpace()
        if take(UInt8(ascii: "]")) { return true }
        while true {
            skipSpace()
            guard element(&self) else { return false }
            skipSpace()
            if take(UInt8(ascii: ",")) { continue }
            return take(UInt8(ascii: "]"))
        }
    }

    /// `null` (.some(nil)) or a value read by `read`; nil, and the reader failed, when neither.
    private mutating func optional<T>(_ read: (inout IngestFastPath) -> T?) -> T?? {
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
        stringRange().map(text)
    }

    /// The text at `range` (already checked by ``stringRange()``).
    private func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// Steps over a string without escapes or control characters, valid UTF-8; returns where
    /// its content is.
    private mutating func stringRange() -> Range<Int>? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        let start = index
        var ascii = true
        skipPlainWords()
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

    /// Steps over string content eight bytes at a time while none of them needs a look: no
    /// quote, backslash, control character or non-ASCII byte (a telemetry message's skipped
    /// channels are mostly short strings, and this was a third of parsing's time byte by byte).
    /// Stops at the word holding the first such byte, for the byte loop.
    private mutating func skipPlainWords() {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        while index + 8 <= bytes.count {
            let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self))
            // A byte of `x` is zero (a byte below n, for n up to 0x80): its high bit is set in
            // `(x - ones * n) & ~x & highs`. Exact for the lowest such byte; bytes above it may
            // be flagged wrongly, and any flag sends the whole word to the byte loop anyway.
            let quote = word ^ (ones &* UInt64(UInt8(ascii: "\"")))
            let backslash = word ^ (ones &* UInt64(UInt8(ascii: "\\")))
            let flagged = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((word &- ones &* 0x20) & ~word) | word
            if flagged & highs != 0 { return }
            index += 8
        }
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
        // A skipped object's keys are never made into Strings (a telemetry message's channels
        // are most of its bytes).
        case UInt8(ascii: "{"): return members { _, reader in reader.skipValue(depth: depth + 1) }
        case UInt8(ascii: "["): return elements { reader in reader.skipValue(depth: depth + 1) }
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
