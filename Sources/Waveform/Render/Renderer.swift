/// Renders segments into per-channel current samples, to verify and characterise a session.
public enum Renderer {
    /// Samples in microamps, interleaved by channel (`sample * channels + channel`), covering
    /// `seconds` of the stimulation clock at `sampleRate`.
    ///
    /// Each phase spans the same whole number of samples as its opposite phase, so a pair's
    /// samples sum to exactly zero. With `loadOhms`, the current is what a source with
    /// `complianceVolts` can drive into that resistive load.
    public static func render(
        _ segments: [Segment], channels: Int, sampleRate: Double, seconds: Double, loadOhms: Double? = nil,
        complianceVolts: Double = .infinity
    ) -> [Float] {
        let total = Int((seconds * sampleRate).rounded())
        var samples = [Float](repeating: 0, count: total * channels)
        let limit = loadOhms.map { complianceVolts / $0 * 1e6 } ?? .infinity
        samples.withUnsafeMutableBufferPointer { buffer in
            for segment in segments {
                let channel = segment.channelIndex
                guard channel >= 0, channel < channels else { continue }
                let phaseSamples = max(1, Int((segment.phaseS * sampleRate).rounded()))
                for pair in 0..<segment.pairs {
                    let start = Int(((segment.startS + Double(pair) * segment.periodS) * sampleRate).rounded())
                    let amplitude = Float(min(segment.amplitude(pair: pair), limit))
                    let first: Float = segment.leadsPositive(pair: pair) ? amplitude : -amplitude
                    var index = start
                    for value in [first, -first] {
                        let end = index + phaseSamples
                        guard index < total else { break }
                        for sample in index..<min(end, total) { buffer[sample * channels + channel] = value }
                        index = end
                    }
                }
            }
        }
        return samples
    }
}
