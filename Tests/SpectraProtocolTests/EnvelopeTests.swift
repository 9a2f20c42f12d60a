import Foundation
import Testing
@testable import SpectraProtocol

@Suite("Envelope and message bodies")
struct EnvelopeTests {
    @Test("every event type round-trips and matches its golden fixture", arguments: Samples.events.map(\.0))
    func eventRoundTrip(name: String) throws {
        let event = try #require(Samples.events.first { $0.0 == name }?.1)
        #expect(event.type.rawValue == name)
        let envelope = Samples.envelope(.event(event))
        let bytes = envelope.encoded()
        try Fixture.expect(bytes, matches: "event-\(name).json")
        #expect(try Envelope.decode(bytes) == envelope)
        #expect(try Envelope.decode(try Fixture.data("event-\(name).json")) == envelope)
    }

    @Test("telemetry round-trips and matches its golden fixture")
    func telemetryRoundTrip() throws {
        let envelope = Samples.envelope(.telemetry(Samples.telemetry), seq: 1235)
        let bytes = envelope.encoded()
        try Fixture.expect(bytes, matches: "telemetry.json")
        #expect(try Envelope.decode(bytes) == envelope)
    }

    @Test("the envelope carries the contract's field names and values")
    func envelopeFields() throws {
        let bytes = Samples.envelope(.event(Samples.events[0].1)).encoded()
        let object = try #require(try JSONSerialization.jsonObject(with: bytes) as? [String: Any])
        #expect(object["v"] as? Int == 1)
        #expect(object["kind"] as? String == "event")
        #expect(object["type"] as? String == "session.started")
        #expect(object["gw"] as? String == "gw-0001")
        #expect(object["epoch"] as? String == "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01")
        #expect(object["seq"] as? Int == 1234)
        #expect(object["mono"] as? Int == 123_456_789_012)
        #expect(object["ts"] as? String == "2026-11-27T03:05:06.123Z")
        #expect(object["synced"] as? Bool == true)
        #expect(object["body"] is [String: Any])
    }

    @Test("unknown fields are ignored by readers")
    func unknownFieldsIgnored() throws {
        var object = try #require(
            try JSONSerialization.jsonObject(with: Samples.envelope(.event(Samples.events[1].1)).encoded()) as? [String: Any])
        object["futureField"] = ["nested": 1]
        var body = try #require(object["body"] as? [String: Any])
        body["alsoNew"] = "x"
        object["body"] = body
        let decoded = try Envelope.decode(try JSONSerialization.data(withJSONObject: object))
        #expect(decoded.message == .event(Samples.events[1].1))
    }

    @Test("UUIDs are read as Foundation reads them: either case; anything else is refused")
    func uuidText() throws {
        for _ in 0..<200 {
            let uuid = UUID()
            #expect(uuid.wireString == uuid.uuidString.lowercased())
            #expect(UUID(wireText: uuid.wireString) == uuid)
            #expect(UUID(wireText: uuid.uuidString) == uuid)
        }
        #expect(try #require(UUID(uuidString: "00000000-0000-0000-0000-000000000000")).wireString == "00000000-0000-0000-0000-000000000000")
        #expect(try #require(UUID(uuidString: "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF")).wireString == "ffffffff-ffff-ffff-ffff-ffffffffffff")
        let good = "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01"
        #expect(UUID(wireText: good) == UUID(uuidString: good))
        var refused = [
            "", "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e0", "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e011",
            "0b6c1a523f1e-4f4a-9d0e-6c3f2a1b9e01-", "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9g01", "{b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01",
            " b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01", "+b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01", "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9\u{e9}",
        ]
        // Every dash moved, and every hex digit replaced by a non-hex byte.
        for position in [8, 13, 18, 23] {
            var bytes = Array(good.utf8)
            bytes.swapAt(position, position + 1)
            refused.append(String(decoding: bytes, as: UTF8.self))
        }
        for position in good.utf8.indices.map({ good.utf8.distance(from: good.utf8.startIndex, to: $0) }) where ![8, 13, 18, 23].contains(position) {
            var bytes = Array(good.utf8)
            bytes[position] = UInt8(ascii: "x")
            refused.append(String(decoding: bytes, as: UTF8.self))
        }
        for text in refused { #expect(UUID(wireText: text) == nil, "\(text)") }
    }

    @Test("timestamps without fractional seconds are accepted")
    func timestampWithoutFraction() throws {
        #expect(WireFormat.parseTimestamp("2026-11-27T03:05:06Z") == Date(timeIntervalSince1970: 1_795_748_706))
        #expect(WireFormat.parseTimestamp("yesterday") == nil)
    }

    @Test("status, state and stop payloads round-trip and match their fixtures")
    func presenceRoundTrip() throws {
        let status = WireFormat.encode(Samples.status)
        try Fixture.expect(status, matches: "status.json")
        #expect(try WireFormat.decode(GatewayStatus.self, from: status) == Samples.status)
        let state = WireFormat.encode(Samples.state)
        try Fixture.expect(state, matches: "state.json")
        #expect(try WireFormat.decode(ReportedState.self, from: state) == Samples.state)
        let stop = WireFormat.encode(StopCommand(reason: "operator"))
        try Fixture.expect(stop, matches: "stop.json")
        #expect(StopCommand.lenient(stop).reason == "operator")
    }

    @Test("a stop command is honoured whatever its payload")
    func lenientStop() {
        #expect(StopCommand.lenient(Data()).reason == "unspecified")
        #expect(StopCommand.lenient(Data("{\"reason\":12}".utf8)).reason == "unspecified")
        let long = String(repeating: "x", count: 5000)
        #expect(StopCommand.lenient(Data("{\"reason\":\"\(long)\"}".utf8)).reason.count == StopCommand.maxReasonLength)
    }
}
