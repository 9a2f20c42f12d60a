import Foundation
import Testing
@testable import SpectraProtocol

/// Telemetry is written by hand for speed; consumers, fixtures and signatures see the bytes,
/// so they must be exactly what `JSONEncoder` with the wire settings writes.
@Suite("Telemetry writer")
struct TelemetryWriterTests {
    static func envelope(_ telemetry: Telemetry, index: Int = 0) throws -> Envelope {
        Envelope(
            fleet: try Identifier("fleet-\(index % 4)"), gateway: try Identifier("gw-\(index)"), epoch: UUID(),
            seq: UInt64(index) &* 1_000_003, boot: UUID(), monoNanos: UInt64(index) &* 987_654_321_987,
            timestamp: Date(timeIntervalSince1970: Double(1_795_748_706_000 + index * 137) / 1000), synced: index % 7 != 0,
            message: .telemetry(telemetry))
    }

    static func telemetry(_ numbers: [Double], id: String = "frontalis-l", optionals: Bool = true) throws -> Telemetry {
        func number(_ index: Int) -> Double { numbers[index % numbers.count] }
        return Telemetry(
            sessionId: optionals ? try Identifier("s-1") : nil, level: optionals ? 3 : nil, elapsedS: optionals ? number(0) : nil,
            channels: (0..<3).map { channel in
                Telemetry.Channel(
                    id: channel == 1 ? id : "ch-\(channel)", peakMicroAmps: number(channel + 1), rmsMicroAmps: number(channel + 2),
                    impedanceOhms: number(channel + 3), complianceVolts: number(channel + 4), contact: channel % 2 == 0)
            },
            vibrationRpm: optionals ? number(5) : nil, batteryPct: number(6), headbandTempC: number(7),
            agent: .init(outboxDepth: Int(number(8).magnitude.truncatingRemainder(dividingBy: 1e9)), outboxBytes: Int.max,
                         oldestUnackedS: number(9), reconnects: 0, rssKiB: -1))
    }

    /// `data` reads back as `envelope` when every field is within the contract's ranges, and is
    /// refused as `outOfRange` when one is not (these tests write numbers of every form, most
    /// of them no gateway can produce).
    static func expectReadBack(_ data: Data, _ envelope: Envelope, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            try WireRanges.check(envelope)
            #expect(try Envelope.decode(data) == envelope, sourceLocation: sourceLocation)
        } catch {
            #expect(throws: ProtocolError.self, sourceLocation: sourceLocation) { try Envelope.decode(data) }
            #expect((try? Envelope.decode(data)) == nil, sourceLocation: sourceLocation)
            #expect(error.code == .outOfRange, sourceLocation: sourceLocation)
        }
    }

    /// Numbers whose text differs in form: integral, fractional, tiny, huge, negative, zeros.
    static let numbers: [Double] = [
        0, -0.0, 1, 60, 76.0, 31.5, 0.1, 0.4, 178.2, 1.0 / 3, 8012.25, 1e-7, 1.5e-300, 5e-324, 1e15, 1e16, 1.2345e21,
        123_456_789.125, -42.75, Double.greatestFiniteMagnitude, -Double.ulpOfOne, 9_007_199_254_740_993, 2.5e-5,
    ]

    @Test("the hand-written bytes equal JSONEncoder's, over numbers of every form and with optionals present or not")
    func sameBytes() throws {
        var index = 0
        for rotation in 0..<Self.numbers.count {
            let rotated = Array(Self.numbers[rotation...] + Self.numbers[..<rotation])
            for optionals in [true, false] {
                let envelope = try Self.envelope(try Self.telemetry(rotated, optionals: optionals), index: index)
                guard case .telemetry(let telemetry) = envelope.message else { continue }
                let written = try #require(TelemetryWriter.write(envelope, telemetry), "the writer gave up on ordinary telemetry")
                let reference = WireFormat.encode(envelope)
                #expect(written == [UInt8](reference), "\(String(decoding: written, as: UTF8.self))\n\(String(decoding: reference, as: UTF8.self))")
                #expect([UInt8](envelope.encoded()) == written)
                #expect(envelope.encodedBytes() == written)
                Self.expectReadBack(Data(written), envelope)
                index += 1
            }
        }
    }

    @Test("a channel id in any script, and no channels at all, come out the same")
    func unicodeAndEmpty() throws {
        for id in ["zygomatic-r", "frontalis-\u{e9}", "\u{5de6}\u{984e}", "a/b", "\u{1F600}", "", "del\u{7f}"] {
            let envelope = try Self.envelope(try Self.telemetry([31.5, 8200], id: id))
            #expect(envelope.encoded() == WireFormat.encode(envelope), "\(id)")
        }
        var empty = try Self.telemetry([1])
        empty.channels = []
        let envelope = try Self.envelope(empty)
        #expect(envelope.encoded() == WireFormat.encode(envelope))
        #expect(String(decoding: envelope.encoded(), as: UTF8.self).contains(#""channels":[]"#))
    }

    @Test("what needs escaping or is not a finite number is left to JSONEncoder, with the same result")
    func givesUp() throws {
        for id in ["quote\"d", "back\\slash", "new\nline", "tab\t", "nul\u{0}"] {
            let envelope = try Self.envelope(try Self.telemetry([1], id: id))
            guard case .telemetry(let telemetry) = envelope.message else { continue }
            #expect(TelemetryWriter.write(envelope, telemetry) == nil, "\(id)")
            #expect(envelope.encoded() == WireFormat.encode(envelope))
            #expect(envelope.encodedBytes() == [UInt8](WireFormat.encode(envelope)))
            Self.expectReadBack(envelope.encoded(), envelope)
        }
        for reading in [Double.nan, .infinity, -.infinity] {
            let envelope = try Self.envelope(try Self.telemetry([1, reading]))
            guard case .telemetry(let telemetry) = envelope.message else { continue }
            #expect(TelemetryWriter.write(envelope, telemetry) == nil)
            #expect(envelope.encoded() == WireFormat.encode(envelope))
        }
    }
}
