import Aggregator
import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

/// One gateway with a valid certificate, publishing only on its own topics (what the broker's
/// ACL allows), tries to stop or skew the fleet's statistics. Two aggregators, each behind its
/// own real mosquitto, get the same honest traffic; only the second also gets the hostile
/// gateway's. The second must stay up and healthy, refuse what is out of the contract, record it
/// against the hostile gateway, and report figures for the honest gateways, and for the fleet
/// less the hostile gateway's own share, identical to the first's, before and after a restart.
@Suite("A hostile gateway", .serialized)
struct HostileGatewayTests {
    /// The per-gateway message limit both aggregators run with.
    static let messagesPerHour = 400

    /// Honest traffic: two gateways' sessions over three days, telemetry, an eviction announced
    /// for a real gap.
    static func honest() -> [Envelope] {
        var a = GatewayFeed("gw-a"), b = GatewayFeed("gw-b")
        var out: [Envelope] = []
        for back in [2, 1, 0] {
            out += a.session(SessionTruth(gateway: "gw-a", id: "a-\(back)", start: at(today.adding(-back), hour: 8), pauses: 2, regimenDay: 5 - back))
            out += b.session(SessionTruth(
                gateway: "gw-b", id: "b-\(back)", start: at(today.adding(-back), hour: 9), levelSeconds: [0, 300, 600],
                abortReason: back == 1 ? "user_stop" : nil, regimenDay: 60 - back))
            out.append(a.telemetry(at: at(today.adding(-back), hour: 10), depth: back))
        }
        b.skip()
        b.skip()
        out.append(b.next(.event(.outboxEvicted(OutboxEvicted(class: "telemetry", count: 2, bytes: 600))), at: at(today, hour: 10)))
        return out
    }

