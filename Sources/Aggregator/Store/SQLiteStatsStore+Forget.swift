import Foundation
import GRDB

/// What a store's `forget(fleet:gateway:)` removed.
public struct Forgotten: Sendable, Equatable {
    public var sessions: Int
    public var events: Int
    /// Whether the gateway was known at all.
    public var known: Bool
}

extension SQLiteStatsStore {
    /// The bucket a forgotten gateway's daily counts move into: not a valid gateway id (`~`),
    /// so it never meets a real one, and never listed as a gateway.
    public static let forgottenBucket = "~forgotten"

    /// Removes one gateway's personal records: its sessions, raw events, presence and state,
    /// refusals and dedupe state. Its daily counts (sessions, minutes at each level, pauses,
    /// trips, abort reasons) move into an anonymous bucket, so the fleet's totals stay.
    ///
    /// Meant for a gateway that no longer sends, with the aggregator stopped (it keeps the
    /// dedupe state in memory): messages it sent again would be counted anew.
    public func forget(fleet: String, gateway: String) async throws -> Forgotten {
        try await pool.write { db in
            let arguments: StatementArguments = [fleet, gateway]
            let known = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM gateway WHERE fleet = ? AND gw = ?", arguments: arguments) ?? 0
            let sessions = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM session WHERE fleet = ? AND gw = ?", arguments: arguments) ?? 0
            let events = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM event WHERE fleet = ? AND gw = ?", arguments: arguments) ?? 0
            try db.execute(sql: """
                INSERT INTO daily (fleet, gw, day, started, completed, aborted, l1, l2, l3, pauses, trips)
                    SELECT fleet, ?, day, started, completed, aborted, l1, l2, l3, pauses, trips FROM daily WHERE fleet = ? AND gw = ? AND true
                ON CONFLICT (fleet, gw, day) DO UPDATE SET started = started + excluded.started, completed = completed + excluded.completed,
                    aborted = aborted + excluded.aborted, l1 = l1 + excluded.l1, l2 = l2 + excluded.l2, l3 = l3 + excluded.l3,
                    pauses = pauses + excluded.pauses, trips = trips + excluded.trips
                """, arguments: [Self.forgottenBucket, fleet, gateway])
            try db.execute(sql: """
                INSERT INTO abort (fleet, gw, day, reason, count)
                    SELECT fleet, ?, day, reason, count FROM abort WHERE fleet = ? AND gw = ? AND true
                ON CONFLICT (fleet, gw, day, reason) DO UPDATE SET count = count + excluded.count
                """, arguments: [Self.forgottenBucket, fleet, gateway])
            for table in ["daily", "abort", "session", "event", "received", "stream", "refusal", "gateway"] {
                try db.execute(sql: "DELETE FROM \(table) WHERE fleet = ? AND gw = ?", arguments: arguments)
            }
            // Presence and state from before now (retained on the broker, sent again at every
            // subscribe) are ignored from now on; a gateway that comes back is known again.
            try db.execute(
                sql: "INSERT OR REPLACE INTO forgotten (fleet, gw, at) VALUES (?, ?, ?)",
                arguments: [fleet, gateway, Date().timeIntervalSince1970])
            return Forgotten(sessions: sessions, events: events, known: known > 0)
        }
    }

    /// Whether `gateway` was forgotten after `time` (its presence or state from then is stale).
    static func forgotten(_ gateway: GatewayKey, before time: Date, db: Database) throws -> Bool {
        guard let at = try Double.fetchOne(
            db.cachedStatement(sql: "SELECT at FROM forgotten WHERE fleet = ? AND gw = ?"), arguments: [gateway.fleet, gateway.gateway])
        else { return false }
        return time.timeIntervalSince1970 <= at
    }
}
