/// Regimen adherence: a completed session every day for the first 8 weeks of use (loading),
/// then 1 to 3 a week (maintenance).
///
/// The rule, per gateway, as of a day `today`:
/// - Use starts on the regimen's day 1 (`regimenDay` of the session events; the first day with
///   a completed session when no event carries it).
/// - Loading: each day from the start through day 56 that has passed counts; it is adherent
///   when at least one session completed on it. Today counts only once a session completed.
/// - Maintenance: weeks of 7 days from day 57. A week that has ended counts, adherent with 1-3
///   completed sessions; the current week counts only once a session completed in it.
public struct Adherence: Sendable, Equatable, Codable {
    public var loadingDays: Int = 0
    public var loadingAdherentDays: Int = 0
    public var maintenanceWeeks: Int = 0
    public var maintenanceAdherentWeeks: Int = 0

    public init(loadingDays: Int = 0, loadingAdherentDays: Int = 0, maintenanceWeeks: Int = 0, maintenanceAdherentWeeks: Int = 0) {
        self.loadingDays = loadingDays
        self.loadingAdherentDays = loadingAdherentDays
        self.maintenanceWeeks = maintenanceWeeks
        self.maintenanceAdherentWeeks = maintenanceAdherentWeeks
    }

    /// The length of the loading phase, days.
    public static let loadingPhaseDays = 56

    /// Adherent units over all units, or nil before there is anything to judge.
    public var ratio: Double? {
        let units = loadingDays + maintenanceWeeks
        return units == 0 ? nil : Double(loadingAdherentDays + maintenanceAdherentWeeks) / Double(units)
    }

    /// Adds another gateway's counts (fleet adherence pools the units).
    public static func + (lhs: Adherence, rhs: Adherence) -> Adherence {
        Adherence(
            loadingDays: lhs.loadingDays + rhs.loadingDays,
            loadingAdherentDays: lhs.loadingAdherentDays + rhs.loadingAdherentDays,
            maintenanceWeeks: lhs.maintenanceWeeks + rhs.maintenanceWeeks,
            maintenanceAdherentWeeks: lhs.maintenanceAdherentWeeks + rhs.maintenanceAdherentWeeks)
    }

    /// Judges one gateway.
    /// - Parameters:
    ///   - start: day 1 of the regimen.
    ///   - completed: completed sessions per day.
    ///   - today: the day to judge up to.
    public init(start: Day, completed: [Day: Int], today: Day) {
        guard start <= today else { return }
        let loadingEnd = start.adding(Self.loadingPhaseDays - 1)
        var day = start
        while day <= min(loadingEnd, today) {
            let count = completed[day, default: 0]
            if day < today || count > 0 {
                loadingDays += 1
                if count > 0 { loadingAdherentDays += 1 }
            }
            day = day.adding(1)
        }
        var weekStart = loadingEnd.adding(1)
        while weekStart <= today {
            let weekEnd = weekStart.adding(6)
            var count = 0
            for offset in 0..<7 { count += completed[weekStart.adding(offset), default: 0] }
            if weekEnd < today || count > 0 {
                maintenanceWeeks += 1
                if (1...3).contains(count) { maintenanceAdherentWeeks += 1 }
            }
            weekStart = weekStart.adding(7)
        }
    }
}
