import Foundation
import Testing
@testable import SpectraProtocol

/// Every number an envelope carries has a range (docs/wire-ranges.md): outside it, both
/// decoders refuse the envelope with `outOfRange`, naming the same field; at its edges, both
/// read it.
@Suite("Wire ranges")
struct WireRangesTests {
    static let telemetry = IngestFastPathTests.base
    static let completed = #"{"v":1,"kind":"event","type":"session.completed","fleet":"demo","gw":"gw-0001","epoch":"0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01","seq":7,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","mono":5,"ts":"2026-11-27T03:05:06.123Z","synced":true,"body":{"sessionId":"s-1","durationS":905.5,"stimulatingS":900,"levelSeconds":{"1":300,"2":600},"pauses":2,"chargeMicroCoulombs":{"frontalis-l":12.5},"regimenDay":3}}"#
    static let started = #"{"v":1,"kind":"event","type":"session.started","fleet":"demo","gw":"gw-0001","epoch":"0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01","seq":7,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","mono":5,"ts":"2026-11-27T03:05:06.123Z","synced":true,"body":{"sessionId":"s-1","level":1,"profileVersion":"default-1","channels":["frontalis-l"],"regimenDay":3}}"#
    static let evicted = #"{"v":1,"kind":"event","type":"outbox.evicted","fleet":"demo","gw":"gw-0001","epoch":"0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01","seq":7,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","mono":5,"ts":"2026-11-27T03:05:06.123Z","synced":true,"body":{"class":"telemetry","count":10,"bytes":5000}}"#

    static func variant(_ base: String, _ from: String, _ to: String) -> String {
        precondition(base.contains(from), "\(from) is not in \(base)")
        return base.replacingOccurrences(of: from, with: to)
    }

