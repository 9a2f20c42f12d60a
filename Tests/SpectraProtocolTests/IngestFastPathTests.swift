import Foundation
import Testing
import Waveform
@testable import SpectraProtocol

/// The aggregator's fast path for telemetry and session events must read exactly what the
/// reference decoder reads, and hand everything it does not handle to it.
@Suite("Ingest fast path")
struct IngestFastPathTests {
    /// Both decoders' outcomes: equal envelopes, or failures with the same code.
    static func expectSameOutcome(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let data = Data(json.utf8)
        let reference = Result { () throws(ProtocolError) in try Envelope.decodeSkippingChannels(data) }
        let ingest = Result { () throws(ProtocolError) in try Envelope.decodeForIngest(data) }
        switch (reference, ingest) {
        case (.success(let a), .success(let b)):
            #expect(a == b, "\(json)", sourceLocation: sourceLocation)
        case (.failure(let a), .failure(let b)):
            #expect(a.code == b.code && a.path == b.path, "\(a) against \(b)", sourceLocation: sourceLocation)
        default:
            Issue.record("the decoders disagree on \(json): \(reference) against \(ingest)", sourceLocation: sourceLocation)
        }
    }

    @Test("telemetry the agent writes is read by the fast path, equal to the reference, over varied values")
    func agentTelemetry() throws {
        var random = SeededRandom(seed: 7)
        for index in 0..<500 {
            let inSession = index % 3 != 0
            let telemetry = Telemetry(
                sessionId: inSession ? try Identifier("s-\(index)") : nil, level: inSession ? 1 + index % 3 : nil,
                elapsedS: inSession ? Double(random.next() % 900_000) / 1000 : nil,
                channels: (0..<(index % 11)).map { channel in
                    Telemetry.Channel(
                        id: "ch-\(channel)", peakMicroAmps: Double(random.next() % 1_000_000) / 1000, rmsMicroAmps: 1.5,
                        impedanceOhms: 8200, complianceVolts: 3.4, contact: channel % 2 == 0)
                },
                vibrationRpm: index % 5 == 0 ? 8012.25 : nil, batteryPct: Double(random.next() % 10_000) / 100,
                headbandTempC: -5 + Double(random.next() % 5000) / 100,
                agent: .init(
                    outboxDepth: Int(random.next() % 1_000_000), outboxBytes: Int(random.next() % UInt64(Int32.max)),
                    oldestUnackedS: Double(random.next() % 100_000) / 7, reconnects: index, rssKiB: 30_000 + index))
            let envelope = Envelope(
                fleet: try Identifier("fleet-\(index % 4)"), gateway: try Identifier(String(format: "gw-%04d", index)),
                epoch: UUID(), seq: UInt64(index) * 1_000_003, boot: UUID(), monoNanos: random.next() >> 1,
                timestamp: Date(timeIntervalSince1970: 1_795_748_706 + Double(index) * 0.001), synced: index % 7 != 0,
                message: .telemetry(telemetry))
            let data = envelope.encoded()
            let fast = try #require(IngestFastPath.read(data), "the fast path gave up on \(String(decoding: data, as: UTF8.self))")
            #expect(fast == (try Envelope.decodeSkippingChannels(data)))
            var withoutChannels = envelope
            withoutChannels.message = .telemetry(Telemetry(
                sessionId: telemetry.sessionId, level: telemetry.level, elapsedS: telemetry.elapsedS, channels: [],
                vibrationRpm: telemetry.vibrationRpm, batteryPct: telemetry.batteryPct, headbandTempC: telemetry.headbandTempC,
                agent: telemetry.agent))
            #expect(fast == withoutChannels)
        }
    }

    static let base = #"{"v":1,"kind":"telemetry","fleet":"demo","gw":"gw-0001","epoch":"0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01","seq":7,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","mono":5,"ts":"2026-11-27T03:05:06.123Z","synced":true,"body":{"channels":[],"batteryPct":76,"headbandTempC":31.5,"agent":{"outboxDepth":0,"outboxBytes":0,"oldestUnackedS":0,"reconnects":0,"rssKiB":1}}}"#

    /// The ordinary message, with one piece replaced.
    static func variant(_ from: String, _ to: String) -> String {
        precondition(base.contains(from), "\(from) is not in the base message")
        return base.replacingOccurrences(of: from, with: to)
    }

