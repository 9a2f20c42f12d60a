import Testing
@testable import Waveform

@Suite("Rendered sessions, sample by sample")
struct RenderTests {
    @Test("a full level-3 session: peak, 1 s DC mean, one channel at a time, rising start, nothing after 900 s")
    func fullSession() throws {
        let profile = Profiles.standard
        let segments = try SessionPlan.ideal(profile: profile, level: 3)
        let rate = 1000.0
        let channels = profile.channels.count
        let seconds = 905.0
        let samples = Renderer.render(segments, channels: channels, sampleRate: rate, seconds: seconds)
        let frames = Int(seconds * rate)
        #expect(samples.count == frames * channels)
        let peak = Float(profile.setting(for: 3)!.peakMicroAmps)
        var overlap = 0
        var overPeak = 0
        var afterLimit = 0
        samples.withUnsafeBufferPointer { buffer in
            for frame in 0..<frames {
                var active = 0
                for channel in 0..<channels {
                    let value = buffer[frame * channels + channel]
                    if value != 0 { active += 1 }
                    if abs(value) > peak { overPeak += 1 }
                    if frame >= Int(900 * rate) && value != 0 { afterLimit += 1 }
                }
                if active > 1 { overlap += 1 }
            }
        }
        #expect(overPeak == 0)
        #expect(overlap == 0)
        #expect(afterLimit == 0)
        // Mean current over every 1 s window of whole pulse periods (10 Hz: 10 periods), per channel.
        let window = Int(rate)
        var worst: Float = 0
        samples.withUnsafeBufferPointer { buffer in
            for channel in 0..<channels {
                var sum: Float = 0
                for frame in 0..<frames {
                    sum += buffer[frame * channels + channel]
                    if frame >= window { sum -= buffer[(frame - window) * channels + channel] }
                    if frame >= window - 1 && (frame + 1) % 100 == 0 { worst = max(worst, abs(sum) / Float(window)) }
                }
            }
        }
        #expect(worst <= 5)
        // The first 2 s ramp rises pair by pair.
        let firstChannelPeaks = (0..<20).map { pair -> Float in
            let start = pair * 100
            return (start..<(start + 20)).map { abs(samples[$0 * channels]) }.max()!
        }
        #expect(zip(firstChannelPeaks, firstChannelPeaks.dropFirst()).allSatisfy { $0 < $1 })
        #expect(firstChannelPeaks.last! <= peak && firstChannelPeaks.last! > peak * 0.9)
    }

    @Test("a resistive load limits the current to what the compliance voltage drives")
    func load() throws {
        let segments = try SessionPlan.ideal(profile: Profiles.standard, level: 3)
        let samples = Renderer.render(Array(segments.prefix(200)), channels: 10, sampleRate: 1000, seconds: 20, loadOhms: 50_000, complianceVolts: 11)
        #expect(samples.map(abs).max()! <= 220 + 0.01)
    }

    @Test("characterisation at the standard loads")
    func characterization() {
        let rows = Characterization.table(for: Profiles.standard)
        #expect(rows.count == 9)
        let l3at10k = rows.first { $0.level == 3 && $0.loadOhms == 10_000 }!
        #expect(abs(l3at10k.maxVolts - 4) < 1e-9)
        #expect(l3at10k.maxMicroAmps == 400)
        #expect(abs(l3at10k.maxPhaseChargeMicroCoulombs - 8) < 1e-9)
        #expect(l3at10k.netChargePerPulseMicroCoulombs == 0)
        #expect(abs(l3at10k.averageMicroAmps - 160) < 1e-9)
    }
}
