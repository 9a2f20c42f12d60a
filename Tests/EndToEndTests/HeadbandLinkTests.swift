import Foundation
import HeadbandLink
import Logging
import SpectraProtocol
import SpectraTesting
import Testing

/// The agent and a headband on the other end of a real byte stream: `spectra-headband-emu` on
/// a pseudo-terminal, the agent pointed at it with `headband.port`.
@Suite("headband link", .serialized)
struct HeadbandLinkTests {
    /// The emulator, serving at `link` once it printed its path.
    struct Emulator {
        let process: ChildProcess
        let link: String

        init(link: String, _ arguments: [String] = []) async throws {
            self.link = link
            process = try ChildProcess(TestEnvironment.product("spectra-headband-emu"), ["--link", link] + arguments)
            guard await process.waitForLine(timeout: 10, where: { $0.hasPrefix("/dev/pts/") }) != nil else {
                throw TestEnvironmentError("the emulator did not start: \(process.standardError)")
            }
        }

        /// Pulling the plug: the emulator goes, and its pseudo-terminal with it.
        func unplug() async {
            process.send(SIGKILL)
            _ = await process.wait(timeout: 10)
        }
    }

    /// An agent on the emulator's link. `replyTimeoutMs`: the tests that run long sessions
    /// give the link more time than a gateway does, as the whole suite shares 2 cores with them.
    static func harness(link: String, timeScale: Int, replyTimeoutMs: Int = 250, profile: String? = nil) async throws -> AgentTests.Harness {
        try await AgentTests.Harness(
            timeScale: timeScale, extra: "headband:\n  port: \(link)\n  replyTimeoutMs: \(replyTimeoutMs)", profile: profile)
    }

    /// The default profile with 120-second sessions: a whole session over the link is every
    /// segment's exchange, and the suite shares its 2 cores.
    static func shortSessions(in folder: URL) throws -> String {
        let path = folder.appendingPathComponent("short.yaml").path
        try String(contentsOfFile: "\(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml", encoding: .utf8)
            .replacingOccurrences(of: "sessionSeconds: 900", with: "sessionSeconds: 120")
            .write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `spectra-agent status` as a dictionary.
    static func status(_ harness: AgentTests.Harness) async throws -> [String: Any] {
        let (code, stdout, stderr) = try await harness.control(["status", "--json"])
        guard code == 0, let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any] else {
            throw TestEnvironmentError("status failed: \(stderr) \(stdout)")
        }
        return object
    }

    static func aborted(_ harness: AgentTests.Harness) -> SessionSummary? {
        for event in harness.events() { if case .sessionAborted(let summary) = event { return summary } }
        return nil
    }

