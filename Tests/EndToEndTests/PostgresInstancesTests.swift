import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Several aggregators on one PostgreSQL database, in one share group: one view, exact figures,
/// whichever instance dies.
@Suite("Aggregators on PostgreSQL")
struct PostgresInstancesTests {
    typealias Aggregator = BrokerCompatibilityTests.Aggregator

    static func summary(_ aggregator: Aggregator) async -> (received: Int, expected: Int, started: Int, completed: Int, aborted: Int)? {
        guard let summary = await aggregator.get("/api/v1/fleet/summary?fleet=demo"),
            let completeness = summary["completeness"] as? [String: Any], let sessions = summary["sessions"] as? [String: Any]
        else { return nil }
        return (
            completeness["received"] as? Int ?? -1, completeness["expected"] as? Int ?? -1, sessions["started"] as? Int ?? -1,
            sessions["completed"] as? Int ?? -1, sessions["aborted"] as? Int ?? -1
        )
    }

    @Test("two instances on one database, one SIGKILLed while it drains its share and restarted: both dashboards show the fleet's own counts, exactly; when the retained-stats publisher dies, the other takes over")
    func twoInstancesOneView() async throws {
        let postgres = try await PostgresServer()
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("pg-instances")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = "database=\(postgres.url)?sslmode=disable"
        let settings = ["shareGroup=aggregators", database]

        let a = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-a", settings: settings)
        defer { a.process.send(SIGKILL) }
        var b = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-b", settings: settings)
        let aUp = await a.connected(), bUp = await b.connected()
        #expect(aUp && bUp, "\(a.process.standardError.suffix(1500))\(b.process.standardError.suffix(1500))")
        // B goes away; its persistent session stays in the group and the broker queues its share.
        #expect(await b.stop() == 0)

        let sim = try await BrokerCompatibilityTests.simulate(
            url: broker.url, folder: folder, ["--gateways", "12", "--days", "4", "--seed", "37"])
        #expect(sim.status == 0, "\(sim.stderr.suffix(1000))")
        let figures = try #require(BrokerCompatibilityTests.done(sim.stdout), "\(sim.stdout.suffix(500))")
        let (started, completed, aborted, made) = (figures[0], figures[1], figures[2], figures[3])
        #expect(figures[4] == made, "the simulator delivered every message: \(figures)")

        // A ingests its share live.
        let aShare = await eventually(timeout: 60) {
            guard let now = await Self.summary(a) else { return false }
            try? await Task.sleep(for: .seconds(1))
            return await Self.summary(a)?.received == now.received && now.received > 0
        }
        let before = await Self.summary(a)?.received ?? 0
        #expect(aShare && before < made, "A has its share only (\(before) of \(made))")

        // B comes back to its queued share and is killed part-way through it.
        b = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-b", settings: settings)
        defer { b.process.send(SIGKILL) }
        let target = before + (made - before) / 4
        var atKill = before
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let now = await Self.summary(a)?.received, now >= target {
                atKill = now
                break
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        b.process.send(SIGKILL)
        _ = await b.process.wait(timeout: 10)
        #expect(atKill > before, "B was ingesting when it was killed (\(before) -> \(atKill) of \(made))")

        // Restarted: what B's session had not acknowledged comes again; nothing counts twice.
        b = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-b", settings: settings)
        let all = await eventually(timeout: 120) { await Self.summary(b)?.received == made }
        try await Task.sleep(for: .seconds(2))
        let viewA = await Self.summary(a), viewB = await Self.summary(b)
        #expect(all, "every message arrives: \(String(describing: viewB)) of \(made)")
        #expect(viewA?.received == made && viewA?.expected == made, "no loss, no double count: \(String(describing: viewA))")
        #expect(viewA?.started == started && viewA?.completed == completed && viewA?.aborted == aborted,
                "the fleet's own counts \(figures): \(String(describing: viewA))")
        #expect(viewB.map { "\($0)" } == viewA.map { "\($0)" }, "both dashboards show the same figures")

        // One instance publishes the retained summary, and it says the same.
        let witness = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "witness"))
        try await witness.connect()
        let retained = Collector(witness.messages)
        try await witness.subscribe([Subscription("spectra/v1/demo/stats/summary")])
        let published = await eventually(timeout: 20) {
            guard let last = retained.elements.last, let json = try? JSONSerialization.jsonObject(with: Data(last.payload)) as? [String: Any]
            else { return false }
            return (json["sessions"] as? [String: Any])?["started"] as? Int == started
        }
        #expect(published, "the retained stats/summary counts \(started) sessions started")
        await witness.disconnect()
        let lease = "this instance publishes the retained stats"
        let holders = [a, b].filter { $0.process.standardError.contains(lease) }
        #expect(holders.count == 1, "one instance holds the publishing lease")

        // The holder dies: the other takes the lease at its next round.
        let (holder, other) = holders.first?.process.pid == a.process.pid ? (a, b) : (b, a)
        holder.process.send(SIGKILL)
        _ = await holder.process.wait(timeout: 10)
        let takenOver = await eventually(timeout: 30) { other.process.standardError.contains(lease) }
        #expect(takenOver, "the survivor publishes the retained stats: \(other.process.standardError.suffix(1000))")

        let otherStatus = await other.stop()
        #expect(otherStatus == 0, "\(other.process.standardError.suffix(1500))")
        await broker.stop()
    }
}
