import Aggregator
import Foundation
import Testing

@Suite("Days and regimen adherence")
struct CalendarTests {
    @Test("days parse and print as UTC YYYY-MM-DD, refusing impossible dates")
    func days() {
        #expect(Day(parsing: "2026-11-27")?.description == "2026-11-27")
        #expect(Day(parsing: "2024-02-29") != nil)
        for bad in ["2026-02-29", "2026-02-30", "2026-13-01", "2026-1-01", "26-11-27", "2026-11-27T00", "", "yyyy-mm-dd"] {
            #expect(Day(parsing: bad) == nil, "\(bad)")
        }
        #expect(Day(Date(timeIntervalSince1970: 1_795_780_800)).description == "2026-11-27")
        #expect(Day(Date(timeIntervalSince1970: 1_795_737_600 - 1)).description == "2026-11-26")  // one second before midnight
        #expect(Day(parsing: "1970-01-01")?.number == 0)
        #expect(Day(parsing: "2000-03-01").map { $0.adding(-1).description } == "2000-02-29")
    }

    @Test("loading counts days, maintenance counts weeks of 1-3; the current day and week count only once done")
    func adherence() throws {
        let start = try #require(Day(parsing: "2026-01-01"))
        var completed: [Day: Int] = [:]
        // Loading: every day but the 10th and 20th.
        for offset in 0..<56 where offset != 9 && offset != 19 { completed[start.adding(offset)] = 1 }
        // Maintenance week 1: 2 sessions; week 2: none; week 3: 5 (too many); week 4 (current): 1.
        completed[start.adding(57)] = 1
        completed[start.adding(60)] = 1
        for offset in 70..<75 { completed[start.adding(offset)] = 1 }
        completed[start.adding(77)] = 1
        let today = start.adding(78)
        let result = Adherence(start: start, completed: completed, today: today)
        #expect(result == Adherence(loadingDays: 56, loadingAdherentDays: 54, maintenanceWeeks: 4, maintenanceAdherentWeeks: 2))
        // Day 3 of use with no session yet today: two days judged, both kept.
        let early = Adherence(start: start, completed: [start: 1, start.adding(1): 1], today: start.adding(2))
        #expect(early == Adherence(loadingDays: 2, loadingAdherentDays: 2))
        #expect(early.ratio == 1)
        #expect(Adherence(start: start, completed: [:], today: start).ratio == nil)
    }
}
