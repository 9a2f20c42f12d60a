import Foundation

/// Durations as operators type them: `30s`, `10m`, `2h`, `7d` (a bare number is seconds).
public enum DurationText {
    /// The duration in seconds, or nil unless it is a positive finite number with an optional unit.
    public static func seconds(_ text: String) -> TimeInterval? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        var number = Substring(text)
        var scale = 1.0
        if let last = text.last, let unit = units[last] {
            number = text.dropLast()
            scale = unit
        }
        guard let value = Double(number), value > 0, value.isFinite, (value * scale).isFinite else { return nil }
        return value * scale
    }
}
