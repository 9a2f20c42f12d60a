import EdgeAgent
import Foundation
import SpectraProtocol
import Synchronization
import Testing
import Waveform

/// Collects emitted events.
final class EventLog: Sendable {
    private let items = Mutex<[Event]>([])
    func add(_ event: Event) { items.withLock { $0.append(event) } }
    var events: [Event] { items.withLock { $0 } }
    var types: [String] { events.map(\.type.rawValue) }
}

@Suite("Session controller")
struct SessionControllerTests {
    static let profile = CalibrationProfile(
        version: "test",
        channels: [
            .init(id: "z-l", muscle: "zygomaticus_major", side: "left", electrodes: ["L-a", "L-b"], electrodeAreaCm2: 2),
            .init(id: "z-r", muscle: "zygomaticus_major", side: "right", electrodes: ["R-a", "R-b"], electrodeAreaCm2: 2),
        ],
        levels: [.init(level: 1, peakMicroAmps: 200), .init(level: 2, peakMicroAmps: 300), .init(level: 3, peakMicroAmps: 400)],
        levelUnlock: .init(level2AfterSessions: 1, level3AfterSessions: 2))

    func controller(_ log: EventLog, journal: SessionJournal? = nil, faults: [HeadbandFault] = []) -> SessionController {
        SessionController(
            profile: Self.profile, headband: SimulatedHeadband(channels: 2, seed: 5, faults: faults), regimen: Regimen(),
            journal: journal, timeScale: 5000, emit: { log.add($0) })
    }

    @Test("a full session: started, paused on lift-off, resumed, completed; the next one unlocks level 2")
    func fullSession() async throws {
        let log = EventLog()
        let sessions = controller(log, faults: [.liftOff(channel: nil, atS: 100, durationS: 2)])
        let id = try await sessions.start(level: 3)
        await sessions.waitUntilIdle()
        #expect(log.types == ["session.started", "session.paused", "session.resumed", "session.completed"])
        guard case .sessionStarted(let started) = log.events.first, case .sessionCompleted(let summary) = log.events.last else {
            Issue.record("unexpected events \(log.types)")
            return
        }
        #expect(started.sessionId == id && started.level == 1, "a new wearer starts at level 1")
        #expect(started.regimenPhase == .loading && started.regimenDay == 1)
        #expect(abs(summary.stimulatingS - 900) < 0.2)
        #expect(summary.pauses == 1)
        #expect(summary.levelSeconds["1"] ?? 0 > 899)
        #expect(await sessions.currentRegimen.completedSessions == 1)
        #expect(await sessions.status().allowedLevel == 2)
    }