    @Test("a session over the emulator's pseudo-terminal reaches the broker as one with the in-process headband does")
    func sessionOverTheLink() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-session")
        defer { try? FileManager.default.removeItem(at: folder) }
        // The longest watchdog: under the whole suite's load the agent can be starved for a
        // second, and this test is about the session, not the watchdog (silentGateway is).
        let emulator = try await Emulator(link: "\(folder.path)/headband", ["--watchdog-ms", "10000"])
        let profile = try Self.shortSessions(in: folder)
        let linked = try await Self.harness(link: emulator.link, timeScale: 300, replyTimeoutMs: 2000, profile: profile)
        try await linked.startAgent()
        #expect(await eventually(timeout: 10) { ((try? await Self.status(linked))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        #expect(try await linked.control(["session", "start", "--level", "1"]).0 == 0)
        #expect(await emulator.process.waitForLine(timeout: 10) { $0 == "session began" } != nil)
        #expect(
            await eventually(timeout: 60) { linked.eventTypes().contains("session.completed") },
            "\(linked.eventTypes()), aborted: \(String(describing: Self.aborted(linked)?.reason))")

        let local = try await AgentTests.Harness(timeScale: 300, profile: profile)
        try await local.startAgent()
        #expect(try await local.control(["session", "start", "--level", "1"]).0 == 0)
        #expect(await eventually(timeout: 30) { local.eventTypes().contains("session.completed") })
        // The same events, in the same order, with the same figures.
        #expect(linked.eventTypes() == local.eventTypes(), "over the link: \(linked.eventTypes()); in process: \(local.eventTypes())")
        func completed(_ harness: AgentTests.Harness) -> SessionSummary? {
            for event in harness.events() { if case .sessionCompleted(let summary) = event { return summary } }
            return nil
        }
        let overLink = try #require(completed(linked)), inProcess = try #require(completed(local))
        #expect(abs(overLink.stimulatingS - inProcess.stimulatingS) < 1, "\(overLink.stimulatingS) vs \(inProcess.stimulatingS)")
        #expect(overLink.levelSeconds.keys == inProcess.levelSeconds.keys)
        let headband = try #require(try await Self.status(linked)["headband"] as? [String: Any])
        #expect(headband["model"] as? String == "Spectra Sculpt (emulated)" && (headband["framesSent"] as? Int ?? 0) > 1000, "\(headband)")
        #expect(overLink.stimulatingS > 119, "the whole 120 s: \(overLink.stimulatingS)")
        #expect(headband["corrupted"] as? Int == 0 && headband["linkLosses"] as? Int == 0, "\(headband)")
        await emulator.unplug()
    }

    @Test("pulling the plug mid-session ends it as headband_lost; the agent reconnects when the headband returns, and a session starts again")
    func unplugged() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-unplug")
        defer { try? FileManager.default.removeItem(at: folder) }
        let link = "\(folder.path)/headband"
        var emulator = try await Emulator(link: link, ["--watchdog-ms", "10000"])
        let harness = try await Self.harness(link: link, timeScale: 10, replyTimeoutMs: 2000)
        try await harness.startAgent()
        #expect(await eventually(timeout: 10) { ((try? await Self.status(harness))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        #expect(try await harness.control(["session", "start"]).0 == 0)
        try await Task.sleep(for: .seconds(1))
        let pulled = Date()
        await emulator.unplug()
        #expect(await eventually(timeout: 10) { Self.aborted(harness) != nil }, "\(harness.eventTypes())")
        #expect(Self.aborted(harness)?.reason == .headbandLost)
        #expect(Date().timeIntervalSince(pulled) < 5)
        // No headband: a start is refused, saying why.
        let refused = try await harness.control(["session", "start"])
        #expect(refused.0 != 0 && (refused.1 + refused.2).contains("headband is not connected"), "\(refused)")

        emulator = try await Emulator(link: link, ["--watchdog-ms", "10000"])
        #expect(await eventually(timeout: 10) { ((try? await Self.status(harness))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        let status = try await Self.status(harness)
        #expect((status["headband"] as? [String: Any])?["linkLosses"] as? Int == 1, "\(status)")
        #expect(try await harness.control(["session", "start"]).0 == 0)
        #expect(await eventually(timeout: 10) { harness.eventTypes().filter { $0 == "session.started" }.count == 2 })
        _ = try await harness.control(["session", "stop"])
        await emulator.unplug()
    }

    @Test("a headband with fewer channels than the calibration profile drives is refused at start, saying so")
    func tooFewChannels() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-channels")
        defer { try? FileManager.default.removeItem(at: folder) }
        let emulator = try await Emulator(link: "\(folder.path)/headband", ["--channels", "2"])
        let harness = try await Self.harness(link: emulator.link, timeScale: 10)
        try await harness.startAgent()
        #expect(await eventually(timeout: 10) { ((try? await Self.status(harness))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        let refused = try await harness.control(["session", "start"])
        #expect(refused.0 != 0 && (refused.1 + refused.2).contains("has 2 channels"), "\(refused)")
        #expect(!harness.eventTypes().contains("session.started"))
        await emulator.unplug()
    }

    @Test("damaged bytes from the headband are detected, the requests sent again at once and counted, and the session completes")
    func corruption() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-corrupt")
        defer { try? FileManager.default.removeItem(at: folder) }
        let emulator = try await Emulator(link: "\(folder.path)/headband", ["--corrupt-every", "25", "--watchdog-ms", "10000"])
        let harness = try await Self.harness(link: emulator.link, timeScale: 300, replyTimeoutMs: 2000, profile: try Self.shortSessions(in: folder))
        try await harness.startAgent()
        #expect(await eventually(timeout: 10) { ((try? await Self.status(harness))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        #expect(try await harness.control(["session", "start", "--level", "1"]).0 == 0)
        #expect(await eventually(timeout: 90) { harness.eventTypes().contains("session.completed") }, "\(harness.eventTypes())")
        let headband = try #require(try await Self.status(harness)["headband"] as? [String: Any])
        let corrupted = headband["corrupted"] as? Int ?? 0, retransmits = headband["retransmits"] as? Int ?? 0
        #expect(corrupted > 20 && retransmits >= corrupted, "\(headband)")
        #expect(headband["linkLosses"] as? Int == 0, "\(headband)")
        await emulator.unplug()
    }

    @Test("a headband that goes silent ends the session as headband_lost within two seconds")
    func silentHeadband() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-silent")
        defer { try? FileManager.default.removeItem(at: folder) }
        let emulator = try await Emulator(link: "\(folder.path)/headband", ["--silent-after", "20", "--watchdog-ms", "10000"])
        let harness = try await Self.harness(link: emulator.link, timeScale: 10, replyTimeoutMs: 500)
        try await harness.startAgent()
        #expect(await eventually(timeout: 10) { ((try? await Self.status(harness))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        #expect(try await harness.control(["session", "start"]).0 == 0)
        // 20 s of stimulation at 10x is 2 s, plus the ramp; then 4 tries of 500 ms.
        #expect(await eventually(timeout: 10) { Self.aborted(harness) != nil }, "\(harness.eventTypes())")
        let summary = try #require(Self.aborted(harness))
        #expect(summary.reason == .headbandLost)
        #expect(summary.stimulatingS >= 19 && summary.stimulatingS < 20 + 2 * 10, "stopped within 2 s (20 session-seconds) of the silence: \(summary.stimulatingS)")
        await emulator.unplug()
    }

    @Test("a gateway that goes silent (the agent stopped) makes the headband stop output within its watchdog; the session is reported aborted when the agent resumes")
    func silentGateway() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-watchdog")
        defer { try? FileManager.default.removeItem(at: folder) }
        let emulator = try await Emulator(link: "\(folder.path)/headband", ["--watchdog-ms", "500"])
        let harness = try await Self.harness(link: emulator.link, timeScale: 10, replyTimeoutMs: 2000)
        try await harness.startAgent()
        #expect(await eventually(timeout: 10) { ((try? await Self.status(harness))?["headband"] as? [String: Any])?["state"] as? String == "up" })
        #expect(try await harness.control(["session", "start"]).0 == 0)
        try await Task.sleep(for: .seconds(1))
        let agent = try #require(harness.agent.withLock { $0 })
        let stopped = Date()
        agent.send(SIGSTOP)
        let line = await emulator.process.waitForLine(timeout: 5) { $0.hasPrefix("watchdog:") }
        let noticed = Date().timeIntervalSince(stopped)
        agent.send(SIGCONT)
        #expect(line != nil, "\(emulator.process.lines)")
        #expect(noticed < 1.5, "output stopped \(noticed) s after the gateway went silent (watchdog 500 ms)")
        #expect(await eventually(timeout: 10) { Self.aborted(harness) != nil }, "\(harness.eventTypes())")
        #expect(Self.aborted(harness)?.reason == .headbandLost)
        await emulator.unplug()
    }

    @Test("firmware goes over the link in checked chunks, through damaged bytes; a transfer cut by a power loss leaves the old version running")
    func firmwareOverTheLink() async throws {
        let folder = try TestEnvironment.temporaryDirectory("link-firmware")
        defer { try? FileManager.default.removeItem(at: folder) }
        var logger = Logger(label: "test.link")
        logger.logLevel = .critical
        let image = (0..<60_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

        var emulator = try await Emulator(link: "\(folder.path)/headband", ["--corrupt-every", "9"])
        var band = LinkedHeadband(path: emulator.link, replyTimeoutS: 2, logger: logger)
        _ = await band.status(channel: 0)
        #expect(band.connected && band.firmware == "2.4.0")
        #expect(await band.installFirmware(image, version: "2.5.0"))
        #expect(band.firmware == "2.5.0")
        #expect(band.statistics.retransmits > 0)
        await emulator.unplug()

        // Power lost mid-transfer: the install fails and the headband, back, runs what it ran.
        emulator = try await Emulator(link: "\(folder.path)/headband", ["--firmware", "2.4.0"])
        band = LinkedHeadband(path: emulator.link, replyTimeoutS: 2, logger: logger)
        _ = await band.status(channel: 0)
        let transfer = Task { [band] in await band.installFirmware(image + image + image + image, version: "2.6.0") }
        try await Task.sleep(for: .milliseconds(100))
        await emulator.unplug()
        #expect(await transfer.value == false)
        emulator = try await Emulator(link: "\(folder.path)/headband", ["--firmware", "2.4.0"])
        try await Task.sleep(for: .seconds(1.2))  // the link retries at most once a second
        _ = await band.status(channel: 0)
        #expect(band.connected && band.firmware == "2.4.0")
        await emulator.unplug()
    }
}
