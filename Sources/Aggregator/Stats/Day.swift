import Foundation
import SpectraProtocol

/// A calendar day in UTC, stored as days since 1970-01-01 and written `YYYY-MM-DD`.
///
/// Statistics are kept per UTC day so that every aggregator instance, wherever it runs, puts an
/// event on the same day.
public struct Day: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// Days since 1970-01-01.
    public var number: Int

    public init(number: Int) { self.number = number }

    /// The UTC day `date` falls on.
    public init(_ date: Date) {
        number = Int((date.timeIntervalSince1970 / 86_400).rounded(.down))
    }

    /// Parses `YYYY-MM-DD`; nil for anything else (including impossible dates like 2026-02-30).
    public init?(parsing text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.utf8.count == 10, parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
            let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]),
            (1...12).contains(month), (1...31).contains(day)
        else { return nil }
        let candidate = Day(number: Self.daysFromCivil(year: year, month: month, day: day))
        guard candidate.components == (year, month, day) else { return nil }
        self = candidate
    }

    public static func < (lhs: Day, rhs: Day) -> Bool { lhs.number < rhs.number }

    /// The day `count` days later (earlier when negative).
    public func adding(_ count: Int) -> Day { Day(number: number + count) }

    /// Midnight UTC at the start of the day.
    public var start: Date { Date(timeIntervalSince1970: Double(number) * 86_400) }

    public var description: String {
        let (y, m, d) = components
        return String(format: "%04d-%02d-%02d", y, m, d)
    }

    public init(from decoder: any Decoder) throws {
        let text = try decoder.singleValueContainer().decode(String.self)
        guard let day = Day(parsing: text) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "expected YYYY-MM-DD"))
        }
        self = day
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }

    /// Year, month, day.
    var components: (Int, Int, Int) {
        let (year, month, day) = CivilCalendar.date(fromDays: Int64(number))
        return (Int(year), Int(month), Int(day))
    }

    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        Int(CivilCalendar.days(year: Int64(year), month: Int64(month), day: Int64(day)))
    }
}
