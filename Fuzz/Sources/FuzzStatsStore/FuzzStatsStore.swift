import Aggregator
import Dispatch
import Foundation
import SpectraProtocol

/// The aggregator's store under random envelopes that the ingest decoder accepts, extremes of
/// every range included: applying them and computing the statistics never traps, and the
/// statistics hold their invariants (completeness within 0...1, totals finite and not negative,
/// the gateways' figures adding up to the fleet's, every answer encodable as JSON).
///
/// Each input is a script: its bytes pick gateways, epochs, seqs, event types and field values
/// (mostly the edges of their ranges). Every envelope is written and read back through
/// `Envelope.decodeForIngest`, so only what a real aggregator would accept reaches the store.
@_cdecl("LLVMFuzzerTestOneInput")
public func test(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    // One database serves many inputs, each in a fleet of its own (making a database per input
    // ran about 10 inputs a second); it is made anew every 2,000 inputs so it stays small.
    let input = Inputs.next()
    var script = Script(bytes: UnsafeRawBufferPointer(start: start, count: count), fleet: try! Identifier("f\(input % 2_000)"))
    let batches = script.batches()
    let fleet = script.fleet.rawValue
    let store = Inputs.store(for: input)
    let done = DispatchSemaphore(value: 0)
    Task {
        await check(batches, fleet: fleet, store: store)
        done.signal()
    }
    done.wait()
    return 0
}

/// The shared database and the input counter (libFuzzer calls one input at a time).
enum Inputs {
    nonisolated(unsafe) private static var count = 0
    nonisolated(unsafe) private static var current: SQLiteStatsStore?
    static let folder = FileManager.default.temporaryDirectory.appendingPathComponent("fuzz-store-\(getpid())")

    static func next() -> Int {
        defer { count += 1 }
        return count
    }

    static func store(for input: Int) -> SQLiteStatsStore {
        if input % 2_000 == 0 || current == nil {
            current = nil
            try? FileManager.default.removeItem(at: folder)
            do {
                current = try SQLiteStatsStore(path: folder.appendingPathComponent("stats.sqlite").path, newEpochsPerGatewayPerDay: 4)
            } catch {
                preconditionFailure("cannot make the store: \(error)")
            }
        }
        return current!
    }
}

/// The day the statistics are computed for: 2026-11-27 12:00 UTC.
let now = Date(timeIntervalSince1970: 1_795_780_800)

func check(_ batches: [[IngestRecord]], fleet: String, store: SQLiteStatsStore) async {
    do {
        for batch in batches { _ = try await store.apply(batch) }
        try await store.compact(now: now)
        let summary = try await store.summary(fleet: fleet, now: now)
        let gateways = try await store.gateways(fleet: fleet, search: nil, now: now)
        let daily = try await store.daily(fleet: fleet, from: Day(now).adding(-365), to: Day(now))
        expectInvariants(summary, gateways, daily)
        _ = try await store.prune(before: Day(now).adding(-1))
        expectInvariants(try await store.summary(fleet: fleet, now: now), try await store.gateways(fleet: fleet, search: nil, now: now), [])
    } catch {
        preconditionFailure("the store failed on accepted input: \(error)")
    }
}

