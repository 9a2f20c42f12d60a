import Aggregator
import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

/// A hand-built fleet history fed through a real mosquitto into a real aggregator, delivered the
/// hard way (duplicates, a replayed backlog, days out of order, an unsynced clock, malformed
/// payloads, a gateway reboot, an aggregator restart in the middle); every statistic the API
/// returns is checked against figures the test computes from its own record of the truth.
@Suite("Aggregator ingest and statistics", .serialized)
struct IngestScenarioTests {
    @Test("every statistic survives duplicates, replays, out-of-order days, unsynced clocks, bad input and a restart")
    func fullScenario() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("aggregator")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = folder.appendingPathComponent("aggregator.sqlite").path
        let publisher = try await broker.client("feeder")

        var truth: [SessionTruth] = []
        var a = GatewayFeed("gw-a"), b = GatewayFeed("gw-b"), c = GatewayFeed("gw-c")
        // gw-c's clock is unsynced and three days behind.
        c.synced = false
        c.clockErrorSeconds = -3 * 86_400

        // gw-a: regimen day 1 is today-9; a completed session every day but today-4, then an
        // aborted one today. Its gateway reboots after today-6 (new boot, same epoch).
        var aFirstHalf: [Envelope] = [], aSecondHalf: [Envelope] = []
        for back in stride(from: 9, through: 1, by: -1) where back != 4 {
            let session = SessionTruth(
                gateway: "gw-a", id: "a-\(back)", start: at(today.adding(-back), hour: 8),
                levelSeconds: back % 2 == 0 ? [300, 600, 0] : [900, 0, 0], pauses: back % 3 == 0 ? 1 : 0,
                trips: back == 2 ? 1 : 0, regimenDay: 10 - back)
            truth.append(session)
            let envelopes = a.session(session)
            if back >= 5 { aFirstHalf += envelopes } else { aSecondHalf += envelopes }
            if back == 6 { a.boot = UUID() }
            if back == 3 { a.skip() }  // one seq of gw-a never arrives
        }
        let aToday = SessionTruth(gateway: "gw-a", id: "a-0", start: at(today, hour: 7), levelSeconds: [100, 0, 0], abortReason: "user_stop", regimenDay: 10)
        truth.append(aToday)
        aSecondHalf += a.session(aToday)
        aSecondHalf.append(a.telemetry(at: at(today, hour: 11.9), depth: 42))

        // gw-b: in maintenance (day 1 was today-70): two loading sessions long ago, then 2
        // sessions in the week from today-14, 4 in the week from today-7 (too many), 1 today,
        // and one aborted by a safety trip.
        var bEnvelopes: [Envelope] = []
        for back in [70, 69, 13, 10, 7, 5, 3, 2, 0] {
            let session = SessionTruth(
                gateway: "gw-b", id: "b-\(back)", start: at(today.adding(-back), hour: 9), levelSeconds: [0, 300, 600],
                regimenDay: 71 - back)
            truth.append(session)
            bEnvelopes += b.session(session)
        }
        let bTrip = SessionTruth(
            gateway: "gw-b", id: "b-trip", start: at(today.adding(-6), hour: 20), levelSeconds: [0, 0, 120], trips: 1,
            abortReason: "safety_trip", regimenDay: 65)
        truth.append(bTrip)
        bEnvelopes += b.session(bTrip)

        // gw-c: one live telemetry message (which shows the aggregator its clock offset), then
        // a backlog with one seq missing for good.
        let cLive = c.telemetry(at: testNow)
        var cBacklog: [Envelope] = []
        let c1 = SessionTruth(gateway: "gw-c", id: "c-1", start: at(today.adding(-2), hour: 21), levelSeconds: [700, 0, 0], pauses: 2)
        let c2 = SessionTruth(gateway: "gw-c", id: "c-2", start: at(today.adding(-1), hour: 6), levelSeconds: [200, 0, 0], abortReason: "battery_low")
        truth += [c1, c2]
        cBacklog += c.session(c1)
        c.skip()
        cBacklog += c.session(c2)

