import Foundation

/// Simulated time: starts at `virtualStart` and runs `speed` times faster than the process's
/// monotonic clock, so weeks of use pass in minutes, until it catches up with the real time;
/// from then on it is real time. A simulated gateway never stamps a message later than the
/// wall clock (a receiver refuses a synced `ts` far ahead of its own), however late a loaded
/// machine finishes the last simulated day. Safe to share.
public struct SimClock: Sendable {
    public let virtualStart: Date
    public let speed: Double
    private let realStart: ContinuousClock.Instant
    /// The wall-clock time at `realStart`.
    private let realStartDate: Date
    /// When simulated time meets real time (seconds after `realStart`): from then on it is real time.
    private let catchUpSeconds: Double

    public init(virtualStart: Date, speed: Double) {
        self.virtualStart = virtualStart
        self.speed = max(1, speed)
        realStart = .now
        realStartDate = Date()
        let behind = realStartDate.timeIntervalSince(virtualStart)
        catchUpSeconds = self.speed > 1 ? max(0, behind) / (self.speed - 1) : .infinity
    }

    /// The simulated wall-clock time now.
    public func now() -> Date {
        date(after: elapsedSeconds())
    }

    /// Sleeps until the simulated time reaches `date` (returns at once if it has).
    public func sleep(until date: Date) async throws {
        let elapsed = elapsedSeconds()
        let caughtUp = self.date(after: catchUpSeconds)
        var remaining: Double
        if elapsed < catchUpSeconds {
            // Fast until the catch-up, real time after it.
            remaining = (min(date, caughtUp).timeIntervalSince(now())) / speed
            if date > caughtUp { remaining += date.timeIntervalSince(caughtUp) }
        } else {
            remaining = date.timeIntervalSince(now())
        }
        if remaining > 0 { try await Task.sleep(for: .seconds(remaining)) }
    }

    private func elapsedSeconds() -> Double {
        let elapsed = ContinuousClock.now - realStart
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }

    /// The simulated time `seconds` after the start.
    private func date(after seconds: Double) -> Date {
        if seconds < catchUpSeconds { return virtualStart.addingTimeInterval(seconds * speed) }
        return realStartDate.addingTimeInterval(seconds)
    }
}

import Waveform

extension SeededRandom {
    /// True with `probability`.
    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
}
