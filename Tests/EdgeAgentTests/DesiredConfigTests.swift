import EdgeAgent
import Foundation
import SpectraProtocol
import Testing
import Waveform

@Suite("Desired config: signed documents, layers and hard limits")
struct DesiredConfigTests {
    let operatorKey = SigningKey()
    let strangerKey = SigningKey()
    let fleet = try! Identifier("demo")
    let gateway = try! Identifier("gw-0001")
    let clinic = try! Identifier("clinic-a")
    let now = Date(timeIntervalSince1970: 1_795_748_706)

    func config() -> DesiredConfig {
        DesiredConfig(fleet: fleet, gateway: gateway, groups: [clinic], keyring: Keyring([operatorKey.verifyingKey]))
    }

    func document(
        _ target: DocumentTarget, version: Int, body: ConfigBody?, fleet: Identifier? = nil, expires: Date? = nil,
        key: SigningKey? = nil
    ) -> Data {
        let payload = DocumentPayload(
            kind: .config, fleet: fleet ?? self.fleet, target: target, version: version, issuedAt: now, expiresAt: expires,
            body: body.map { .config($0) })
        return (key ?? operatorKey).sign(payload.encoded()).encoded()
    }

    var gatewayTopic: Topic { .gatewayConfig(fleet: fleet, gateway: gateway) }

    @Test("a good document applies; the same version again is a no-op; layers merge fleet < group < gateway")
    func applyAndMerge() {
        var desired = config()
        let decision1 = desired.receive(document(.all, version: 1, body: ConfigBody(maxLevel: 3, telemetryIntervalS: 5)), on: .fleetConfig(fleet: fleet), now: now)
        #expect(decision1
            == .applied(layer: "all", version: 1))
        let decision2 = desired.receive(document(.group(clinic), version: 4, body: ConfigBody(maxLevel: 2)), on: .groupConfig(fleet: fleet, group: clinic), now: now)
        #expect(decision2
            == .applied(layer: "group:clinic-a", version: 4))
        let decision3 = desired.receive(document(.gateway(gateway), version: 2, body: ConfigBody(idleTelemetryIntervalS: 30)), on: gatewayTopic, now: now)
        #expect(decision3
            == .applied(layer: "gateway", version: 2))
        let decision4 = desired.receive(document(.gateway(gateway), version: 2, body: ConfigBody(idleTelemetryIntervalS: 30)), on: gatewayTopic, now: now)
        #expect(decision4
            == .unchanged)
        let merged = desired.effective
        #expect(merged.maxLevel == 2)
        #expect(merged.telemetryIntervalS == 5)
        #expect(merged.idleTelemetryIntervalS == 30)
        #expect(desired.applied.versions == ["all": 1, "group:clinic-a": 4, "gateway": 2])
    }

    @Test("each bad document is rejected with a precise reason and changes nothing")
    func rejections() {
        var desired = config()
        _ = desired.receive(document(.gateway(gateway), version: 5, body: ConfigBody(maxLevel: 3)), on: gatewayTopic, now: now)
        let before = desired.applied
        let tooStrong = ConfigBody(levels: [.init(level: 3, peakMicroAmps: 1200)])
        var tampered = operatorKey.sign(DocumentPayload(
            kind: .config, fleet: fleet, target: .gateway(gateway), version: 9, issuedAt: now, body: .config(ConfigBody(maxLevel: 1))).encoded())
        tampered.sig = strangerKey.sign(Data("other".utf8)).sig
        let cases: [(String, Data, Topic, String)] = [
            ("unknown key", document(.gateway(gateway), version: 6, body: ConfigBody(maxLevel: 1), key: strangerKey), gatewayTopic, "unknownKeyID"),
            ("wrong signature", tampered.encoded(), gatewayTopic, "badSignature"),
            ("older version", document(.gateway(gateway), version: 4, body: ConfigBody(maxLevel: 1)), gatewayTopic, "staleVersion"),
            ("expired", document(.gateway(gateway), version: 7, body: ConfigBody(maxLevel: 1), expires: now.addingTimeInterval(-60)), gatewayTopic, "expired"),
            ("another fleet", document(.gateway(gateway), version: 7, body: ConfigBody(maxLevel: 1), fleet: try! Identifier("other")), gatewayTopic, "wrongTarget"),
            ("another gateway", document(.gateway(try! Identifier("gw-0002")), version: 7, body: ConfigBody(maxLevel: 1)), gatewayTopic, "wrongTarget"),
            ("a group doc on the gateway topic", document(.group(clinic), version: 7, body: ConfigBody(maxLevel: 1)), gatewayTopic, "wrongTarget"),
            ("1200 uA", document(.gateway(gateway), version: 7, body: tooStrong), gatewayTopic, "1000 uA ceiling"),
            ("not a signed document", Data("{\"maxLevel\":3}".utf8), gatewayTopic, "missingField"),
        ]
        for (name, payload, topic, reason) in cases {
            let decision = desired.receive(payload, on: topic, now: now)
            guard case .rejected(let layer, _, let text) = decision else {
                Issue.record("\(name): \(decision)")
                continue
            }
            #expect(layer == "gateway", "\(name)")
            #expect(text.contains(reason), "\(name): \(text)")
        }
        #expect(desired.applied == before)
        let decision5 = desired.receive(Data(), on: gatewayTopic, now: now)
        #expect(decision5 == .unchanged, "an empty retained message changes nothing")
    }

    @Test("a null body with a higher version clears the layer")
    func clear() {
        var desired = config()
        _ = desired.receive(document(.all, version: 1, body: ConfigBody(maxLevel: 1)), on: .fleetConfig(fleet: fleet), now: now)
        #expect(desired.effective.maxLevel == 1)
        let decision6 = desired.receive(document(.all, version: 2, body: nil), on: .fleetConfig(fleet: fleet), now: now)
        #expect(decision6 == .applied(layer: "all", version: 2))
        #expect(desired.effective.maxLevel == nil)
    }

    @Test("level overrides apply onto the calibration profile and are validated again")
    func profileOverride() throws {
        var desired = config()
        _ = desired.receive(document(.all, version: 1, body: ConfigBody(levels: [.init(level: 2, peakMicroAmps: 280)])), on: .fleetConfig(fleet: fleet), now: now)
        let base = CalibrationProfile(
            version: "t",
            channels: [.init(id: "z-l", muscle: "zygomaticus_major", side: "left", electrodes: ["L-a", "L-b"], electrodeAreaCm2: 2)],
            levels: [.init(level: 1, peakMicroAmps: 200), .init(level: 2, peakMicroAmps: 300), .init(level: 3, peakMicroAmps: 400)])
        let profile = try desired.profile(applyingTo: base)
        #expect(profile.setting(for: 2)?.peakMicroAmps == 280)
        #expect(profile.setting(for: 3)?.peakMicroAmps == 400)
    }
}

