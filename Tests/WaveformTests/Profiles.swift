@testable import Waveform

/// The default profile of Config/calibration/default.yaml, built in code (the YAML copy is
/// checked against it in ProfileLoaderTests).
enum Profiles {
    static let standard: CalibrationProfile = {
        let muscles = ["frontalis_lateral", "zygomaticus_major", "zygomaticus_minor", "levator_labii_superioris", "levator_anguli_oris"]
        var channels: [CalibrationProfile.Channel] = []
        for (index, muscle) in muscles.enumerated() {
            for side in ["left", "right"] {
                let prefix = side == "left" ? "L" : "R"
                channels.append(.init(
                    id: "\(muscle.prefix(6))\(index)-\(prefix)", muscle: muscle, side: side,
                    electrodes: ["\(prefix)-a\(index)", "\(prefix)-b\(index)"], electrodeAreaCm2: 1.5))
            }
        }
        return CalibrationProfile(
            version: "test", channels: channels,
            levels: [.init(level: 1, peakMicroAmps: 200), .init(level: 2, peakMicroAmps: 300), .init(level: 3, peakMicroAmps: 400)])
    }()

    /// A runner for a wearer who has unlocked every level.
    static func runner(level: Int, faults: [HeadbandFault] = [], seed: UInt64 = 7, profile: CalibrationProfile = standard,
                       completed: Int = 100, maxLevel: Int = 3) async throws -> SessionRunner {
        let engine = try SessionEngine(profile: profile, level: level, completedSessions: completed, maxLevel: maxLevel)
        let headband = SimulatedHeadband(channels: profile.channels.count, complianceVolts: profile.complianceVolts, seed: seed, faults: faults)
        return try await SessionRunner(engine: engine, headband: headband)
    }
}
