import Aggregator
import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

/// The dashboard, loaded in a real headless Chromium against an aggregator holding known data:
/// signed in to, navigated and signed out of; the figures the page shows are the ones the data
/// implies, and the page runs under its Content-Security-Policy without a violation.
@Suite("Dashboard in a real browser", .serialized)
struct DashboardTests {
    /// The text inside the element with `id`, e.g. `<div class="value" id="kpi-online">2</div>` gives "2".
    static func text(_ id: String, in dom: String) -> String? {
        guard let start = dom.range(of: "id=\"\(id)\"") else { return nil }
        guard let open = dom[start.upperBound...].firstIndex(of: ">") else { return nil }
        let rest = dom[dom.index(after: open)...]
        return rest.firstIndex(of: "<").map { String(rest[..<$0]) }
    }

    @Test("signed in, the page shows the fleet's figures, the gateway table, and a gateway's drill-down; signing out ends it; the CSP holds")
    func figuresInBrowser() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("dashboard")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await RunningAggregator(broker: broker, database: folder.appendingPathComponent("agg.sqlite").path)
        let publisher = try await broker.client("feeder")

        // Known data: 3 gateways, 2 online; gw-a 3 completed and 1 aborted, gw-b 1 completed
        // with a safety trip; gw-c has a backlog of 17 messages and no sessions.
        var a = GatewayFeed("gw-a"), b = GatewayFeed("gw-b"), c = GatewayFeed("gw-c")
        for (gw, online, firmware) in [("gw-a", true, "1.4.0"), ("gw-b", true, "1.5.0"), ("gw-c", false, "1.5.0")] {
            try await publisher.publishRaw("spectra/v1/demo/gw/\(gw)/status", #"{"online":\#(online),"boot":"\#(UUID().uuidString.lowercased())","ts":"2026-11-27T11:00:00.000Z"}"#, retain: true)
            try await publisher.publishRaw("spectra/v1/demo/gw/\(gw)/state", #"{"boot":"\#(UUID().uuidString.lowercased())","ts":"2026-11-27T11:00:00.000Z","agentVersion":"0.1.0","firmware":"\#(firmware)","configVersions":{},"levelLimits":{"maxLevel":2,"unlockedLevel":2,"completedSessions":3},"groups":[]}"#, retain: true)
        }
        for back in [2, 1, 0] {
            for envelope in a.session(SessionTruth(gateway: "gw-a", id: "a-\(back)", start: at(today.adding(-back), hour: 8), regimenDay: 3 - back)) {
                try await publisher.publish(envelope)
            }
        }
        for envelope in a.session(SessionTruth(gateway: "gw-a", id: "a-x", start: at(today, hour: 10), abortReason: "contact_lost_timeout", regimenDay: 3)) {
            try await publisher.publish(envelope)
        }
        for envelope in b.session(SessionTruth(gateway: "gw-b", id: "b-0", start: at(today, hour: 9), trips: 1, regimenDay: 1)) {
            try await publisher.publish(envelope)
        }
        try await publisher.publish(c.telemetry(at: at(today, hour: 11), depth: 17))
        #expect(try await eventually(timeout: 10) {
            let summary = try await aggregator.json(FleetSummary.self, "/api/v1/fleet/summary")
            return summary.sessions.started == 5 && summary.backlog.messages == 17 && summary.gateways == 3
        })

        try await aggregator.server.access.addUser("alice", role: .operator, password: "correct horse battery")
        let visit = try await HeadlessBrowser.visit(
            base: aggregator.baseURL, user: "alice", password: "correct horse battery", hashPath: "/#gw=gw-a",
            ready: "document.getElementById('drill-id').textContent === 'gw-a' && document.querySelectorAll('#drill-sessions tr[data-session]').length === 4")
        // Anonymous: the login form, nothing of the fleet.
        #expect(visit.anonymousPage.contains("id=\"login-form\"") && !visit.anonymousPage.contains("kpi-online"))
        #expect(visit.wrongPasswordError == "wrong name or password")
        #expect(visit.signedInAs == "signed in as alice (operator)")
        // Signed out: back at the form, and the same browser is refused by the API.
        #expect(visit.afterSignOutPath == "/login")
        #expect(visit.apiAfterSignOut.contains("sign in at") && !visit.apiAfterSignOut.contains("sessions"), "\(visit.apiAfterSignOut)")
        // The CSP held: the only problem reported is the one planted to prove the collection works.
        #expect(visit.problems.count == 1 && visit.problems.last?.contains("style-src") == true, "\(visit.problems)")

        let dom = visit.dashboard
        #expect(dom.contains("data-loaded=\"true\""), "the page's scripts ran and loaded the API")
        #expect(Self.text("kpi-online", in: dom) == "2")
        #expect(Self.text("kpi-gateways", in: dom) == "3")
        #expect(Self.text("kpi-active", in: dom) == "2")
        #expect(Self.text("kpi-sessions", in: dom) == "5")
        #expect(Self.text("kpi-completed", in: dom) == "4")
        #expect(Self.text("kpi-aborted", in: dom) == "1")
        #expect(Self.text("kpi-completion", in: dom) == "80.0%")
        #expect(Self.text("kpi-backlog", in: dom) == "17")
        #expect(Self.text("kpi-trips", in: dom) == "1")
        // Adherence: gw-a 3 loading days all adherent (day 1 = today-2), gw-b today (adherent).
        #expect(Self.text("kpi-adherence", in: dom) == "100.0%")
        #expect(dom.contains(#"data-key="contact_lost_timeout""#), "abort reasons list the reason")
        #expect(dom.contains(#"data-key="1.5.0""#) && dom.contains(#"data-key="1.4.0""#), "firmware versions are listed")
        for gateway in ["gw-a", "gw-b", "gw-c"] {
            #expect(dom.contains(#"<tr class="gw" data-gw="\#(gateway)""#), "the gateway table lists \(gateway)")
        }
        // The drill-down for gw-a, opened from the link.
        #expect(Self.text("drill-id", in: dom) == "gw-a")
        #expect(Self.text("drill-started", in: dom) == "4")
        #expect(Self.text("drill-firmware", in: dom) == "1.4.0")
        #expect(Self.text("drill-max-level", in: dom) == "2")
        for session in ["a-0", "a-1", "a-2", "a-x"] {
            #expect(dom.contains(#"data-session="\#(session)""#), "the drill-down lists session \(session)")
        }

        // The page carries nothing from elsewhere.
        let (_, page) = try await aggregator.get("/")
        let html = String(decoding: page, as: UTF8.self)
        #expect(!html.contains("http://") && !html.contains("https://") && !html.contains("<link"), "no external scripts, fonts or styles")

        await publisher.disconnect()
        await aggregator.stop()
        await broker.stop()
    }
}