@Suite("Regimen")
struct RegimenTests {
    @Test("loading for 8 weeks from the first session, then maintenance; one counted session a day")
    func regimen() {
        var regimen = Regimen(maxPerDay: 1)
        #expect(regimen.phase(on: 20_000) == .loading)
        let first = regimen.sessionCompleted(on: 20_000)
        let second = regimen.sessionCompleted(on: 20_000)
        #expect(first)
        #expect(!second, "a second session the same day does not count")
        #expect(regimen.completedSessions == 1)
        #expect(regimen.dayNumber(on: 20_000) == 1)
        #expect(regimen.dayNumber(on: 20_055) == 56)
        #expect(regimen.phase(on: 20_055) == .loading)
        #expect(regimen.phase(on: 20_056) == .maintenance)
        let tokyo = TimeZone(identifier: "Asia/Tokyo")!
        let lateUTC = Date(timeIntervalSince1970: 86_400 * 20_000 + 86_000)  // 23:53 UTC, next morning in Tokyo
        #expect(Regimen.day(of: lateUTC, in: TimeZone(identifier: "UTC")!) == 20_000)
        #expect(Regimen.day(of: lateUTC, in: tokyo) == 20_001)
    }

    @Test("the agent's calendar day (local time from the C library) is the day Foundation's current time zone gives")
    func localCalendarDay() {
        // Every 7 hours 13 minutes for a year and a half: each hour of the day, and any daylight
        // saving changes of the zone the tests run in (TZ=Asia/Tokyo, America/New_York, ... too).
        for step in 0..<1_800 {
            let date = Date(timeIntervalSince1970: 1_767_225_600 + Double(step) * 25_980)
            #expect(Regimen.day(of: date) == Regimen.day(of: date, in: .current), "\(date)")
        }
    }

}

