import Foundation

/// One message an agent publishes on `event` or `telemetry`: the identity and clocks every
/// consumer needs, around a typed ``Message``.
///
/// `(gateway, epoch, seq)` is unique forever; consumers dedupe on it. `mono` and `synced` let
/// a consumer place a message in time even when the gateway's wall clock was wrong.
public struct Envelope: Sendable, Equatable {
    /// The envelope version this build writes and reads.
    public static let currentVersion = 1

    /// The fleet the gateway belongs to.
    public var fleet: Identifier
    /// The gateway that produced the message (`gw` on the wire).
    public var gateway: Identifier
    /// Made when the gateway's outbox database was created; a new database means a new epoch.
    public var epoch: UUID
    /// The outbox's 64-bit sequence number, taken in the transaction that stored the message.
    public var seq: UInt64
    /// Made at every agent start.
    public var boot: UUID
    /// Nanoseconds of a monotonic clock since `boot`.
    public var monoNanos: UInt64
    /// Wall-clock time when the message was made.
    public var timestamp: Date
    /// Whether the wall clock was trusted (NTP-synchronised) when `timestamp` was taken.
    public var synced: Bool
    /// The typed content.
    public var message: Message
    /// Replayed from a backlog. Under MQTT 5 this travels as the user property
    /// `historical=true` and the field stays false; an MQTT 3.1.1 client, which has no user
    /// properties, adds `"historical":true` to the envelope instead (readers that do not know
    /// the field ignore it).
    public var historical: Bool

    /// Creates an envelope.
    public init(
        fleet: Identifier, gateway: Identifier, epoch: UUID, seq: UInt64, boot: UUID,
        monoNanos: UInt64, timestamp: Date, synced: Bool, message: Message, historical: Bool = false
    ) {
        self.historical = historical
        self.fleet = fleet
        self.gateway = gateway
        self.epoch = epoch
        self.seq = seq
        self.boot = boot
        self.monoNanos = monoNanos
        self.timestamp = timestamp
        self.synced = synced
        self.message = message
    }

    /// The envelope's `kind`.
    public var kind: Kind {
        switch message {
        case .event: .event
        case .telemetry: .telemetry
        }
    }

    /// The two kinds of envelope.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case event
        case telemetry
    }

    /// Decodes an envelope from untrusted bytes.
    /// - Throws: ``ProtocolError`` (see ``WireFormat/decode(_:from:)``), `unsupportedVersion`,
    ///   `unknownKind`, `unknownEventType`, or `outOfRange` (``WireRanges``).
    public static func decode(_ data: Data) throws(ProtocolError) -> Envelope {
        try WireFormat.decode(Envelope.self, from: data)
    }

    /// The envelope as wire JSON. Telemetry is written straight into bytes (``TelemetryWriter``),
    /// everything else through `JSONEncoder`; the bytes are the same.
    public func encoded() -> Data {
        writtenTelemetry().map { Data($0) } ?? WireFormat.encode(self)
    }

    /// ``encoded()`` as the bytes of an MQTT payload (telemetry is not copied through `Data`).
    public func encodedBytes() -> [UInt8] {
        writtenTelemetry() ?? [UInt8](WireFormat.encode(self))
    }

    private func writtenTelemetry() -> [UInt8]? {
        guard case .telemetry(let telemetry) = message else { return nil }
        return TelemetryWriter.write(self, telemetry)
    }

    /// Decodes an envelope without telemetry's per-channel readings (see
    /// ``WireFormat/skipTelemetryChannels``): the same checks otherwise, less work for readers
    /// such as the aggregator that never look at them.
    public static func decodeSkippingChannels(_ data: Data) throws(ProtocolError) -> Envelope {
        try WireFormat.decode(Envelope.self, from: data, userInfo: [WireFormat.skipTelemetryChannels: true])
    }
}

/// The content of an ``Envelope``.
public enum Message: Sendable, Equatable {
    /// A session or system event (`kind: "event"`).
    case event(Event)
    /// A periodic measurement (`kind: "telemetry"`).
    case telemetry(Telemetry)
}

extension Envelope: Codable {
    enum CodingKeys: String, CodingKey {
        case v, kind, type, fleet, gw, epoch, seq, boot, mono, ts, synced, body, historical
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let version = try c.decode(Int.self, forKey: .v)
        guard version == Self.currentVersion else {
            throw ProtocolError(
                .unsupportedVersion, path: "v",
                "envelope version \(version) is not supported; this build reads v\(Self.currentVersion)")
        }
        let kindText = try c.decode(String.self, forKey: .kind)
        guard let kind = Kind(rawValue: kindText) else {
            throw ProtocolError(
                .unknownKind, path: "kind", "\(Identifier.describe(kindText)) is not 'event' or 'telemetry'")
        }
        fleet = try c.decodeIdentifier(forKey: .fleet)
        gateway = try c.decodeIdentifier(forKey: .gw)
        epoch = try c.decodeUUID(forKey: .epoch)
        seq = try c.decodeCounter(forKey: .seq)
        boot = try c.decodeUUID(forKey: .boot)
        monoNanos = try c.decodeCounter(forKey: .mono)
        timestamp = try c.decodeTimestamp(forKey: .ts)
        synced = try c.decode(Bool.self, forKey: .synced)
        historical = try c.decodeIfPresent(Bool.self, forKey: .historical) ?? false
        switch kind {
        case .event:
            let type = try c.decode(String.self, forKey: .type)
            message = .event(try Event(type: type, bodyFrom: c.superDecoder(forKey: .body)))
        case .telemetry:
            message = .telemetry(try c.decode(Telemetry.self, forKey: .body))
        }
        try WireRanges.check(self)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Self.currentVersion, forKey: .v)
        try c.encode(kind, forKey: .kind)
        try c.encode(fleet, forKey: .fleet)
        try c.encode(gateway, forKey: .gw)
        try c.encode(epoch.wireString, forKey: .epoch)
        try c.encode(seq, forKey: .seq)
        try c.encode(boot.wireString, forKey: .boot)
        try c.encode(monoNanos, forKey: .mono)
        try c.encode(timestamp, forKey: .ts)
        try c.encode(synced, forKey: .synced)
        if historical { try c.encode(true, forKey: .historical) }
        switch message {
        case .event(let event):
            try c.encode(event.type.rawValue, forKey: .type)
            try event.encodeBody(to: c.superEncoder(forKey: .body))
        case .telemetry(let telemetry):
            try c.encode(telemetry, forKey: .body)
        }
    }
}