    /// Out of range: (message, the field the refusal names).
    static let outside: [(String, String)] = [
        (variant(telemetry, #""seq":7"#, #""seq":9223372036854775807"#), "seq"),
        (variant(telemetry, #""seq":7"#, #""seq":1099511627776"#), "seq"),
        (variant(telemetry, #""ts":"2026-11-27T03:05:06.123Z""#, #""ts":"2023-12-31T23:59:59Z""#), "ts"),
        (variant(telemetry, #""ts":"2026-11-27T03:05:06.123Z""#, #""ts":"2100-01-01T00:00:00Z""#), "ts"),
        (variant(telemetry, #""batteryPct":76"#, #""batteryPct":100.5"#), "body.batteryPct"),
        (variant(telemetry, #""batteryPct":76"#, #""batteryPct":-1"#), "body.batteryPct"),
        (variant(telemetry, #""headbandTempC":31.5"#, #""headbandTempC":1e300"#), "body.headbandTempC"),
        (variant(telemetry, #""outboxDepth":0"#, #""outboxDepth":-1"#), "body.agent.outboxDepth"),
        (variant(telemetry, #""outboxBytes":0"#, #""outboxBytes":9223372036854775807"#), "body.agent.outboxBytes"),
        (variant(telemetry, #""rssKiB":1"#, #""rssKiB":-5"#), "body.agent.rssKiB"),
        (variant(telemetry, #""batteryPct":76"#, #""batteryPct":76,"level":4"#), "body.level"),
        (variant(telemetry, #""batteryPct":76"#, #""batteryPct":76,"vibrationRpm":-1"#), "body.vibrationRpm"),
        (variant(completed, #""pauses":2"#, #""pauses":9223372036854775807"#), "body.pauses"),
        (variant(completed, #""pauses":2"#, #""pauses":-1"#), "body.pauses"),
        (variant(completed, #""pauses":2"#, #""pauses":1001"#), "body.pauses"),
        (variant(completed, #""regimenDay":3"#, #""regimenDay":4611686018427387904"#), "body.regimenDay"),
        (variant(completed, #""regimenDay":3"#, #""regimenDay":0"#), "body.regimenDay"),
        (variant(completed, #""regimenDay":3"#, #""regimenDay":1063"#), "body.regimenDay"),  // 2024-01-01 is day 1
        (variant(completed, #"{"1":300,"2":600}"#, #"{"1":1e308,"2":600}"#), "body.levelSeconds.1"),
        (variant(completed, #"{"1":300,"2":600}"#, #"{"1":300,"2":-600}"#), "body.levelSeconds.2"),
        (variant(completed, #""stimulatingS":900"#, #""stimulatingS":901.5"#), "body.stimulatingS"),
        (variant(completed, #""durationS":905.5"#, #""durationS":1e12"#), "body.durationS"),
        (variant(completed, #"{"frontalis-l":12.5}"#, #"{"frontalis-l":1e7}"#), "body.chargeMicroCoulombs.frontalis-l"),
        (variant(started, #""regimenDay":3"#, #""regimenDay":-3"#), "body.regimenDay"),
        (variant(evicted, #""count":10"#, #""count":9223372036854775807"#), "body.count"),
        (variant(evicted, #""count":10"#, #""count":-10"#), "body.count"),
        (variant(evicted, #""count":10"#, #""count":0"#), "body.count"),
        (variant(evicted, #""bytes":5000"#, #""bytes":-1"#), "body.bytes"),
    ]

    @Test("a value outside its range is refused by both decoders as outOfRange, naming the field", arguments: outside)
    func refused(_ json: String, _ field: String) {
        let data = Data(json.utf8)
        for (name, decode) in [("reference", Envelope.decodeSkippingChannels), ("fast path", Envelope.decodeForIngest)]
            as [(String, (Data) throws(ProtocolError) -> Envelope)]
        {
            do throws(ProtocolError) {
                let envelope = try decode(data)
                Issue.record("the \(name) accepted \(envelope)")
            } catch {
                #expect(error.code == .outOfRange, "\(name): \(error)")
                #expect(error.path == field, "\(name): \(error)")
            }
        }
        IngestFastPathTests.expectSameOutcome(json)
    }

    /// At the edges of their ranges: accepted, and read alike.
    static let edges: [String] = [
        variant(telemetry, #""seq":7"#, #""seq":1099511627775"#),
        variant(telemetry, #""seq":7"#, #""seq":0"#),
        variant(telemetry, #""mono":5"#, #""mono":9223372036854775807"#),
        variant(telemetry, #""ts":"2026-11-27T03:05:06.123Z""#, #""ts":"2024-01-01T00:00:00Z""#),
        variant(telemetry, #""batteryPct":76"#, #""batteryPct":100"#),
        variant(telemetry, #""headbandTempC":31.5"#, #""headbandTempC":-40"#),
        variant(telemetry, #""outboxBytes":0"#, #""outboxBytes":1099511627776"#),
        variant(completed, #""pauses":2"#, #""pauses":1000"#),
        variant(completed, #""regimenDay":3"#, #""regimenDay":1062"#),  // 2026-11-27 is day 1062
        variant(completed, #""stimulatingS":900"#, #""stimulatingS":901"#),
        variant(completed, #"{"frontalis-l":12.5}"#, #"{"frontalis-l":1000000}"#),
        variant(evicted, #""count":10"#, #""count":10000000"#),
    ]

    @Test("values at the edges of their ranges are read, and alike by both decoders", arguments: edges)
    func accepted(_ json: String) throws {
        let data = Data(json.utf8)
        let reference = try Envelope.decodeSkippingChannels(data)
        #expect(try Envelope.decodeForIngest(data) == reference)
    }

    @Test("a synced ts more than a day ahead of the receiver is refused on arrival; an unsynced one is corrected instead")
    func futureTimestamp() throws {
        let envelope = try Envelope.decode(Data(Self.telemetry.utf8))
        let received = envelope.timestamp
        #expect(throws: Never.self) { try WireRanges.checkArrival(envelope, receivedAt: received.addingTimeInterval(-86_000)) }
        #expect {
            try WireRanges.checkArrival(envelope, receivedAt: received.addingTimeInterval(-86_401))
        } throws: { ($0 as? ProtocolError)?.code == .outOfRange && ($0 as? ProtocolError)?.path == "ts" }
        var unsynced = envelope
        unsynced.synced = false
        #expect(throws: Never.self) { try WireRanges.checkArrival(unsynced, receivedAt: received.addingTimeInterval(-864_000)) }
    }

    @Test("a retained state or status outside its ranges is refused")
    func presence() {
        let state = #"{"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","ts":"2026-11-27T03:05:06.123Z","agentVersion":"0.1.0","firmware":"2.4.1","configVersions":{"all":3},"levelLimits":{"maxLevel":3,"unlockedLevel":2,"completedSessions":9}}"#
        #expect(throws: Never.self) { try WireFormat.decode(ReportedState.self, from: Data(state.utf8)) }
        for (from, to) in [(#""maxLevel":3"#, #""maxLevel":9"#), (#"{"all":3}"#, #"{"all":-3}"#), (#""completedSessions":9"#, #""completedSessions":-1"#)] {
            let bad = state.replacingOccurrences(of: from, with: to)
            #expect { try WireFormat.decode(ReportedState.self, from: Data(bad.utf8)) } throws: { ($0 as? ProtocolError)?.code == .outOfRange }
        }
        let status = #"{"online":true,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","ts":"2026-11-27T03:05:06.123Z","agentVersion":"\#(String(repeating: "x", count: 65))"}"#
        #expect { try WireFormat.decode(GatewayStatus.self, from: Data(status.utf8)) } throws: { ($0 as? ProtocolError)?.code == .outOfRange }
    }
}
