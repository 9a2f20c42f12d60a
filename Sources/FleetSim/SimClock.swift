import Foundation

/// Simulated time: starts at `virtualStart` and runs `speed` times faster than the process's
/// monotonic clock, so weeks of use pass in minutes. Safe to share.
public struct SimClock: Sendable {
    public let virtualStart: Date
    public let speed: Double
    private let realStart: ContinuousClock.Instant

    public init(virtualStart: Date, speed: Double) {
        self.virtualStart = virtualStart
        self.speed = max(1, speed)
        realStart = .now
    }

    /// The simulated wall-clock time now.
    public func now() -> Date {
        let elapsed = ContinuousClock.now - realStart
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return virtualStart.addingTimeInterval(seconds * speed)
    }

    /// Sleeps until the simulated time reaches `date` (returns at once if it has).
    public func sleep(until date: Date) async throws {
        let remaining = date.timeIntervalSince(now()) / speed
        if remaining > 0 { try await Task.sleep(for: .seconds(remaining)) }
    }
}

import Waveform

extension SeededRandom {
    /// True with `probability`.
    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
}
