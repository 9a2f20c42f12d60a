@testable import FleetSim
import Testing

// A sleeper the ticker forgets never wakes: the time limit turns that into a failure. How late
// the others wake depends on the machine's load (seconds while the whole suite runs on 2 cores),
// so it is not asserted.
@Suite("Fleet ticker", .timeLimit(.minutes(1)))
struct FleetTickerTests {
    @Test("a thousand sleepers each wake once their time has come, never before")
    func neverEarly() async {
        let ticker = FleetTicker(resolution: .milliseconds(10))
        let start = ContinuousClock.now
        let woken = await withTaskGroup(of: (due: ContinuousClock.Instant, woke: ContinuousClock.Instant).self) { group in
            for index in 0..<1000 {
                // Spread over 0.5 s, with repeats on the same instant and one already past.
                let due = start + .milliseconds((index * 7) % 500) - (index == 0 ? .seconds(1) : .zero)
                group.addTask {
                    await ticker.sleep(until: due)
                    return (due, ContinuousClock.now)
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(woken.count == 1000)
        let early = woken.filter { $0.woke < $0.due }
        #expect(early.isEmpty, "\(early.count) sleepers woke before their time")
    }

    @Test("cancelling a sleeping task wakes it at once; the ticker carries on for the others")
    func cancellation() async {
        let ticker = FleetTicker(resolution: .milliseconds(10))
        let long = Task { await ticker.sleep(until: .now + .seconds(600)) }
        let short = Task { await ticker.sleep(until: .now + .milliseconds(300)) }
        try? await Task.sleep(for: .milliseconds(50))
        let cancelledAt = ContinuousClock.now
        long.cancel()
        await long.value
        #expect(ContinuousClock.now - cancelledAt < .seconds(30), "woke at its time, not at the cancellation")
        await short.value
        #expect(ContinuousClock.now - cancelledAt >= .milliseconds(200))
        // A task cancelled before it sleeps does not sleep at all.
        let before = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await ticker.sleep(until: .now + .seconds(600))
        }
        await before.value
        // And the ticker still wakes new sleepers after going idle.
        try? await Task.sleep(for: .milliseconds(50))
        let due = ContinuousClock.now + .milliseconds(100)
        await ticker.sleep(until: due)
        #expect(ContinuousClock.now >= due)
    }
}
