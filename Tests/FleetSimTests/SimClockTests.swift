import Foundation
@testable import FleetSim
import Testing

@Suite("Simulated clock")
struct SimClockTests {
    @Test("simulated time runs fast until it meets the wall clock, then is the wall clock: never ahead of it")
    func neverAhead() async throws {
        let clock = SimClock(virtualStart: Date().addingTimeInterval(-20), speed: 1_000)
        #expect(Date().timeIntervalSince(clock.now()) > 15, "it starts 20 s behind")
        try await Task.sleep(for: .milliseconds(200))
        // At 1000x the 20 s are made up in 20 ms; unchecked it would now be 180 s ahead.
        #expect(abs(clock.now().timeIntervalSince(Date())) < 1)
        let start = ContinuousClock.now
        try await clock.sleep(until: Date().addingTimeInterval(0.3))
        let slept = ContinuousClock.now - start
        #expect(slept >= .milliseconds(250), "past the catch-up a simulated second is a real one: slept \(slept)")
    }
}
