import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What the aggregator keeps about a wearer, and forgetting it.
@Suite("Privacy")
struct PrivacyTests {
    typealias Aggregator = BrokerCompatibilityTests.Aggregator

    @Test("forget removes one gateway's sessions and records and its retained stats, while the fleet's totals stay")
    func forgetAGateway() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("forget")
        defer { try? FileManager.default.removeItem(at: folder) }
        var aggregator = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-forget")
        #expect(await aggregator.connected())
        let sim = try await BrokerCompatibilityTests.simulate(url: broker.url, folder: folder, ["--gateways", "2", "--days", "3", "--seed", "31"])
        #expect(sim.status == 0, "\(sim.stderr.suffix(800))")
        let messages = try #require(BrokerCompatibilityTests.done(sim.stdout))[3]
        #expect(await eventually(timeout: 30) { await aggregator.received() == messages })
        try await Task.sleep(for: .seconds(2))  // a stats round publishes the retained per-gateway stats
        func sessions() async -> [String: Any]? { (await aggregator.get("/api/v1/fleet/summary?fleet=demo"))?["sessions"] as? [String: Any] }
        let before = try #require(await sessions())
        #expect((before["started"] as? Int ?? 0) > 0)
        #expect(await aggregator.stop() == 0)

        let forget = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["forget", "gw-00001", "--fleet", "demo", "--config", aggregator.config], timeout: 60)
        #expect(forget.status == 0, "\(forget.stderr)")
        #expect(forget.stdout.contains("forgot demo/gw-00001") && forget.stdout.contains("cleared the retained"), "\(forget.stdout)")

        // An old presence of it, retained again (a broker the forget could not clear): a fresh
        // subscriber gets it, and the aggregator does not bring the gateway back for it.
        let stale = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "stale"))
        try await stale.connect()
        let old = WireFormat.timestamp(Date().addingTimeInterval(-60))
        try await stale.publish(OutgoingMessage(
            topic: "spectra/v1/demo/gw/gw-00001/status",
            payload: Array(#"{"online":true,"boot":"\#(UUID().uuidString.lowercased())","ts":"\#(old)"}"#.utf8), retain: true))
        await stale.disconnect()
        aggregator = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-forget-2", settings: ["database=\(folder.path)/agg-forget.sqlite"])
        #expect(await aggregator.connected())
        try await Task.sleep(for: .seconds(1))
        let after = try #require(await sessions())
        for key in ["started", "completed", "aborted"] { #expect(after[key] as? Int == before[key] as? Int, "\(key): \(before) then \(after)") }
        let summary = await aggregator.get("/api/v1/fleet/summary?fleet=demo")
        #expect(summary?["gateways"] as? Int == 1)
        let sessionsGone = try await AggregatorAccess.get(aggregator.base + "/api/v1/gateways/gw-00001/sessions", token: aggregator.token)
        #expect(sessionsGone.status == 404)
        let gone = try await AggregatorAccess.get(aggregator.base + "/api/v1/gateways/gw-00001", token: aggregator.token)
        #expect(gone.status == 404)
        #expect(await aggregator.stop() == 0)

        // Nothing about it is retained on the broker any more (the other gateway's stats are).
        let reader = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "reader"))
        let retained = Collector(reader.messages)
        try await reader.connect()
        try await reader.subscribe([Subscription("spectra/v1/demo/stats/gw/#")])
        try await Task.sleep(for: .seconds(1))
        let topics = Set(retained.elements.filter { !$0.payload.isEmpty }.map(\.topic))
        #expect(topics == ["spectra/v1/demo/stats/gw/gw-00002"], "\(topics)")
        await reader.disconnect()
        await broker.stop()
    }

    @Test("forget says so when the gateway is unknown, and changes nothing")
    func forgetUnknown() async throws {
        let folder = try TestEnvironment.temporaryDirectory("forget-unknown")
        defer { try? FileManager.default.removeItem(at: folder) }
        let result = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"),
            ["forget", "gw-9999", "--set", "database=\(folder.path)/agg.sqlite", "--set", "mqtt.url=mqtt://127.0.0.1:1"], timeout: 60)
        #expect(result.status == 1 && result.stderr.contains("nothing removed"), "\(result)")
    }
}
