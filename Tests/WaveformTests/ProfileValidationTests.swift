import Testing
@testable import Waveform

@Suite("Calibration profiles and the hard rules")
struct ProfileValidationTests {
    @Test("the standard profile is valid")
    func standardIsValid() throws {
        try Profiles.standard.validate()
    }

    static let broken: [(String, @Sendable (inout CalibrationProfile) -> Void, SafetyRule, String)] = [
        ("peak above 1000 uA", { $0.levels[2].peakMicroAmps = 1200 }, .peakCurrent, "1200 uA"),
        ("peak exactly 1000.5 uA", { $0.levels[0].peakMicroAmps = 1000.5 }, .peakCurrent, "1000.5"),
        ("negative peak", { $0.levels[0].peakMicroAmps = -5 }, .peakCurrent, "-5"),
        ("NaN peak", { $0.levels[1].peakMicroAmps = .nan }, .peakCurrent, "nan"),
        ("depressor anguli oris", { $0.channels[3].muscle = "depressor_anguli_oris" }, .forbiddenChannel, "depressor_anguli_oris"),
        ("orbicularis oculi", { $0.channels[0].muscle = "orbicularis_oculi" }, .forbiddenChannel, "orbicularis_oculi"),
        ("procerus", { $0.channels[0].muscle = "procerus" }, .forbiddenChannel, "procerus"),
        ("unknown muscle", { $0.channels[0].muscle = "masseter" }, .forbiddenChannel, "masseter"),
        ("left-right pair", { $0.channels[0].electrodes = ["L-a0", "R-b0"] }, .forbiddenChannel, "R-b0"),
        ("left channel with right electrodes", { $0.channels[0].side = "right" }, .forbiddenChannel, "L-a0"),
        ("frequency 60 Hz", { $0.levels[1].frequencyHz = 60 }, .waveformShape, "60 Hz"),
        ("frequency 0.2 Hz", { $0.levels[1].frequencyHz = 0.2 }, .waveformShape, "0.2 Hz"),
        ("phases longer than the period", { $0.levels[0].phaseWidthMicros = 60_000 }, .waveformShape, "60000"),
        ("session of 901 s", { $0.sessionSeconds = 901 }, .sessionLimit, "901"),
        ("vibration on level 2", { $0.vibration.level = 2 }, .vibration, "level 3"),
        ("vibration at 9000 rpm", { $0.vibration.rpm = 9000 }, .vibration, "9000"),
        ("missing level 3", { $0.levels.removeLast() }, .levelLock, "level 3"),
        ("duplicate channel id", { $0.channels[1].id = $0.channels[0].id }, .forbiddenChannel, "twice"),
    ]

    @Test("a profile that breaks a rule is rejected with the rule and the value", arguments: broken.indices)
    func rejected(index: Int) {
        let (name, change, rule, value) = Self.broken[index]
        var profile = Profiles.standard
        change(&profile)
        do {
            try profile.validate()
            Issue.record("\(name) accepted")
        } catch {
            #expect(error.rule == rule, "\(name): \(error)")
            #expect(error.description.contains(value), "\(name): \(error)")
        }
    }

    @Test("the engine and the monitor refuse a broken profile too")
    func engineRefuses() {
        var profile = Profiles.standard
        profile.levels[2].peakMicroAmps = 1200
        #expect(throws: WaveformError.self) { try SessionEngine(profile: profile, level: 1, completedSessions: 0) }
        #expect(throws: WaveformError.self) { try SafetyMonitor(profile: profile) }
    }

    @Test("level unlocks: a new wearer starts at 1; the remote cap limits every wearer")
    func levelPolicy() throws {
        let policy = LevelPolicy(unlock: .init(level2AfterSessions: 7, level3AfterSessions: 21))
        #expect(policy.allowedLevel(completedSessions: 0) == 1)
        #expect(policy.allowedLevel(completedSessions: 7) == 2)
        #expect(policy.allowedLevel(completedSessions: 21) == 3)
        #expect(LevelPolicy(unlock: policy.unlock, maxLevel: 2).allowedLevel(completedSessions: 100) == 2)
        let engine = try SessionEngine(profile: Profiles.standard, level: 3, completedSessions: 0)
        #expect(engine.level == 1)
    }
}
