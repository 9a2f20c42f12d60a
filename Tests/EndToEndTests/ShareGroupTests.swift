import Foundation
import SpectraTesting
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Aggregator instances in a share group, and retiring one for good.
@Suite("Share groups")
struct ShareGroupTests {
    typealias Aggregator = BrokerCompatibilityTests.Aggregator

    @Test("a stopped instance keeps taking its share until retired; retiring ingests what its session held and stops its share")
    func retiringAnInstance() async throws {
        let broker = try await MosquittoBroker(extraConfig: "max_queued_messages 0\n")
        let folder = try TestEnvironment.temporaryDirectory("share-group")
        defer { try? FileManager.default.removeItem(at: folder) }
        let a = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-a", settings: ["shareGroup=aggregators"])
        let b = try await Aggregator(url: broker.url, folder: folder, clientID: "agg-b", settings: ["shareGroup=aggregators"])
        let aUp = await a.connected()
        let bUp = await b.connected()
        let bothUp = aUp && bUp
        #expect(bothUp)
        // B stops: its persistent session stays in the group and keeps being given a share.
        #expect(await b.stop() == 0)

        let first = try await BrokerCompatibilityTests.simulate(url: broker.url, folder: folder, ["--gateways", "3", "--days", "1", "--seed", "21"])
        #expect(first.status == 0, "\(first.stderr.suffix(1000))")
        let made = try #require(BrokerCompatibilityTests.done(first.stdout))[3]
        try await Task.sleep(for: .seconds(3))
        let seenByA = await a.received() ?? 0
        #expect(seenByA > 0 && seenByA < made, "A has only its share (\(seenByA) of \(made))")

        // Retire B (with B's configuration): what its session held goes into B's database.
        let retired = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["retire", "--config", b.config, "--set", "shareGroup=aggregators"], timeout: 90)
        #expect(retired.status == 0, "\(retired.stderr.suffix(1500))")
        let envelopes = retired.stdout.split(separator: ",").compactMap { part -> Int? in
            part.contains("envelopes written") ? part.split(separator: " ").compactMap { Int($0) }.first : nil
        }.first
        #expect(envelopes.map { seenByA + $0 } == made, "nothing stranded: \(seenByA) + \(String(describing: envelopes)) of \(made): \(retired.stdout)")

        // From now on A gets everything.
        let second = try await BrokerCompatibilityTests.simulate(
            url: broker.url, folder: folder, ["--gateways", "3", "--first-gateway", "4", "--days", "1", "--seed", "22"])
        #expect(second.status == 0, "\(second.stderr.suffix(1000))")
        let madeAgain = try #require(BrokerCompatibilityTests.done(second.stdout))[3]
        let all = await eventually(timeout: 30) { await a.received() == seenByA + madeAgain }
        let seen = await a.received()
        #expect(all, "\(String(describing: seen)) of \(seenByA + madeAgain)")
        #expect(await a.stop() == 0)
        await broker.stop()
    }
}
