import Foundation
import SpectraConfig
import Testing
import Waveform

@Suite("Calibration profile files")
struct ProfileLoaderTests {
    static var defaultProfile: String { ConfigLoadingTests.packageRoot.appendingPathComponent("Config/calibration/default.yaml").path }

    @Test("the shipped default profile loads and matches the architecture's figures")
    func defaultProfile() throws {
        let profile = try ProfileLoader.load(path: Self.defaultProfile)
        #expect(profile.levels.map(\.peakMicroAmps) == [200, 300, 400])
        #expect(profile.levels.allSatisfy { $0.frequencyHz == 10 && $0.rampUpS == 2 && $0.rampDownS == 1 && $0.dwellS == 8 })
        #expect(profile.sessionSeconds == 900)
        #expect(profile.vibration.rpm == 8000 && profile.vibration.level == 3)
        #expect(Set(profile.channels.map(\.muscle)) == HardLimits.allowedMuscles)
    }

    static let hostile: [(String, String, String)] = [
        ("peakMicroAmps: 400", "peakMicroAmps: 1200", "1200 uA is above the 1000 uA ceiling"),
        ("muscle: zygomaticus_major,        side: left", "muscle: depressor_anguli_oris,    side: left", "depressor"),
        ("electrodes: [L-brow-tail, L-temple]", "electrodes: [L-brow-tail, R-temple]", "never pairs left with right"),
        ("sessionSeconds: 900", "sessionSeconds: 1800", "sessionSeconds"),
        ("frequencyHz: 10, phaseWidthMicros: 20000, rampUpS: 2, rampDownS: 1, dwellS: 8 }\n  - { level: 3", "frequencyHz: 75, phaseWidthMicros: 2000, rampUpS: 2, rampDownS: 1, dwellS: 8 }\n  - { level: 3", "75 Hz is outside 0.5-50 Hz"),
        ("rpm: 8000", "rpm: \"fast\"", "vibration.rpm"),
    ]

    @Test("a hostile profile file is refused naming the entry, the value and the rule", arguments: hostile.indices)
    func hostileFile(index: Int) throws {
        let (original, replacement, expected) = Self.hostile[index]
        let text = try String(contentsOfFile: Self.defaultProfile, encoding: .utf8)
        #expect(text.contains(original), "fixture drifted: \(original)")
        let changed = text.replacingOccurrences(of: original, with: replacement)
        do {
            _ = try ProfileLoader.parse(changed, source: "hostile.yaml")
            Issue.record("accepted: \(replacement)")
        } catch {
            #expect(error.description.contains(expected), "\(error)")
            #expect(error.file == "hostile.yaml")
        }
    }

    @Test("not YAML, and a missing file")
    func unreadable() {
        #expect(throws: ConfigurationError.self) { try ProfileLoader.parse("levels: [", source: "x.yaml") }
        #expect(throws: ConfigurationError.self) { try ProfileLoader.load(path: "/nonexistent/profile.yaml") }
    }
}
