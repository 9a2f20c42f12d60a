import Foundation
import Testing
@testable import SpectraProtocol

/// Malformed and hostile bytes: each must be refused with its own typed error, never a trap.
@Suite("Hostile input")
struct HostileInputTests {
    /// A valid session.started envelope as a mutable JSON object.
    static func validObject() throws -> [String: Any] {
        let data = Samples.envelope(.event(Samples.events[0].1)).encoded()
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }

    static func mutated(_ change: (inout [String: Any]) -> Void) throws -> Data {
        var object = try validObject()
        change(&object)
        return try JSONSerialization.data(withJSONObject: object)
    }

    static func body(_ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
        { object in
            var body = object["body"] as! [String: Any]
            change(&body)
            object["body"] = body
        }
    }

    struct Case: CustomTestStringConvertible, Sendable {
        let name: String
        let bytes: @Sendable () throws -> Data
        let code: ProtocolError.Code
        var testDescription: String { name }
    }

    static let envelopeCases: [Case] = [
        Case(name: "empty payload", bytes: { Data() }, code: .malformedJSON),
        Case(name: "truncated JSON", bytes: { Samples.envelope(.event(Samples.events[0].1)).encoded().prefix(40) }, code: .malformedJSON),
        Case(name: "trailing garbage", bytes: { Samples.envelope(.event(Samples.events[0].1)).encoded() + Data("}x".utf8) }, code: .malformedJSON),
        Case(name: "invalid UTF-8", bytes: { Data([0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]) }, code: .malformedJSON),
        Case(name: "top-level array", bytes: { Data("[1,2,3]".utf8) }, code: .wrongType),
        Case(name: "top-level string", bytes: { Data("\"event\"".utf8) }, code: .wrongType),
        Case(name: "oversize payload", bytes: { Data(repeating: 0x20, count: WireFormat.maxPayloadBytes + 1) }, code: .oversize),
        Case(name: "version 2", bytes: { try mutated { $0["v"] = 2 } }, code: .unsupportedVersion),
        Case(name: "version as string", bytes: { try mutated { $0["v"] = "1" } }, code: .wrongType),
        Case(name: "unknown kind", bytes: { try mutated { $0["kind"] = "command" } }, code: .unknownKind),
        Case(name: "unknown event type", bytes: { try mutated { $0["type"] = "session.exploded" } }, code: .unknownEventType),
        Case(name: "missing type on an event", bytes: { try mutated { $0["type"] = nil } }, code: .missingField),
        Case(name: "gateway id with +", bytes: { try mutated { $0["gw"] = "gw+1" } }, code: .invalidIdentifier),
        Case(name: "gateway id with #", bytes: { try mutated { $0["gw"] = "#" } }, code: .invalidIdentifier),
        Case(name: "gateway id with /", bytes: { try mutated { $0["gw"] = "gw/0001/cmd" } }, code: .invalidIdentifier),
        Case(name: "gateway id with NUL", bytes: { try mutated { $0["gw"] = "gw\u{0}1" } }, code: .invalidIdentifier),
        Case(name: "overlong gateway id", bytes: { try mutated { $0["gw"] = String(repeating: "g", count: 65) } }, code: .invalidIdentifier),
        Case(name: "empty fleet", bytes: { try mutated { $0["fleet"] = "" } }, code: .invalidIdentifier),
        Case(name: "fleet as number", bytes: { try mutated { $0["fleet"] = 7 } }, code: .wrongType),
        Case(name: "seq as string", bytes: { try mutated { $0["seq"] = "1234" } }, code: .wrongType),
        Case(name: "negative seq", bytes: { try mutated { $0["seq"] = -1 } }, code: .invalidValue),
        Case(name: "epoch not a UUID", bytes: { try mutated { $0["epoch"] = "not-a-uuid" } }, code: .invalidValue),
        Case(name: "ts not a timestamp", bytes: { try mutated { $0["ts"] = "27/11/2026" } }, code: .invalidValue),
        Case(name: "synced as string", bytes: { try mutated { $0["synced"] = "yes" } }, code: .wrongType),
        Case(name: "missing body", bytes: { try mutated { $0["body"] = nil } }, code: .missingField),
        Case(name: "null body", bytes: { try mutated { $0["body"] = NSNull() } }, code: .missingField),
        Case(name: "level 4", bytes: { try mutated(body { $0["level"] = 4 }) }, code: .invalidValue),
        Case(name: "level as float", bytes: { try mutated(body { $0["level"] = 2.5 }) }, code: .invalidValue),
        Case(name: "session id with wildcard", bytes: { try mutated(body { $0["sessionId"] = "s+1" }) }, code: .invalidIdentifier),
        Case(name: "aborted without reason", bytes: {
            let data = Samples.envelope(.event(.sessionCompleted(Samples.summary))).encoded()
            return Data(String(decoding: data, as: UTF8.self).replacingOccurrences(of: "session.completed", with: "session.aborted").utf8)
        }, code: .missingField),
        Case(name: "level seconds for level 4", bytes: {
            var summary = Samples.summary
            summary.levelSeconds = ["4": 10]
            return Samples.envelope(.event(.sessionCompleted(summary))).encoded()
        }, code: .invalidValue),
        Case(name: "negative duration", bytes: {
            var summary = Samples.summary
            summary.durationS = -5
            return Samples.envelope(.event(.sessionCompleted(summary))).encoded()
        }, code: .invalidValue),
        Case(name: "telemetry channels not a list", bytes: {
            let data = Samples.envelope(.telemetry(Samples.telemetry)).encoded()
            var object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
            var body = object["body"] as! [String: Any]
            body["channels"] = "all"
            object["body"] = body
            return try JSONSerialization.data(withJSONObject: object)
        }, code: .wrongType),
        Case(name: "deeply nested garbage", bytes: {
            Data((String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)).utf8)
        }, code: .malformedJSON),
    ]

    @Test("a hostile envelope is refused with the right error", arguments: envelopeCases)
    func hostileEnvelope(_ item: Case) throws {
        let bytes = try item.bytes()
        #expect {
            _ = try Envelope.decode(bytes)
        } throws: { error in
            (error as? ProtocolError)?.code == item.code
        }
    }

    @Test("decode errors say where and what")
    func errorNamesThePath() throws {
        let bytes = try Self.mutated(Self.body { $0["level"] = 9 })
        let error = #expect(throws: ProtocolError.self) { try Envelope.decode(bytes) }
        #expect(error?.path == "body.level")
        #expect(error?.description.contains("level 9 is not 1, 2 or 3") == true)
    }

    /// JSONDecoder reads a dictionary in its hash order, which is seeded anew in every process;
    /// the fuzz target caught the ingest path and the reference naming different entries (and
    /// codes) for one message. Twenty-six bad entries: hash order would name "a" one time in 26.
    @Test("with several bad entries in a map, the error names the first in key order, every time")
    func mapErrorsAreStable() throws {
        let letters = "abcdefghijklmnopqrstuvwxyz".map(String.init)
        var object = try JSONSerialization.jsonObject(
            with: Samples.envelope(.event(.sessionCompleted(Samples.summary))).encoded()) as! [String: Any]
        var body = object["body"] as! [String: Any]
        body["chargeMicroCoulombs"] = Dictionary(uniqueKeysWithValues: letters.reversed().map { ($0, "\($0)") })
        object["body"] = body
        let bad = try JSONSerialization.data(withJSONObject: object)
        for _ in 0..<20 {
            for error in [
                #expect(throws: ProtocolError.self) { try Envelope.decode(bad) },
                #expect(throws: ProtocolError.self) { try Envelope.decodeForIngest(bad) },
            ] {
                #expect(error?.code == .wrongType)
                #expect(error?.path == "body.chargeMicroCoulombs.a")
            }
        }
    }
}