extension DesiredConfigTests {
    func signed(_ version: Int, issuedAt: Date, body: ConfigBody?, reset: Bool = false) -> Data {
        operatorKey.sign(DocumentPayload(
            kind: .config, fleet: fleet, target: .gateway(gateway), version: version, issuedAt: issuedAt,
            body: body.map { .config($0) }, reset: reset).encoded()).encoded()
    }

    @Test("no document can freeze a layer: versions above what the issue time allows, and issue times a day ahead, are refused")
    func versionsCannotFreeze() {
        var desired = config()
        #expect(desired.receive(signed(3, issuedAt: now, body: ConfigBody(maxLevel: 2)), on: gatewayTopic, now: now) == .applied(layer: "gateway", version: 3))
        for (version, issuedAt, code) in [
            (Int.max, now, "versionTooHigh"),
            (DocumentPayload.versionCeiling(issuedAt: now) + 1, now, "versionTooHigh"),
            (4, now.addingTimeInterval(86_400 + 60), "issuedInFuture"),
        ] {
            let decision = desired.receive(signed(version, issuedAt: issuedAt, body: ConfigBody(maxLevel: 1)), on: gatewayTopic, now: now)
            guard case .rejected(_, _, let reason) = decision else {
                Issue.record("version \(version) issued \(issuedAt): \(decision)")
                continue
            }
            #expect(reason.hasPrefix(code), "\(reason)")
        }
        #expect(desired.applied.versions == ["gateway": 3])
        // The highest version allowed is still followed by the next, once it is issued later.
        let ceiling = DocumentPayload.versionCeiling(issuedAt: now)
        #expect(desired.receive(signed(ceiling, issuedAt: now, body: nil), on: gatewayTopic, now: now) == .applied(layer: "gateway", version: ceiling))
        let later = now.addingTimeInterval(2)
        #expect(DocumentPayload.nextVersion(after: ceiling, now: later) == ceiling + 1)
        #expect(DocumentPayload.nextVersion(after: Int.max, now: later) == nil, "no overflow: the layer needs a reset")
    }

    @Test("a reset issued later takes a layer back to a low version; the document it undid, and older resets, cannot come back")
    func resetRecovers() {
        var desired = config()
        let ceiling = DocumentPayload.versionCeiling(issuedAt: now)
        #expect(desired.receive(signed(ceiling, issuedAt: now, body: ConfigBody(maxLevel: 1)), on: gatewayTopic, now: now) == .applied(layer: "gateway", version: ceiling))
        let resetAt = now.addingTimeInterval(60)
        let reset = signed(1, issuedAt: resetAt, body: ConfigBody(maxLevel: 3), reset: true)
        #expect(desired.receive(reset, on: gatewayTopic, now: resetAt) == .applied(layer: "gateway", version: 1))
        #expect(desired.effective.maxLevel == 3)
        // The same reset again (it stays retained): nothing to do.
        #expect(desired.receive(reset, on: gatewayTopic, now: resetAt) == .unchanged)
        // The high document replayed: issued before what is applied.
        if case .rejected(_, _, let reason) = desired.receive(signed(ceiling, issuedAt: now, body: ConfigBody(maxLevel: 1)), on: gatewayTopic, now: resetAt) {
            #expect(reason.hasPrefix("staleVersion"), "\(reason)")
        } else {
            Issue.record("the undone document applied again")
        }
        // An older reset replayed.
        if case .rejected(_, _, let reason) = desired.receive(signed(1, issuedAt: now.addingTimeInterval(30), body: nil, reset: true), on: gatewayTopic, now: resetAt) {
            #expect(reason.hasPrefix("staleReset"), "\(reason)")
        } else {
            Issue.record("an older reset applied")
        }
        #expect(desired.effective.maxLevel == 3)
        // Pushes continue from the reset's version.
        #expect(desired.receive(signed(2, issuedAt: resetAt.addingTimeInterval(5), body: ConfigBody(maxLevel: 2)), on: gatewayTopic, now: resetAt) == .applied(layer: "gateway", version: 2))
    }
}
