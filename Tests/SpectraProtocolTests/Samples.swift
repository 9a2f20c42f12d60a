import Foundation
@testable import SpectraProtocol

/// Fixed sample values for round-trip and golden-fixture tests.
enum Samples {
    static let fleet = try! Identifier("demo")
    static let gateway = try! Identifier("gw-0001")
    static let session = try! Identifier("s-2f9c1e")
    static let epoch = UUID(uuidString: "0b6c1a52-3f1e-4f4a-9d0e-6c3f2a1b9e01")!
    static let boot = UUID(uuidString: "7d2e4c10-8a55-4b7b-a1f3-3e9b0c6d5a22")!
    static let ts = Date(timeIntervalSince1970: 1_795_748_706.123)  // 2026-11-27T03:05:06.123Z

    static func envelope(_ message: Message, seq: UInt64 = 1234) -> Envelope {
        Envelope(
            fleet: fleet, gateway: gateway, epoch: epoch, seq: seq, boot: boot, monoNanos: 123_456_789_012,
            timestamp: ts, synced: true, message: message)
    }

    static let summary = SessionSummary(
        sessionId: session, durationS: 912.5, stimulatingS: 900, levelSeconds: ["1": 300, "2": 600],
        pauses: 1, chargeMicroCoulombs: ["frontalis-l": 1440.5, "zygomatic-r": 1380], regimenPhase: .loading,
        regimenDay: 12)

    static var aborted: SessionSummary {
        var summary = summary
        summary.reason = .safetyTrip
        return summary
    }

    /// One sample of every event type, named as its fixture file.
    static let events: [(String, Event)] = [
        ("session.started", .sessionStarted(SessionStarted(
            sessionId: session, level: 2, profileVersion: "2026.11-default",
            channels: ["frontalis-l", "frontalis-r"], regimenPhase: .loading, regimenDay: 12))),
        ("session.level_changed", .sessionLevelChanged(LevelChanged(sessionId: session, from: 2, to: 3))),
        ("session.paused", .sessionPaused(PauseChange(sessionId: session, reason: "contact_lost"))),
        ("session.resumed", .sessionResumed(PauseChange(sessionId: session, reason: "contact_lost"))),
        ("session.completed", .sessionCompleted(summary)),
        ("session.aborted", .sessionAborted(aborted)),
        ("safety.trip", .safetyTrip(SafetyTrip(
            sessionId: session, rule: "charge_balance", channel: "zygomatic-l", value: 6.2, limit: 5))),
        ("config.applied", .configApplied(ConfigOutcome(layer: "group:clinic-a", version: 7))),
        ("config.rejected", .configRejected(ConfigOutcome(
            layer: "gateway", version: 3, reason: "badSignature: the signature does not verify"))),
        ("firmware.progress", .firmwareProgress(FirmwareProgress(version: "2.4.1", stage: .rolledBack, detail: "boot check failed"))),
        ("outbox.evicted", .outboxEvicted(OutboxEvicted(class: "telemetry", count: 120, bytes: 56_000))),
        ("outbox.reset", .outboxReset(OutboxReset(
            reason: "database disk image is malformed", previousEpoch: nil, movedTo: "var/outbox.sqlite.corrupt-1"))),
    ]

    static let telemetry = Telemetry(
        sessionId: session, level: 3, elapsedS: 431.5,
        channels: [Telemetry.Channel(
            id: "zygomatic-l", peakMicroAmps: 398.5, rmsMicroAmps: 178.2, impedanceOhms: 8200,
            complianceVolts: 3.4, contact: true)],
        vibrationRpm: 8012, batteryPct: 76, headbandTempC: 31.5,
        agent: Telemetry.Agent(outboxDepth: 3, outboxBytes: 1400, oldestUnackedS: 0.4, reconnects: 1, rssKiB: 11_240))

    static let status = GatewayStatus(online: true, boot: boot, ts: ts, agentVersion: "0.1.0")

    static let state = ReportedState(
        boot: boot, ts: ts, agentVersion: "0.1.0", firmware: "2.4.0",
        configVersions: ["all": 4, "group:clinic-a": 7, "gateway": 2],
        levelLimits: ReportedState.LevelLimits(maxLevel: 3, unlockedLevel: 2, completedSessions: 12),
        groups: ["clinic-a"])

    static let configPayload = DocumentPayload(
        kind: .config, fleet: fleet, target: .group(try! Identifier("clinic-a")), version: 7, issuedAt: ts,
        expiresAt: ts.addingTimeInterval(7 * 86_400),
        body: .config(ConfigBody(
            maxLevel: 2, levelUnlock: .init(level2AfterSessions: 7, level3AfterSessions: 21),
            telemetryIntervalS: 1, idleTelemetryIntervalS: 60,
            levels: [.init(level: 2, peakMicroAmps: 280, frequencyHz: 10)],
            headband: .init(sessionWatchdogS: 900))))

    static let firmwarePayload = DocumentPayload(
        kind: .firmware, fleet: fleet, target: .gateway(gateway), version: 3, issuedAt: ts,
        body: .firmware(FirmwareManifest(
            version: "2.4.1", url: "https://fw.example/sculpt-2.4.1.bin",
            sha256: String(repeating: "ab", count: 32), sizeBytes: 262_144, hardware: "sculpt-r2")))
}