    /// Hostile traffic on gw-evil's topics, as (topic leaf, payload text).
    static func hostile() -> [(leaf: String, text: String)] {
        var evil = GatewayFeed("gw-evil")
        func json(_ envelope: Envelope) -> String { String(decoding: envelope.encoded(), as: UTF8.self) }
        func event(_ event: Event, _ hour: Double = 6) -> (String, String) { ("event", json(evil.next(.event(event), at: at(today, hour: hour)))) }
        let id = try! Identifier("evil-1")
        func summary(pauses: Int = 1, levelSeconds: [String: Double] = ["1": 600], regimenDay: Int? = 3, stimulating: Double = 600) -> SessionSummary {
            SessionSummary(
                sessionId: id, durationS: 900, stimulatingS: stimulating, levelSeconds: levelSeconds, pauses: pauses,
                chargeMicroCoulombs: ["frontalis-l": 10], regimenDay: regimenDay)
        }
        var out: [(leaf: String, text: String)] = []
        // Every case the first campaign found, and more.
        out.append(event(.outboxEvicted(OutboxEvicted(class: "telemetry", count: Int(Int64.max), bytes: 1))))
        out.append(event(.outboxEvicted(OutboxEvicted(class: "telemetry", count: -5, bytes: -1))))
        out.append(event(.sessionCompleted(summary(pauses: Int(Int64.max)))))
        out.append(event(.sessionCompleted(summary(pauses: 1))))
        out.append(event(.sessionCompleted(summary(pauses: -1))))
        out.append(event(.sessionStarted(SessionStarted(sessionId: id, level: 1, profileVersion: "x", channels: [], regimenDay: 4_611_686_018_427_387_904))))
        out.append(event(.sessionCompleted(summary(levelSeconds: ["1": 1e308]))))
        out.append(event(.sessionCompleted(summary(levelSeconds: ["1": 1e308]))))
        out.append(event(.sessionCompleted(summary(levelSeconds: ["1": -600]))))
        out.append(event(.sessionCompleted(summary(stimulating: 86_400))))
        // Within range at every edge: accepted, and nothing overflows.
        out.append(event(.sessionCompleted(summary(pauses: 1000, levelSeconds: ["1": 901, "2": 901, "3": 901], regimenDay: 1062, stimulating: 901))))
        out.append(event(.outboxEvicted(OutboxEvicted(class: "telemetry", count: 10_000_000, bytes: 1 << 40))))
        // seq 1 then the largest 64-bit seq on the same epoch; then a seq at the contract's edge.
        var envelope = evil.telemetry(at: at(today, hour: 7))
        envelope.seq = UInt64(Int64.max)
        out.append(("telemetry", json(envelope)))
        envelope.seq = (1 << 40) - 1
        out.append(("telemetry", json(envelope)))
        // A synced clock a week ahead; garbage of several kinds.
        out.append(("telemetry", json(evil.telemetry(at: testNow.addingTimeInterval(7 * 86_400)))))
        out.append(("telemetry", "{\"v\":1,"))
        out.append(("event", String(repeating: "[", count: 100_000)))
        var impostor = GatewayFeed("gw-a")
        out.append(("telemetry", json(impostor.telemetry(at: testNow))))  // speaks as another gateway
        out.append(("status", #"{"online":true,"boot":"7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22","ts":"2026-11-27T03:05:06Z","agentVersion":"\#(String(repeating: "v", count: 5000))"}"#))
        // Fifty new outbox epochs: past 16 in a day they are refused.
        let (firstEpoch, firstSeq) = (evil.epoch, evil.seq)
        for _ in 0..<50 {
            evil.epoch = UUID()
            evil.seq = 0
            out.append(("telemetry", json(evil.telemetry(at: at(today, hour: 8)))))
        }
        (evil.epoch, evil.seq) = (firstEpoch, firstSeq)
        // A flood: past the hourly limit, refused.
        for index in 0..<(Self.messagesPerHour + 100) {
            out.append(("telemetry", json(evil.telemetry(at: at(today, hour: 9 + Double(index) / 3600)))))
        }
        return out
    }

    /// One aggregator behind its own broker.
    struct Side {
        let broker: MosquittoBroker
        let aggregator: RunningAggregator
        let publisher: MQTTClient
        let database: String

        static func start(_ folder: URL, _ name: String) async throws -> Side {
            let broker = try await MosquittoBroker()
            let database = folder.appendingPathComponent("\(name).sqlite").path
            let aggregator = try await RunningAggregator(broker: broker, database: database, clientID: "agg-\(name)", configure: {
                $0.gatewayMessagesPerHour = HostileGatewayTests.messagesPerHour
            })
            return Side(broker: broker, aggregator: aggregator, publisher: try await broker.client("feed-\(name)"), database: database)
        }

        /// Publishes `marker` last and waits until the aggregator holds it: everything sent
        /// before on the same connection has been taken (QoS 1 keeps one client's order).
        func settle(_ marker: Envelope) async throws -> Bool {
            try await publisher.publish(marker)
            return await eventually(timeout: 30) {
                let detail = try? await aggregator.json(GatewayDetail.self, "/api/v1/gateways/gw-marker")
                return detail?.gateway.completeness.received == Int(marker.seq)
            }
        }
    }

    @Test("it cannot stop the aggregator or change another gateway's figures, before or after a restart")
    func campaign() async throws {
        let folder = try TestEnvironment.temporaryDirectory("hostile")
        defer { try? FileManager.default.removeItem(at: folder) }
        let clean = try await Side.start(folder, "clean")
        let attacked = try await Side.start(folder, "attacked")
        var marker = GatewayFeed("gw-marker")

        for envelope in Self.honest() {
            try await clean.publisher.publish(envelope)
            try await attacked.publisher.publish(envelope)
        }
        for (leaf, text) in Self.hostile() {
            try await attacked.publisher.publishRaw("spectra/v1/demo/gw/gw-evil/\(leaf)", text)
        }
        let last = marker.telemetry(at: testNow)
        #expect(try await clean.settle(last))
        #expect(try await attacked.settle(last))

        try await Self.expectUnchanged(clean: clean.aggregator, attacked: attacked.aggregator)
        // Healthy: a stats round slowed by a busy machine may report itself for a moment.
        var health = Data()
        let healthy = try await eventually(timeout: 10) {
            let (status, body) = try await attacked.aggregator.get("/healthz")
            health = body
            return status == 200
        }
        #expect(healthy, "\(String(decoding: health, as: UTF8.self))")

        // What was refused is recorded against gw-evil, by reason, and counted on /metrics
        // without a per-gateway label.
        let evil = try await attacked.aggregator.json(GatewayDetail.self, "/api/v1/gateways/gw-evil").gateway
        let refusals = try #require(evil.refusals)
        #expect(refusals.refusing)
        #expect((refusals.byReason["outOfRange"] ?? 0) >= 10, "\(refusals.byReason)")
        #expect((refusals.byReason["malformedJSON"] ?? 0) >= 2, "\(refusals.byReason)")
        #expect(refusals.byReason["topic_mismatch"] == 1, "\(refusals.byReason)")
        #expect(refusals.byReason["epoch_limit"] == 50 + 1 - 16, "\(refusals.byReason)")  // the first epoch plus 50 new ones
        #expect((refusals.byReason["rate_limited"] ?? 0) >= 100, "\(refusals.byReason)")
        #expect(evil.completeness.ratio.map { (0...1).contains($0) } ?? true)
        #expect(evil.completeness.evicted <= evil.completeness.expected - evil.completeness.received)
        let gateways = try await attacked.aggregator.json([GatewaySummary].self, "/api/v1/gateways")
        #expect(gateways.filter { $0.refusals?.refusing == true }.map(\.gateway) == ["gw-evil"])
        let metrics = String(decoding: try await attacked.aggregator.get("/metrics").1, as: UTF8.self)
        func refused(_ reason: String) -> Double? {
            metrics.split(separator: "\n").first { $0.hasPrefix(#"spectra_aggregator_parse_failures_total{reason=""# + reason + #""}"#) }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect((refused("outOfRange") ?? 0) > 0)
        #expect((refused("rate_limited") ?? 0) > 0)
        #expect((refused("epoch_limit") ?? 0) > 0)
        // Every reason is there from the start, at 0 when none was refused: an alert on
        // increase() sees the first refusal.
        #expect(refused("badSignature") == 0 && refused("store_refused") == 0, "\(metrics)")
        #expect(!metrics.contains("gw-evil"), "no per-gateway labels")

        // Restarted on the same database, with nothing new: up, healthy, the same figures.
        await attacked.aggregator.stop()
        let again = try await RunningAggregator(broker: attacked.broker, database: attacked.database, clientID: "agg-attacked", configure: {
            $0.gatewayMessagesPerHour = HostileGatewayTests.messagesPerHour
        })
        try await Task.sleep(for: .seconds(2))  // a stats round
        #expect(try await eventually(timeout: 10) { try await again.get("/healthz").0 == 200 })
        try await Self.expectUnchanged(clean: clean.aggregator, attacked: again)

        await again.stop()
        await clean.aggregator.stop()
        await attacked.broker.stop()
        await clean.broker.stop()
    }

    /// The honest gateways' figures, and the fleet's less gw-evil's share, are the same on both.
    static func expectUnchanged(clean: RunningAggregator, attacked: RunningAggregator) async throws {
        for gateway in ["gw-a", "gw-b"] {
            let expected = try await clean.json(GatewayDetail.self, "/api/v1/gateways/\(gateway)")
            let got = try await attacked.json(GatewayDetail.self, "/api/v1/gateways/\(gateway)")
            #expect(got == expected, "\(gateway)")
        }
        let expected = try await clean.json(FleetSummary.self, "/api/v1/fleet/summary")
        let got = try await attacked.json(FleetSummary.self, "/api/v1/fleet/summary")
        let evil = try await attacked.json(GatewayDetail.self, "/api/v1/gateways/gw-evil").gateway
        #expect(got.gateways - 1 == expected.gateways)
        #expect(got.sessions.started - evil.sessions.started == expected.sessions.started)
        #expect(got.sessions.completed - evil.sessions.completed == expected.sessions.completed)
        #expect(got.sessions.aborted - evil.sessions.aborted == expected.sessions.aborted)
        #expect(got.sessions.pauses - evil.sessions.pauses == expected.sessions.pauses)
        for level in ["1", "2", "3"] {
            let difference = (got.sessions.levelMinutes[level] ?? 0) - (evil.sessions.levelMinutes[level] ?? 0)
            #expect(abs(difference - (expected.sessions.levelMinutes[level] ?? 0)) < 1e-9, "level \(level)")
        }
        #expect(got.abortReasons == expected.abortReasons)
        #expect(got.completeness.received - evil.completeness.received == expected.completeness.received)
        #expect(got.completeness.expected - evil.completeness.expected == expected.completeness.expected)
        #expect(got.completeness.evicted - evil.completeness.evicted == expected.completeness.evicted)
        #expect(got.adherence.loadingDays - evil.adherence.loadingDays == expected.adherence.loadingDays)
        #expect(got.sessions.levelMinutes.values.allSatisfy { $0.isFinite && $0 >= 0 })
        #expect(got.completeness.ratio.map { (0...1).contains($0) } ?? false)
    }
}
