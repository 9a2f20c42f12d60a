import Foundation
import SpectraProtocol
import Waveform

/// A simulated wearer: when they start using the headband, how faithfully they keep to the
/// regimen, and what goes wrong in their sessions.
public struct Wearer: Sendable, Equatable {
    public enum Habit: String, Sendable, CaseIterable {
        /// Daily through the loading weeks, three times a week after.
        case diligent
        /// Most days, then about twice a week.
        case typical
        /// Keen at first, then fading away.
        case lapsing
    }

    public var habit: Habit
    /// Day of the simulation (0-based) the wearer starts on.
    public var startDay: Int
    /// Hour of the day they usually use it.
    public var usualHour: Double

    /// Draws a wearer: 30 % diligent, 50 % typical, 20 % lapsing; starts spread over three weeks.
    public static func draw(using random: inout SeededRandom, spreadDays: Int) -> Wearer {
        let roll = Double.random(in: 0..<1, using: &random)
        let habit: Habit = roll < 0.3 ? .diligent : roll < 0.8 ? .typical : .lapsing
        return Wearer(
            habit: habit, startDay: spreadDays > 0 ? Int.random(in: 0...spreadDays, using: &random) : 0,
            usualHour: [7.0, 8.0, 12.5, 19.0, 21.5].randomElement(using: &random)!)
    }

    /// The chance of a session on `regimenDay` (1-based) of use.
    public func sessionChance(regimenDay: Int) -> Double {
        let loading = regimenDay <= 56
        switch habit {
        case .diligent: return loading ? 0.96 : 3.0 / 7
        case .typical: return loading ? 0.8 : 2.0 / 7
        case .lapsing: return (loading ? 0.75 : 1.0 / 7) * exp(-Double(regimenDay) / 25)
        }
    }

    /// The headband faults a session scripts (on the headband's clock from the session start).
    public static func sessionFaults(using random: inout SeededRandom) -> [String] {
        var faults: [String] = []
        if random.chance(0.12) { faults.append("liftoff@\(Int.random(in: 60...700, using: &random))+\(Int.random(in: 2...6, using: &random))") }
        if random.chance(0.03) { faults.append("battery@\(Int.random(in: 100...800, using: &random)):4") }
        if random.chance(0.02) { faults.append("disconnect@\(Int.random(in: 30...850, using: &random))") }
        return faults
    }
}