        // Phase 1: the aggregator runs.
        var aggregator = try await RunningAggregator(broker: broker, database: database)
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-a/status", #"{"online":true,"boot":"\#(a.boot.wireString)","ts":"2026-11-27T11:00:00.000Z"}"#, retain: true)
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-b/status", #"{"online":false,"boot":"\#(b.boot.wireString)","ts":"2026-11-27T10:00:00.000Z","reason":"lost"}"#, retain: true)
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-c/status", #"{"online":true,"boot":"\#(c.boot.wireString)","ts":"2026-11-24T11:00:00.000Z"}"#, retain: true)
        for (gw, firmware) in [("gw-a", "1.4.0"), ("gw-b", "1.4.0"), ("gw-c", "1.5.0")] {
            try await publisher.publishRaw("spectra/v1/demo/gw/\(gw)/state", #"{"boot":"\#(UUID().uuidString.lowercased())","ts":"2026-11-27T11:00:00.000Z","agentVersion":"0.1.0","firmware":"\#(firmware)","configVersions":{"all":3},"levelLimits":{"maxLevel":3,"unlockedLevel":2,"completedSessions":9},"groups":["pilot"]}"#, retain: true)
        }
        for envelope in aFirstHalf { try await publisher.publish(envelope) }
        for envelope in aFirstHalf.prefix(3) { try await publisher.publish(envelope) }  // duplicates
        for envelope in bEnvelopes.reversed() { try await publisher.publish(envelope) }  // newest first
        try await publisher.publish(cLive)
        for envelope in cBacklog { try await publisher.publish(envelope, historical: true) }
        let phaseOneStarted = truth.filter { t in
            t.gateway == "gw-b" || t.gateway == "gw-c" || (t.gateway == "gw-a" && today.number - t.day.number >= 5)
        }.count
        let phaseOne = try await eventually(timeout: 20) {
            (try await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary?fleet=demo")).sessions.started == phaseOneStarted
        }
        #expect(phaseOne, "phase one should count \(phaseOneStarted) started sessions")

        // Phase 2: the aggregator restarts while gw-a (rebooted) sends the rest; afterwards a
        // backlog replays what was already counted.
        await aggregator.stop()
        for envelope in aSecondHalf { try await publisher.publish(envelope) }
        aggregator = try await RunningAggregator(broker: broker, database: database)
        for envelope in aFirstHalf.prefix(6) { try await publisher.publish(envelope, historical: true) }
        // Malformed and misaddressed input, each a different refusal reason.
        var stray = GatewayFeed("gw-a")
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-a/event", "{not json")
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-a/event", String(decoding: stray.telemetry(at: testNow).encoded(), as: UTF8.self))
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-b/event", String(decoding: stray.next(.event(.sessionPaused(PauseChange(sessionId: try Identifier("x"), reason: "user"))), at: testNow).encoded(), as: UTF8.self))
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-a/event", #"{"v":1,"kind":"event","type":"session.exploded","fleet":"demo","gw":"gw-a","epoch":"\#(a.epoch.wireString)","seq":1,"boot":"\#(a.boot.wireString)","mono":1,"ts":"2026-11-27T11:00:00.000Z","synced":true,"body":{}}"#)
        try await publisher.publishRaw("spectra/v1/demo/gw/gw-a/event", #"{"v":"one"}"#)


        let totalEnvelopes = aFirstHalf.count + aSecondHalf.count + bEnvelopes.count + 1 + cBacklog.count
        let settled = try await eventually(timeout: 20) {
            (try await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary?fleet=demo")).completeness.received == totalEnvelopes
        }
        #expect(settled, "all \(totalEnvelopes) distinct envelopes should be counted once")

        // The figures the aggregator should report, computed from the truth.
        let summary = try await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary?fleet=demo")
        let completed = truth.filter { $0.abortReason == nil }
        let aborted = truth.filter { $0.abortReason != nil }
        #expect(summary.gateways == 3)
        #expect(summary.online == 2)
        #expect(summary.activeToday == 2)  // gw-a and gw-b had sessions today
        #expect(summary.sessions.started == truth.count)
        #expect(summary.sessions.completed == completed.count)
        #expect(summary.sessions.aborted == aborted.count)
        #expect(summary.sessions.pauses == truth.map(\.pauses).reduce(0, +))
        #expect(summary.sessions.safetyTrips == truth.map(\.trips).reduce(0, +))
        #expect(summary.sessions.completionRate.map { abs($0 - Double(completed.count) / Double(truth.count)) < 1e-9 } == true)
        for level in 0..<3 {
            let minutes = truth.map { $0.levelSeconds[level] }.reduce(0, +) / 60
            #expect(abs((summary.sessions.levelMinutes["\(level + 1)"] ?? -1) - minutes) < 1e-6, "minutes at level \(level + 1)")
        }
        #expect(summary.abortReasons == ["user_stop": 1, "safety_trip": 1, "battery_low": 1])
        #expect(summary.firmware == ["1.4.0": 2, "1.5.0": 1])
        #expect(summary.backlog.messages == 42)
        #expect(summary.backlog.gatewaysWithBacklog == 1)
        // Gaps: the seq gw-a and the one gw-c skipped.
        #expect(summary.completeness.received == totalEnvelopes)
        #expect(summary.completeness.expected == totalEnvelopes + 2)
        // Adherence, worked out by hand from the calendar above:
        // gw-a loading 9 days (today-9..today-1), 8 with a completed session;
        // gw-b loading 56 days with 2, maintenance 3 weeks (2, 4 and today's 1) of which 2 adherent;
        // gw-c (no regimen day: starts at its first completed session) 2 days, 1 adherent.
        #expect(summary.adherence == Adherence(loadingDays: 9 + 56 + 2, loadingAdherentDays: 8 + 2 + 1, maintenanceWeeks: 3, maintenanceAdherentWeeks: 2))

        // Daily rows: each session on its true day, gw-c's included despite its clock.
        let from = today.adding(-14)
        let daily = try await aggregator.json([DailyStats].self, "/api/v1/fleet/daily?fleet=demo&from=\(from)&to=\(today)")
        #expect(daily.count == 15)
        for row in daily {
            let sessions = truth.filter { $0.day == row.day }
            #expect(row.sessions.started == sessions.count, "started on \(row.day)")
            #expect(row.sessions.completed == sessions.filter { $0.abortReason == nil }.count, "completed on \(row.day)")
            #expect(row.sessions.aborted == sessions.filter { $0.abortReason != nil }.count, "aborted on \(row.day)")
            #expect(row.activeGateways == Set(sessions.map(\.gateway)).count, "active gateways on \(row.day)")
            #expect(row.sessions.pauses == sessions.map(\.pauses).reduce(0, +), "pauses on \(row.day)")
        }

        // Per gateway.
        let gateways = try await aggregator.json([GatewaySummary].self, "/api/v1/gateways?fleet=demo")
        #expect(gateways.map(\.gateway) == ["gw-a", "gw-b", "gw-c"])
        let searched = try await aggregator.json([GatewaySummary].self, "/api/v1/gateways?q=W-B")
        #expect(searched.map(\.gateway) == ["gw-b"])
        let detail = try await aggregator.json(GatewayDetail.self, "/api/v1/gateways/gw-a")
        #expect(detail.gateway.sessions.started == truth.filter { $0.gateway == "gw-a" }.count)
        #expect(detail.gateway.regimenStart == today.adding(-9))
        #expect(detail.gateway.phase == "loading")
        #expect(detail.gateway.adherence == Adherence(loadingDays: 9, loadingAdherentDays: 8))
        #expect(detail.gateway.completeness.ratio.map { $0 < 1 } == true)
        #expect(detail.gateway.backlog.messages == 42)
        let sessions = try await aggregator.json([SessionRecord].self, "/api/v1/gateways/gw-a/sessions?from=\(today.adding(-30))&to=\(today)")
        #expect(sessions.count == truth.filter { $0.gateway == "gw-a" }.count)
        #expect(sessions.first?.sessionId == "a-0")
        #expect(sessions.first?.outcome == "aborted")
        #expect(sessions.first(where: { $0.sessionId == "a-2" })?.safetyTrips == 1)
        #expect(sessions.first(where: { $0.sessionId == "a-2" })?.levelChanges == 1)
        let gwC = try await aggregator.json([SessionRecord].self, "/api/v1/gateways/gw-c/sessions")
        #expect(Set(gwC.map(\.day)) == [today.adding(-2), today.adding(-1)], "gw-c's sessions land on their true days")

        // Refusals are counted by reason; duplicates by the dedupe counter.
        let metrics = String(decoding: try await aggregator.get("/metrics").1, as: UTF8.self)
        for reason in ["malformedJSON", "kind_mismatch", "topic_mismatch", "unknownEventType", "wrongType"] {
            #expect(metrics.contains(#"spectra_aggregator_parse_failures_total{reason="\#(reason)"} 1"#), "refusal \(reason) counted once")
        }
        #expect(metrics.contains("spectra_aggregator_dedupe_hits_total 6"), "the replayed backlog after the restart is recognised")
        #expect(metrics.contains("spectra_aggregator_store_retries_total 0"), "exported; a SQLite transaction is never rolled back to run again")

        // The retained summary on the broker agrees with the API.
        let watcher = try await broker.client("stats-watcher")
        let collector = Collector(watcher.messages)
        _ = try await watcher.subscribe([Subscription("spectra/v1/demo/stats/#")])
        let published = await eventually(timeout: 10) {
            collector.elements.contains { message in
                message.topic == "spectra/v1/demo/stats/summary"
                    && (try? RunningAggregator.decoder.decode(FleetSummary.self, from: Data(message.payload)))?.sessions == summary.sessions
            }
        }
        #expect(published, "stats/summary is published with the same totals")
        // A dashboard connecting later finds every gateway's summary retained.
        let gatewayTopics = Set(["gw-a", "gw-b", "gw-c"].map { "spectra/v1/demo/stats/gw/\($0)" })
        #expect(await eventually(timeout: 5) { gatewayTopics.isSubset(of: Set(collector.elements.map(\.topic))) })
        let late = try await broker.client("late-dashboard")
        let retained = Collector(late.messages)
        _ = try await late.subscribe([Subscription("spectra/v1/demo/stats/gw/+")])
        #expect(await retained.waitFor(count: 3, timeout: 5))
        #expect(Set(retained.elements.filter(\.retain).map(\.topic)) == gatewayTopics)
        await late.disconnect()

        await watcher.disconnect()
        await publisher.disconnect()
        await aggregator.stop()
        await broker.stop()
    }
}
