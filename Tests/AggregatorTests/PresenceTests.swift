import Aggregator
import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Synchronization
import Testing

/// Which gateways the summary calls online, and which of those have gone silent: online by
/// their last word, which no Will corrected (mosquitto sends none when it stops itself).
@Suite("presence")
struct PresenceTests {
    static let fleet = try! Identifier("demo")

    static func status(_ gateway: String, online: Bool = true, at time: Date, retained: Bool = false) -> IngestRecord {
        .status(
            fleet: fleet, gateway: try! Identifier(gateway), GatewayStatus(online: online, boot: UUID(), ts: time, agentVersion: "0.1.0"),
            receivedAt: time, retained: retained)
    }

    @Test(
        "an online gateway unheard for longer than the window counts as silent; the status the broker kept is no sign of life",
        arguments: StoreKind.allCases)
    func silentGateways(_ kind: StoreKind) async throws {
        let place = try await StoreUnderTest(kind)
        let store = try await place.open(silentAfterSeconds: 600)
        let t0 = testNow
        func summary(at seconds: Double) async throws -> (online: Int, silent: Int) {
            let summary = try await store.summary(fleet: "demo", now: t0.addingTimeInterval(seconds))
            return (summary.online, summary.silent)
        }
        var chatty = GatewayFeed("gw-chatty")
        _ = try await store.apply([
            Self.status("gw-quiet", at: t0), Self.status("gw-chatty", at: t0), Self.status("gw-gone", online: false, at: t0),
        ])
        #expect(try await summary(at: 300) == (2, 0), "every online gateway was heard from within 600 s")

        // Telemetry keeps one alive; the other says nothing for 700 s.
        let time = t0.addingTimeInterval(650)
        _ = try await store.apply([.envelope(chatty.telemetry(at: time), receivedAt: time, historical: false)])
        #expect(try await summary(at: 700) == (2, 1), "gw-quiet is online by its last word, silent for 700 s")
        #expect(try await summary(at: 1_260) == (2, 2), "and gw-chatty too, 610 s after its last telemetry")

        // The aggregator restarts and the broker sends the kept statuses again: no sign of life.
        _ = try await store.apply([Self.status("gw-quiet", at: t0.addingTimeInterval(1_300), retained: true)])
        #expect(try await summary(at: 1_300) == (2, 2))
        let quiet = try await store.gateways(fleet: "demo", search: "gw-quiet", now: t0.addingTimeInterval(1_300))
        #expect(quiet.first?.lastSeen == t0, "last seen stays at its last live message")

        // A fresh birth is: the gateway came back.
        _ = try await store.apply([Self.status("gw-quiet", at: t0.addingTimeInterval(1_400))])
        #expect(try await summary(at: 1_400) == (2, 1))

        // A gateway first known from a kept status has nothing else to go on: the window runs from then.
        _ = try await store.apply([Self.status("gw-new", at: t0.addingTimeInterval(1_400), retained: true)])
        #expect(try await summary(at: 1_500) == (3, 1))
        #expect(try await summary(at: 2_100) == (3, 3))
    }

    @Test("through a real broker: a restarted aggregator gets the kept birth again and still counts its gateway silent")
    func silentAcrossRestart() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("presence")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = folder.appendingPathComponent("agg.sqlite").path
        let clock = Mutex(testNow)
        let now: @Sendable () -> Date = { clock.withLock { $0 } }
        let gateway = try await broker.client("gw-0001")
        let statusTopic = Topic.status(fleet: Self.fleet, gateway: try Identifier("gw-0001")).path
        func birth() async throws {
            let status = GatewayStatus(online: true, boot: UUID(), ts: now(), agentVersion: "0.1.0")
            try await gateway.publish(OutgoingMessage(topic: statusTopic, payload: [UInt8](WireFormat.encode(status)), retain: true))
        }

        var aggregator = try await RunningAggregator(broker: broker, database: database, now: now)
        try await birth()
        #expect(await eventually(timeout: 10) { (try? await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary?fleet=demo"))?.online == 1 })
        await aggregator.stop()

        // Eleven minutes later the gateway has said nothing; the aggregator starts again and
        // its subscription brings the kept birth (retained) once more.
        clock.withLock { $0 = $0.addingTimeInterval(660) }
        aggregator = try await RunningAggregator(broker: broker, database: database, now: now)
        let applied = await eventually(timeout: 10) {
            let (_, metrics) = (try? await aggregator.get("/metrics")) ?? (0, Data())
            return String(decoding: metrics, as: UTF8.self).split(separator: "\n").contains { $0.hasPrefix("spectra_aggregator_presence_total") && $0.hasSuffix(" 1") }
        }
        #expect(applied, "the kept birth arrives again and is applied")
        let summary = try await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary?fleet=demo")
        #expect(summary.online == 1)
        #expect(summary.silent == 1, "the kept birth is not a sign of life")
        let gauge = await eventually(timeout: 5) {
            let (_, metrics) = (try? await aggregator.get("/metrics")) ?? (0, Data())
            return String(decoding: metrics, as: UTF8.self).contains(#"spectra_aggregator_gateways{fleet="demo",state="silent"} 1"#)
        }
        #expect(gauge, "/metrics counts it too")

        // The gateway comes back: a new birth, live.
        try await birth()
        #expect(await eventually(timeout: 10) { (try? await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary?fleet=demo"))?.silent == 0 })
        await aggregator.stop()
        await gateway.disconnect()
    }
}