    @Test("a fault scripted per session plays in every session at its offset, however long the headband idled first")
    func perSessionFault() async throws {
        #expect(ScriptedFault(script: "liftoff@session+100+2") == ScriptedFault(script: "liftoff@100+2").map { ScriptedFault(fault: $0.fault, perSession: true) })
        #expect(ScriptedFault(script: "liftoff@120+3")?.perSession == false)
        #expect(ScriptedFault(script: "liftoff@session+") == nil && ScriptedFault(script: "melt@session+5") == nil)
        let log = EventLog()
        let fault = try #require(ScriptedFault(script: "liftoff@session+100+2"))
        let sessions = SessionController(
            profile: Self.profile, headband: SimulatedHeadband(channels: 2, seed: 5, sessionFaults: [fault.fault]), regimen: Regimen(maxPerDay: 2),
            journal: nil, timeScale: 5000, emit: { log.add($0) })
        // Far past the offset on the headband's own clock: a once-only lift-off at 100 s would be over.
        await sessions.idleTick(seconds: 5000)
        for _ in 0..<2 {
            try await sessions.start(level: 1)
            await sessions.waitUntilIdle()
        }
        #expect(log.types == [
            "session.started", "session.paused", "session.resumed", "session.completed",
            "session.started", "session.paused", "session.resumed", "session.completed",
        ])
        let pauses = log.events.compactMap { if case .sessionPaused(let pause) = $0 { pause.reason } else { nil } }
        #expect(pauses == ["contact_lost", "contact_lost"])
    }

    @Test("stop ends the session as user_stop; a second start while one runs is refused")
    func stopAndRefuse() async throws {
        let log = EventLog()
        let sessions = controller(log)
        try await sessions.start(level: 1)
        await #expect(throws: SessionController.StartError.self) { try await sessions.start(level: 1) }
        try await Task.sleep(for: .milliseconds(20))
        await sessions.stop(reason: .userStop)
        await sessions.waitUntilIdle()
        guard case .sessionAborted(let summary) = log.events.last else {
            Issue.record("expected an abort, got \(log.types)")
            return
        }
        #expect(summary.reason == .userStop)
        #expect(summary.stimulatingS < 900)
        #expect(await sessions.currentRegimen.completedSessions == 0)
    }

    @Test("a session left running by a killed agent is reported as agent_restart and not resumed")
    func agentRestart() async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("journal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let journal = SessionJournal(path: folder.appendingPathComponent("session.json").path)
        journal.write(.init(
            sessionId: "s-crashed", level: 2, startedAt: Date().addingTimeInterval(-120), stimulatingS: 115,
            levelSeconds: ["2": 115], pauses: 0, chargeMicroCoulombs: [:]))
        let log = EventLog()
        let sessions = controller(log, journal: journal)
        await sessions.recoverAfterRestart()
        guard case .sessionAborted(let summary) = log.events.first else {
            Issue.record("expected an abort, got \(log.types)")
            return
        }
        #expect(summary.reason == .agentRestart)
        #expect(summary.sessionId.rawValue == "s-crashed")
        #expect(summary.stimulatingS == 115)
        #expect(journal.read() == nil)
        #expect(await sessions.status().running == false)
    }

    @Test("a short during a session is a safety trip and an abort")
    func shortTrips() async throws {
        let log = EventLog()
        let sessions = controller(log, faults: [.short(channel: 0, atS: 30)])
        try await sessions.start(level: 1)
        await sessions.waitUntilIdle()
        #expect(log.types.contains("safety.trip"))
        guard case .sessionAborted(let summary) = log.events.last else {
            Issue.record("expected an abort, got \(log.types)")
            return
        }
        #expect(summary.reason == .safetyTrip)
        // The events encode to the wire format.
        for event in log.events {
            let envelope = Envelope(
                fleet: try Identifier("demo"), gateway: try Identifier("gw-1"), epoch: UUID(), seq: 1, boot: UUID(), monoNanos: 0,
                timestamp: Date(), synced: true, message: .event(event))
            #expect(try Envelope.decode(envelope.encoded()).message == .event(event))
        }
    }
}

extension SessionControllerTests {
    @Test("the wall clock jumping an hour forward, then back, mid-session changes nothing: 900 s of stimulation, completed")
    func clockJumps() async throws {
        let log = EventLog()
        // A wall clock that jumps +1 h after 50 reads and -1 h (back past the start) after 150.
        let reads = Atomic<Int>(0)
        let start = Date()
        let sessions = SessionController(
            profile: Self.profile, headband: SimulatedHeadband(channels: 2, seed: 9), regimen: Regimen(), journal: nil, timeScale: 5000,
            now: {
                let count = reads.add(1, ordering: .relaxed).newValue
                let jump: Double = count > 150 ? -3600 : count > 50 ? 3600 : 0
                return start.addingTimeInterval(Double(count) * 0.01 + jump)
            },
            emit: { log.add($0) })
        try await sessions.start(level: 1)
        // The session is paced by its own stimulation clock; poll the wall clock meanwhile.
        for _ in 0..<300 {
            _ = await sessions.status()
            try await Task.sleep(for: .milliseconds(1))
        }
        await sessions.waitUntilIdle()
        #expect(log.types.first == "session.started")
        #expect(log.types.last == "session.completed", "\(log.types)")
        guard case .sessionCompleted(let summary) = log.events.last else { return }
        #expect(abs(summary.stimulatingS - 900) < 0.2, "stimulation time is the segments' own, not the wall clock's")
        #expect(summary.stimulatingS <= 900)
    }
}
