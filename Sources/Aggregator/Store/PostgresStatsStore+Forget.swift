import Foundation
import PostgresNIO

extension PostgresStatsStore {
    /// Removes one gateway's personal records, as ``SQLiteStatsStore/forget(fleet:gateway:)``
    /// does, under the gateway's lock (an instance ingesting its messages waits, then sees it
    /// forgotten).
    public func forget(fleet: String, gateway: String) async throws -> Forgotten {
        let bucket = SQLiteStatsStore.forgottenBucket
        return try await transaction { [logger] connection in
            try await Self.lock([GatewayKey(fleet: fleet, gateway: gateway)], connection, logger)
            func count(_ table: String) async throws -> Int {
                var result = 0
                for try await value in try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "SELECT COUNT(*)::int8 FROM \(table) WHERE fleet = $1 AND gw = $2",
                        binds: { var binds = PostgresBindings(); binds.append(fleet); binds.append(gateway); return binds }()),
                    logger: logger
                ).decode(Int64.self) {
                    result = Int(value)
                }
                return result
            }
            let known = try await count("gateway"), sessions = try await count("session"), events = try await count("event")
            try await connection.query(
                """
                INSERT INTO daily AS d (fleet, gw, day, started, completed, aborted, l1, l2, l3, pauses, trips)
                    SELECT fleet, \(bucket), day, started, completed, aborted, l1, l2, l3, pauses, trips FROM daily
                    WHERE fleet = \(fleet) AND gw = \(gateway)
                ON CONFLICT (fleet, gw, day) DO UPDATE SET started = d.started + excluded.started,
                    completed = d.completed + excluded.completed, aborted = d.aborted + excluded.aborted,
                    l1 = d.l1 + excluded.l1, l2 = d.l2 + excluded.l2, l3 = d.l3 + excluded.l3,
                    pauses = d.pauses + excluded.pauses, trips = d.trips + excluded.trips
                """, logger: logger)
            try await connection.query(
                """
                INSERT INTO abort_reason AS a (fleet, gw, day, reason, count)
                    SELECT fleet, \(bucket), day, reason, count FROM abort_reason WHERE fleet = \(fleet) AND gw = \(gateway)
                ON CONFLICT (fleet, gw, day, reason) DO UPDATE SET count = a.count + excluded.count
                """, logger: logger)
            for table in ["daily", "abort_reason", "session", "event", "received", "stream", "refusal", "clock_offset", "gateway"] {
                try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "DELETE FROM \(table) WHERE fleet = $1 AND gw = $2",
                        binds: { var binds = PostgresBindings(); binds.append(fleet); binds.append(gateway); return binds }()),
                    logger: logger)
            }
            try await connection.query(
                """
                INSERT INTO forgotten (fleet, gw, at) VALUES (\(fleet), \(gateway), \(Date().timeIntervalSince1970))
                ON CONFLICT (fleet, gw) DO UPDATE SET at = excluded.at
                """, logger: logger)
            return Forgotten(sessions: sessions, events: events, known: known > 0)
        }
    }
}