    @Test("out-of-the-ordinary and hostile inputs come out the same as from the reference decoder", arguments: [
        base,
        " \n\t" + base + " \r\n",
        variant(#""v":1,"#, #""extra":{"a":[1,2.5e3,-0,null,true,false,"x",{"b":[]}]},"v":1,"#),
        variant(#""fleet":"demo""#, #""fleet":"dem\u006f""#),
        variant(#""fleet":"demo""#, #""fleet":"de mo""#),
        variant(#""fleet":"demo""#, #""fleet":"""#),
        variant(#""gw":"gw-0001""#, #""gw":"gw-0001","gw":"gw-0002""#),
        variant(#""v":1"#, #""v":2"#),
        variant(#""v":1"#, #""v":1.0"#),
        variant(#""v":1"#, #""v":"1""#),
        variant(#""kind":"telemetry""#, #""kind":"event""#),
        variant(#""kind":"telemetry""#, #""kind":"telemetryx""#),
        variant(#""seq":7"#, #""seq":-7"#),
        variant(#""seq":7"#, #""seq":1e3"#),
        variant(#""seq":7"#, #""seq":07"#),
        variant(#""seq":7"#, #""seq":99999999999999999999"#),
        variant(#""mono":5"#, #""mono":9223372036854775807"#),
        variant(#""epoch":"0b6c1a52"#, #""epoch":"zb6c1a52"#),
        variant(#""ts":"2026-11-27T03:05:06.123Z""#, #""ts":"2026-11-27 03:05:06""#),
        variant(#""synced":true"#, #""synced":1"#),
        variant(#""synced":true"#, #""synced":null"#),
        variant(#""channels":[]"#, #""channels":null"#),
        variant(#""channels":[],"#, ""),
        variant(#""channels":[]"#, #""channels":[{"id":"a","peakMicroAmps":1e400}]"#),
        variant(#""batteryPct":76"#, #""batteryPct":7.6e1"#),
        variant(#""batteryPct":76"#, #""batteryPct":1e400"#),
        variant(#""batteryPct":76"#, #""batteryPct":-"#),
        variant(#""batteryPct":76"#, #""batteryPct":.5"#),
        variant(#""batteryPct":76"#, #""batteryPct":5."#),
        variant(#""batteryPct":76,"#, ""),
        variant(#""batteryPct":76"#, #""batteryPct":76,"level":null,"sessionId":null,"elapsedS":null,"vibrationRpm":null"#),
        variant(#""batteryPct":76"#, #""batteryPct":76,"level":2,"sessionId":"s-1","elapsedS":12.25,"vibrationRpm":8012"#),
        variant(#""batteryPct":76"#, #""batteryPct":76,"level":2.5"#),
        variant(#""batteryPct":76"#, #""batteryPct":76,"sessionId":"bad id""#),
        variant(#""rssKiB":1"#, #""rssKiB":1.5"#),
        variant(#""rssKiB":1}"#, #""rssKiB":1,"future":[[[]]]}"#),
        variant(#""rssKiB":1"#, #""rssKiB":"1""#),
        base + "x",
        String(base.dropLast()),
        variant(#""fleet":"demo""#, "\"fleet\":\"d\u{7}mo\""),
        "[" + base + "]",
        "",
        "null",
    ])
    func sameOutcome(_ json: String) {
        Self.expectSameOutcome(json)
    }

    @Test("strings are read eight bytes at a time: a quote, escape, control or non-ASCII byte at any position of any length is seen")
    func stringsAcrossWords() {
        // Escapes and control characters make the fast path give up (the reference reads the
        // first and refuses the second); anything else it reads itself.
        let givesUp = ["\\\"", "\\n", "\\u0041", "\\\\", "\u{1}", "\u{1F}"]
        let reads = ["\u{7F}", "é", "\u{2028}", "😀", " ", "~", "-"]
        for length in 0..<34 {
            for position in 0..<max(1, length) {
                for special in givesUp + reads {
                    var characters = Array(repeating: "a", count: length)
                    if length > 0 { characters[position] = special }
                    let text = characters.joined()
                    // In a skipped channel (the string scanner alone) and in a field read.
                    for json in [
                        Self.variant(#""channels":[]"#, #""channels":[{"id":""# + text + #""}]"#),
                        Self.variant(#""batteryPct":76"#, #""batteryPct":76,"sessionId":"s"# + text + #"""#),
                    ] {
                        Self.expectSameOutcome(json)
                        let fast = IngestFastPath.read(Data(json.utf8))
                        if length > 0 && givesUp.contains(special) {
                            #expect(fast == nil, "the fast path read \(json)")
                        } else if !json.contains("sessionId") || (special == "-" || length == 0) {
                            #expect(fast != nil, "the fast path gave up on \(json)")
                        }
                    }
                }
            }
        }
        // Invalid UTF-8 beyond the first word.
        var bytes = Array(Self.variant(#""channels":[]"#, #""channels":[{"id":"abcdefghijklmnop"}]"#).utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "k"))!
        bytes[at] = 0xC3
        bytes[at + 1] = 0x28
        let data = Data(bytes)
        #expect(IngestFastPath.read(data) == nil)
        #expect(throws: ProtocolError.self) { try Envelope.decodeSkippingChannels(data) }
    }

    @Test("session events the agent writes are read by the fast path, equal to the reference; other events are left to it")
    func events() throws {
        for (type, event) in Samples.events {
            let data = Samples.envelope(.event(event)).encoded()
            let fast = IngestFastPath.read(data)
            if type.hasPrefix("session.") {
                let read = try #require(fast, "the fast path gave up on \(String(decoding: data, as: UTF8.self))")
                #expect(read == (try Envelope.decodeSkippingChannels(data)))
                #expect(read.message == .event(event))
            } else {
                #expect(fast == nil, "\(type) is not the fast path's")
            }
        }
        // Optional members absent, and every level and reason.
        let session = try Identifier("s-9")
        var variants: [Event] = [
            .sessionStarted(SessionStarted(sessionId: session, level: 1, profileVersion: "", channels: [])),
            .sessionCompleted(SessionSummary(
                sessionId: session, durationS: 0, stimulatingS: 0, levelSeconds: [:], pauses: 0, chargeMicroCoulombs: [:])),
        ]
        for reason in AbortReason.known {
            variants.append(.sessionAborted(SessionSummary(
                sessionId: session, durationS: 901.25, stimulatingS: 1e-3, levelSeconds: ["1": 0.5, "2": 12, "3": 1e6], pauses: 3,
                chargeMicroCoulombs: ["zygomatic-l": 12.345678901234567, "": 0], reason: reason, regimenPhase: .maintenance,
                regimenDay: 400)))
        }
        for (from, to) in [(1, 2), (2, 3), (3, 1)] {
            variants.append(.sessionLevelChanged(LevelChanged(sessionId: session, from: from, to: to)))
        }
        for event in variants {
            let data = Samples.envelope(.event(event)).encoded()
            let read = try #require(IngestFastPath.read(data), "the fast path gave up on \(String(decoding: data, as: UTF8.self))")
            #expect(read.message == .event(event))
        }
    }

    static let eventBase = #"{"v":1,"kind":"event","type":"session.aborted","fleet":"demo","gw":"gw-0001","epoch":"0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01","seq":7,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","mono":5,"ts":"2026-11-27T03:05:06.123Z","synced":true,"body":{"sessionId":"s-1","durationS":900,"stimulatingS":880.5,"levelSeconds":{"1":100,"2":780.5},"pauses":1,"chargeMicroCoulombs":{"ch0":12.5},"reason":"user_stop","regimenPhase":"loading","regimenDay":3}}"#

    static func eventVariant(_ from: String, _ to: String) -> String {
        precondition(eventBase.contains(from), "\(from) is not in the base event")
        return eventBase.replacingOccurrences(of: from, with: to)
    }

    @Test("out-of-the-ordinary and hostile events come out the same as from the reference decoder", arguments: [
        eventBase,
        eventVariant(#""type":"session.aborted""#, #""type":"session.completed""#),
        eventVariant(#""reason":"user_stop","#, ""),
        eventVariant(#""reason":"user_stop""#, #""reason":null"#),
        eventVariant(#""type":"session.aborted","#, ""),
        eventVariant(#""type":"session.aborted""#, #""type":7"#),
        eventVariant(#""type":"session.aborted""#, #""type":"session.exploded""#),
        eventVariant(#""type":"session.aborted""#, #""type":"safety.trip""#),
        eventVariant(#""kind":"event""#, #""kind":"telemetry""#),
        eventVariant(#""durationS":900"#, #""durationS":-1"#),
        eventVariant(#""durationS":900"#, #""durationS":-0"#),
        eventVariant(#""durationS":900"#, #""durationS":"900""#),
        eventVariant(#""durationS":900"#, #""durationS":1e400"#),
        eventVariant(#""durationS":900,"#, ""),
        eventVariant(#""levelSeconds":{"1":100,"2":780.5}"#, #""levelSeconds":{"4":1}"#),
        eventVariant(#""levelSeconds":{"1":100,"2":780.5}"#, #""levelSeconds":{"1":1,"1":2}"#),
        eventVariant(#""levelSeconds":{"1":100,"2":780.5}"#, #""levelSeconds":{}"#),
        eventVariant(#""levelSeconds":{"1":100,"2":780.5}"#, #""levelSeconds":[]"#),
        eventVariant(#""levelSeconds":{"1":100,"2":780.5}"#, #""levelSeconds":{"1":null}"#),
        eventVariant(#""chargeMicroCoulombs":{"ch0":12.5}"#, #""chargeMicroCoulombs":{"ch":1}"#),
        eventVariant(#""pauses":1"#, #""pauses":1.5"#),
        eventVariant(#""pauses":1"#, #""pauses":-2"#),
        eventVariant(#""regimenPhase":"loading""#, #""regimenPhase":"cruising""#),
        eventVariant(#""regimenPhase":"loading""#, #""regimenPhase":null"#),
        eventVariant(#""regimenDay":3"#, #""regimenDay":null"#),
        eventVariant(#""regimenDay":3"#, #""regimenDay":3.5"#),
        eventVariant(#""sessionId":"s-1""#, #""sessionId":"s 1""#),
        eventVariant(#""sessionId":"s-1","#, ""),
        eventVariant(#""pauses":1"#, #""pauses":1,"future":{"x":[1,{"y":null}]}"#),
        eventVariant(#""body":{"#, #""body":{"sessionId":"s-2","#),
        eventVariant(#""body":{"sessionId":"s-1","durationS":900,"stimulatingS":880.5,"levelSeconds":{"1":100,"2":780.5},"pauses":1,"chargeMicroCoulombs":{"ch0":12.5},"reason":"user_stop","regimenPhase":"loading","regimenDay":3}"#, #""body":null"#),
        eventVariant(#""body":{"sessionId":"s-1","durationS":900,"stimulatingS":880.5,"levelSeconds":{"1":100,"2":780.5},"pauses":1,"chargeMicroCoulombs":{"ch0":12.5},"reason":"user_stop","regimenPhase":"loading","regimenDay":3}"#, #""body":{"channels":[],"batteryPct":76,"headbandTempC":31.5,"agent":{"outboxDepth":0,"outboxBytes":0,"oldestUnackedS":0,"reconnects":0,"rssKiB":1}}"#),
        eventVariant(#""type":"session.aborted""#, #""type":"session.started""#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.started","#)
            .replacingOccurrences(of: #""durationS":900,"#, with: #""level":2.0,"profileVersion":"p","channels":["a","b"],"#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.started","#)
            .replacingOccurrences(of: #""durationS":900,"#, with: #""level":4,"profileVersion":"p","channels":["a"],"#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.started","#)
            .replacingOccurrences(of: #""durationS":900,"#, with: #""level":2,"profileVersion":"p","channels":["a",null],"#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.level_changed","#)
            .replacingOccurrences(of: #""durationS":900,"#, with: #""from":1,"to":2.5,"#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.level_changed","#)
            .replacingOccurrences(of: #""durationS":900,"#, with: #""from":1,"to":3,"#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.paused","#),
        eventVariant(#""type":"session.aborted","#, #""type":"session.resumed","#)
            .replacingOccurrences(of: #""reason":"user_stop","#, with: ""),
    ])
    func sameEventOutcome(_ json: String) {
        Self.expectSameOutcome(json)
    }

    @Test("nesting deeper than the fast path goes is left to the reference decoder")
    func deepNesting() {
        let deep = String(repeating: "[", count: 40) + String(repeating: "]", count: 40)
        Self.expectSameOutcome(Self.variant(#""v":1,"#, #""deep":\#(deep),"v":1,"#))
        #expect(IngestFastPath.read(Data(Self.variant(#""v":1,"#, #""deep":\#(deep),"v":1,"#).utf8)) == nil)
    }

    @Test("invalid UTF-8 in a string is refused as the reference refuses it")
    func invalidUTF8() {
        var bytes = Array(Self.base.utf8)
        let at = bytes.firstIndex(of: UInt8(ascii: "d"))!  // in "demo"
        bytes[at] = 0xFF
        let data = Data(bytes)
        #expect(IngestFastPath.read(data) == nil)
        #expect(throws: ProtocolError.self) { try Envelope.decodeForIngest(data) }
    }
}