extension UUID {
    /// Lower-case UUID text, as the contract writes it. Written directly: the aggregator keys
    /// every envelope it counts by its epoch's text, and `uuidString.lowercased()` formats
    /// through `snprintf` and then copies.
    public var wireString: String {
        let digits: StaticString = "0123456789abcdef"
        return withUnsafeBytes(of: uuid) { raw in
            String(unsafeUninitializedCapacity: 36) { out in
                var index = 0
                for position in 0..<16 {
                    if position == 4 || position == 6 || position == 8 || position == 10 {
                        out[index] = UInt8(ascii: "-")
                        index += 1
                    }
                    out[index] = digits.utf8Start[Int(raw[position] >> 4)]
                    out[index + 1] = digits.utf8Start[Int(raw[position] & 0x0F)]
                    index += 2
                }
                return index
            }
        }
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in either case: what `UUID(uuidString:)`
    /// accepts, read directly rather than through `sscanf` (two UUIDs per received envelope).
    public init?(wireText text: String) {
        var text = text
        guard let uuid = text.withUTF8({ UUID(wireBytes: UnsafeRawBufferPointer($0)) }) else { return nil }
        self = uuid
    }

    /// ``init(wireText:)`` on the text's UTF-8 bytes.
    init?(wireBytes text: UnsafeRawBufferPointer) {
        guard text.count == 36 else { return nil }
        func nibble(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte &- UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte &- UInt8(ascii: "a") &+ 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte &- UInt8(ascii: "A") &+ 10
            default: nil
            }
        }
        var uuid: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let parsed = withUnsafeMutableBytes(of: &uuid) { out -> Bool in
            var index = 0
            for position in 0..<16 {
                if position == 4 || position == 6 || position == 8 || position == 10 {
                    guard text[index] == UInt8(ascii: "-") else { return false }
                    index += 1
                }
                guard let high = nibble(text[index]), let low = nibble(text[index + 1]) else { return false }
                out[position] = high << 4 | low
                index += 2
            }
            return true
        }
        guard parsed else { return nil }
        self.init(uuid: uuid)
    }
}

extension KeyedDecodingContainer {
    func decodeUUID(forKey key: Key) throws -> UUID {
        let text = try decode(String.self, forKey: key)
        guard let uuid = UUID(wireText: text) else {
            throw ProtocolError(
                .invalidValue, path: (codingPath + [key]).dottedPath, "\(Identifier.describe(text)) is not a UUID")
        }
        return uuid
    }

    /// An id, decoded as a plain string and validated (cheaper than a nested decoder).
    func decodeIdentifier(forKey key: Key) throws -> Identifier {
        let text = try decode(String.self, forKey: key)
        do {
            return try Identifier(text, field: "")
        } catch {
            throw ProtocolError(error.code, path: (codingPath + [key]).dottedPath, error.reason)
        }
    }

    /// A wire timestamp, parsed directly.
    func decodeTimestamp(forKey key: Key) throws -> Date {
        let text = try decode(String.self, forKey: key)
        guard let date = Timestamp.parse(text) else {
            throw ProtocolError(
                .invalidValue, path: (codingPath + [key]).dottedPath,
                "\(Identifier.describe(text)) is not an ISO 8601 timestamp such as 2026-11-27T03:05:06.123Z")
        }
        return date
    }

    /// A non-negative 64-bit counter (`seq`, `mono`).
    func decodeCounter(forKey key: Key) throws -> UInt64 {
        let value = try decode(Int64.self, forKey: key)
        guard value >= 0 else {
            throw ProtocolError(.invalidValue, path: (codingPath + [key]).dottedPath, "\(value) must not be negative")
        }
        return UInt64(value)
    }

    func decodeUUIDIfPresent(forKey key: Key) throws -> UUID? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        return try decodeUUID(forKey: key)
    }
}

extension KeyedDecodingContainer {
    /// A JSON object of values keyed by free strings (`levelSeconds`, `configVersions`), read
    /// in key order. `JSONDecoder` reads a dictionary's entries in its hash order, which changes
    /// from one process (even one dictionary) to the next, so with two bad entries the error a
    /// sender got would change too; in key order the first bad entry is always the one named.
    func decodeMap<Value: Decodable>(of type: Value.Type, forKey key: Key) throws -> [String: Value] {
        let entries = try nestedContainer(keyedBy: MapKey.self, forKey: key)
        var map: [String: Value] = [:]
        for entry in entries.allKeys.sorted(by: { $0.stringValue < $1.stringValue }) {
            map[entry.stringValue] = try entries.decode(Value.self, forKey: entry)
        }
        return map
    }
}

/// Any key of a JSON object.
private struct MapKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}
