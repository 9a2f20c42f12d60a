import Foundation
import SpectraProtocol

/// The wearer's regimen: daily sessions for the first 8 weeks of use (loading), then one to
/// three a week (maintenance). Counts completed sessions for level unlocks, at most
/// `maxPerDay` a calendar day.
public struct Regimen: Sendable, Equatable, Codable {
    /// Length of the loading phase, days.
    public static let loadingDays = 56

    /// The calendar day (days since 1970-01-01 in the gateway's time zone) of the first session.
    public private(set) var firstDay: Int?
    /// Sessions counted per calendar day.
    public private(set) var countedPerDay: [Int: Int] = [:]
    /// Completed sessions counted so far (for level unlocks).
    public private(set) var completedSessions = 0
    /// Completed sessions counted per calendar day, at most.
    public var maxPerDay: Int

    public init(maxPerDay: Int = 1) { self.maxPerDay = max(1, maxPerDay) }

    /// The calendar day of `date` in the gateway's local time (`TZ`, else /etc/localtime), as
    /// the C library reads it: the day `date` prints. Foundation's `TimeZone.current` would give
    /// the same offset, but loads ICU and its time zone data (about 1 MiB resident for the
    /// agent's lifetime) to look it up.
    public static func day(of date: Date) -> Int {
        day(of: date, utcOffset: localUTCOffset(at: date))
    }

    /// The calendar day of `date` in `zone`.
    public static func day(of date: Date, in zone: TimeZone) -> Int {
        day(of: date, utcOffset: zone.secondsFromGMT(for: date))
    }

    private static func day(of date: Date, utcOffset: Int) -> Int {
        let seconds = date.timeIntervalSince1970 + Double(utcOffset)
        return Int((seconds / 86_400).rounded(.down))
    }

    /// Seconds east of UTC in local time at `date` (0 if the C library cannot say).
    static func localUTCOffset(at date: Date) -> Int {
        var time = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        guard localtime_r(&time, &parts) != nil else { return 0 }
        return parts.tm_gmtoff
    }

    /// The phase on `day` (loading before the first session too).
    public func phase(on day: Int) -> RegimenPhase {
        guard let firstDay else { return .loading }
        return day - firstDay < Self.loadingDays ? .loading : .maintenance
    }

    /// Day 1 is the first session's day.
    public func dayNumber(on day: Int) -> Int {
        guard let firstDay else { return 1 }
        return max(1, day - firstDay + 1)
    }

    /// Marks the start of use on the first session.
    public mutating func sessionStarted(on day: Int) {
        if firstDay == nil { firstDay = day }
    }

    /// Records a completed session.
    /// - Returns: whether it counted (false past `maxPerDay` that day).
    @discardableResult
    public mutating func sessionCompleted(on day: Int) -> Bool {
        sessionStarted(on: day)
        guard countedPerDay[day, default: 0] < maxPerDay else { return false }
        countedPerDay[day, default: 0] += 1
        completedSessions += 1
        return true
    }
}
