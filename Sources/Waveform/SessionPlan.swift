/// The open-loop plan of a session: what the engine sends to a headband that reports ideal
/// contact throughout (used to render and characterise a profile).
public enum SessionPlan {
    /// Every segment of a full session at `level` for a wearer who has unlocked it.
    /// - Throws: ``WaveformError`` when the profile breaks a hard rule.
    public static func ideal(profile: CalibrationProfile, level: Int) throws(WaveformError) -> [Segment] {
        var engine = try SessionEngine(profile: profile, level: level, completedSessions: Int.max / 2)
        var segments: [Segment] = []
        segments.reserveCapacity(Int(profile.sessionSeconds * 12))
        var guardCount = 0
        while let segment = engine.nextSegment(nowS: segments.last?.endS ?? 0) {
            segments.append(segment)
            guardCount += 1
            if guardCount > 10_000_000 { break }
        }
        return segments
    }
}
