import Foundation
import Testing
@testable import SpectraProtocol

@Suite("Timestamps")
struct TimestampTests {
    @Test("formatting rounds to the millisecond and matches Foundation's calendar", arguments: [
        0.0, 1_795_748_706.123, 951_782_400.5, -86_400.25, 4_102_444_799.999, 1_709_164_800.0,
    ])
    func formatMatchesCalendar(seconds: Double) throws {
        let date = Date(timeIntervalSince1970: seconds)
        let text = WireFormat.timestamp(date)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date.addingTimeInterval(0.0004))
        let expectedPrefix = String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d", parts.year!, parts.month!, parts.day!, parts.hour!, parts.minute!, parts.second!)
        #expect(text.hasPrefix(expectedPrefix))
        let parsed = try #require(WireFormat.parseTimestamp(text))
        #expect(abs(parsed.timeIntervalSince1970 - seconds) < 0.0006)
    }

    @Test("offsets and malformed text")
    func parsing() {
        #expect(WireFormat.parseTimestamp("2026-11-27T04:05:06.123+01:00") == WireFormat.parseTimestamp("2026-11-27T03:05:06.123Z"))
        for bad in ["2026-13-01T00:00:00Z", "2026-11-27 03:05:06Z", "2026-11-27T03:05:06", "2026-11-27T03:05:06.Z", "", "2026-11-27T03:05:06Zjunk"] {
            #expect(WireFormat.parseTimestamp(bad) == nil, "\(bad)")
        }
    }
}