func expectInvariants(_ summary: FleetSummary, _ gateways: [GatewaySummary], _ daily: [DailyStats]) {
    func expectSane(_ totals: SessionTotals, _ what: String) {
        precondition([totals.started, totals.completed, totals.aborted, totals.pauses, totals.safetyTrips].allSatisfy { $0 >= 0 }, "\(what): a negative count \(totals)")
        precondition(totals.levelMinutes.values.allSatisfy { $0.isFinite && $0 >= 0 }, "\(what): level minutes \(totals.levelMinutes)")
        if let rate = totals.completionRate { precondition((0...1).contains(rate), "\(what): completion rate \(rate)") }
    }
    func expectSane(_ completeness: Completeness, _ what: String) {
        precondition(completeness.received >= 0 && completeness.received <= completeness.expected, "\(what): \(completeness)")
        precondition(completeness.evicted >= 0 && completeness.evicted <= completeness.expected - completeness.received, "\(what): \(completeness)")
        if let ratio = completeness.ratio { precondition(ratio.isFinite && (0...1).contains(ratio), "\(what): ratio \(ratio)") }
    }
    expectSane(summary.sessions, "fleet")
    expectSane(summary.completeness, "fleet")
    if let ratio = summary.adherenceRatio { precondition((0...1).contains(ratio), "fleet adherence \(ratio)") }
    var started = 0, completed = 0, aborted = 0, pauses = 0, trips = 0, received = 0, expected = 0
    var minutes = 0.0
    for gateway in gateways {
        expectSane(gateway.sessions, gateway.gateway)
        expectSane(gateway.completeness, gateway.gateway)
        if let ratio = gateway.adherenceRatio { precondition((0...1).contains(ratio), "\(gateway.gateway) adherence \(ratio)") }
        started += gateway.sessions.started
        completed += gateway.sessions.completed
        aborted += gateway.sessions.aborted
        pauses += gateway.sessions.pauses
        trips += gateway.sessions.safetyTrips
        received += gateway.completeness.received
        expected += gateway.completeness.expected
        minutes += gateway.sessions.levelMinutes.values.reduce(0, +)
    }
    let fleet = summary.sessions
    precondition(
        (started, completed, aborted, pauses, trips) == (fleet.started, fleet.completed, fleet.aborted, fleet.pauses, fleet.safetyTrips),
        "the gateways' sessions do not add up to the fleet's: \(gateways.map(\.sessions)) against \(fleet)")
    precondition(received == summary.completeness.received && expected == summary.completeness.expected, "completeness does not add up")
    let fleetMinutes = fleet.levelMinutes.values.reduce(0, +)
    precondition(abs(minutes - fleetMinutes) <= 1e-9 * max(1, fleetMinutes), "level minutes \(minutes) against \(fleetMinutes)")
    precondition(summary.gateways == gateways.count, "\(summary.gateways) gateways against \(gateways.count) listed")
    for day in daily { expectSane(day.sessions, "\(day.day)") }
    let encoder = JSONEncoder()
    do {
        _ = try encoder.encode(summary)
        _ = try encoder.encode(gateways)
        _ = try encoder.encode(daily)
    } catch {
        preconditionFailure("a statistic is not encodable as JSON: \(error)")
    }
}

/// Reads choices from the input's bytes (zeros once they run out).
struct Script {
    let bytes: UnsafeRawBufferPointer
    let fleet: Identifier
    var index = 0

    mutating func byte() -> UInt8 {
        defer { index += 1 }
        return index < bytes.count ? bytes[index] : 0
    }

    mutating func word() -> UInt64 {
        (0..<8).reduce(0) { value, _ in value << 8 | UInt64(byte()) }
    }

    /// Mostly an edge of `range`, else a value inside it.
    mutating func int(_ range: ClosedRange<Int>) -> Int {
        switch byte() % 6 {
        case 0: range.lowerBound
        case 1: range.upperBound
        case 2: range.upperBound &- 1
        case 3: range.lowerBound &+ Int(byte() % 4)
        default: range.lowerBound &+ Int(word() % UInt64(max(1, range.upperBound &- range.lowerBound)))
        }
    }

    mutating func double(_ range: ClosedRange<Double>) -> Double {
        switch byte() % 5 {
        case 0: range.lowerBound
        case 1: range.upperBound
        case 2: range.upperBound.nextDown
        default: range.lowerBound + (range.upperBound - range.lowerBound) * Double(word() % 1_000_001) / 1_000_000
        }
    }

