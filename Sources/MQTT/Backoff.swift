/// Exponential backoff with full jitter: the n-th retry waits a uniformly random time in
/// `[0, min(maximum, minimum * 2^n)]`, so that thousands of clients cut off together do not
/// return in the same second.
public struct Backoff: Sendable, Hashable {
    /// The cap of the first retry's window, seconds.
    public var minimumSeconds: Double
    /// The largest window, seconds.
    public var maximumSeconds: Double

    public init(minimumSeconds: Double = 0.5, maximumSeconds: Double = 30) {
        self.minimumSeconds = max(0.001, minimumSeconds)
        self.maximumSeconds = max(self.minimumSeconds, maximumSeconds)
    }

    /// The upper bound of the window for retry number `attempt` (0-based).
    public func window(attempt: Int) -> Double {
        let exponent = Double(min(attempt, 30))
        return min(maximumSeconds, minimumSeconds * pow2(exponent))
    }

    /// A delay for retry number `attempt`, drawn with `generator`.
    public func delay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Double {
        Double.random(in: 0...window(attempt: attempt), using: &generator)
    }

    private func pow2(_ exponent: Double) -> Double {
        var value = 1.0
        for _ in 0..<Int(exponent) { value *= 2 }
        return value
    }
}
