import Benchmark
import Waveform

/// Planning and rendering a full 15-minute session for all channels at 10 kHz.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .peakMemoryResident], maxIterations: 10)

    let profile = CalibrationProfile(
        version: "bench",
        channels: [
            "frontalis_lateral", "zygomaticus_major", "zygomaticus_minor", "levator_labii_superioris", "levator_anguli_oris",
        ].enumerated().flatMap { index, muscle in
            [("left", "L"), ("right", "R")].map { side, prefix in
                CalibrationProfile.Channel(
                    id: "c\(index)-\(prefix)", muscle: muscle, side: side, electrodes: ["\(prefix)-a\(index)", "\(prefix)-b\(index)"],
                    electrodeAreaCm2: 1.5)
            }
        },
        levels: [.init(level: 1, peakMicroAmps: 200), .init(level: 2, peakMicroAmps: 300), .init(level: 3, peakMicroAmps: 400)])

    Benchmark("Plan a 15-minute level-3 session") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try SessionPlan.ideal(profile: profile, level: 3))
        }
    }

    Benchmark("Plan and render 15 minutes, 10 channels, 10 kHz") { benchmark in
        for _ in benchmark.scaledIterations {
            let segments = try SessionPlan.ideal(profile: profile, level: 3)
            blackHole(Renderer.render(segments, channels: profile.channels.count, sampleRate: 10_000, seconds: 900))
        }
    }
}