    mutating func batches() -> [[IngestRecord]] {
        let gatewayIDs = (0..<3).map { try! Identifier("gw-\($0)") }
        let epochs = (0..<6).map { UUID(uuid: (UInt8($0), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)) }
        let boots = (0..<2).map { UUID(uuid: (9, UInt8($0), 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)) }
        var batches: [[IngestRecord]] = [[]]
        let records = Int(byte() % 64)
        for _ in 0..<records {
            if byte() % 16 == 0 { batches.append([]) }
            let gateway = gatewayIDs[Int(byte()) % gatewayIDs.count]
            let seq: UInt64 = switch byte() % 5 {
            case 0: WireRanges.seq.upperBound
            case 1: UInt64(byte() % 8)
            default: UInt64(byte() % 64) + 1
            }
            let ts = Date(timeIntervalSince1970: double(WireRanges.productEpoch.timeIntervalSince1970...now.timeIntervalSince1970 + 86_000))
            let message = self.message(ts: ts)
            let envelope = Envelope(
                fleet: fleet, gateway: gateway, epoch: epochs[Int(byte()) % epochs.count], seq: seq, boot: boots[Int(byte()) % boots.count],
                monoNanos: word() >> 1, timestamp: ts, synced: byte() % 3 != 0, message: message)
            // Only what the aggregator's decoder accepts reaches the store.
            let bytes = envelope.encodedBytes()
            guard let read = try? Envelope.decodeForIngest(bytes) else { continue }
            let receivedAt = now.addingTimeInterval(-double(0...400_000))
            guard (try? WireRanges.checkArrival(read, receivedAt: receivedAt)) != nil else { continue }
            batches[batches.count - 1].append(.envelope(
                read, receivedAt: receivedAt, historical: byte() % 4 == 0, payload: read.kind == .event ? Data(bytes) : nil))
        }
        return batches
    }

    mutating func message(ts: Date) -> Message {
        let session = try! Identifier("s-\(byte() % 4)")
        let regimenDay = byte() % 3 == 0 ? nil : Optional(int(WireRanges.regimenDays(at: ts)))
        func summary(reason: AbortReason?) -> SessionSummary {
            var levels: [String: Double] = [:]
            for level in ["1", "2", "3"] where byte() % 2 == 0 { levels[level] = double(WireRanges.stimulatingSeconds) }
            return SessionSummary(
                sessionId: session, durationS: double(WireRanges.sessionDurationSeconds), stimulatingS: double(WireRanges.stimulatingSeconds),
                levelSeconds: levels, pauses: int(WireRanges.pauses), chargeMicroCoulombs: ["ch": double(WireRanges.chargeMicroCoulombs)],
                reason: reason, regimenPhase: nil, regimenDay: regimenDay)
        }
        switch byte() % 8 {
        case 0, 1:
            return .telemetry(Telemetry(
                channels: [], batteryPct: double(WireRanges.batteryPct), headbandTempC: double(WireRanges.headbandTempC),
                agent: .init(
                    outboxDepth: int(WireRanges.outboxDepth), outboxBytes: int(WireRanges.outboxBytes),
                    oldestUnackedS: double(WireRanges.oldestUnackedSeconds), reconnects: int(WireRanges.reconnects), rssKiB: int(WireRanges.rssKiB))))
        case 2:
            return .event(.sessionStarted(SessionStarted(
                sessionId: session, level: int(1...3), profileVersion: "p", channels: ["ch"], regimenPhase: nil, regimenDay: regimenDay)))
        case 3: return .event(.sessionCompleted(summary(reason: nil)))
        case 4: return .event(.sessionAborted(summary(reason: AbortReason.known[Int(byte()) % AbortReason.known.count])))
        case 5: return .event(.outboxEvicted(OutboxEvicted(class: "telemetry", count: int(WireRanges.evictedCount), bytes: int(WireRanges.outboxBytes))))
        case 6: return .event(.safetyTrip(SafetyTrip(sessionId: session, rule: "r", channel: nil, value: double(WireRanges.tripValue), limit: 1)))
        default: return .event(.sessionLevelChanged(LevelChanged(sessionId: session, from: int(1...3), to: int(1...3))))
        }
    }
}
