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

/// A deterministic random source (SplitMix64), one per gateway, derived from the fleet seed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
}
