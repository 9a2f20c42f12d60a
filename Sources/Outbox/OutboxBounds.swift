import Foundation
import GRDB

/// Storage pressure: telemetry is rolled up (per minute), then evicted oldest first; events
/// and state are evicted only past the hard cap.
enum OutboxBounds {
    struct Limits: Sendable {
        var softBytes: Int
        var hardBytes: Int
    }

    struct Outcome: Sendable {
        var rolledUp = 0
        var evictions: [Outbox.Eviction] = []
        /// Payload bytes stored after enforcement.
        var bytes = 0
        /// Rows removed (rolled up or evicted).
        var removedRows = 0
    }

    /// Brings `bytes` (the payload bytes stored now) under the limits.
    static func enforce(bytes stored: Int, limits: Limits, rollup: (@Sendable ([[UInt8]]) -> [UInt8]?)?, db: Database) throws -> Outcome {
        var outcome = Outcome()
        var bytes = stored
        defer { outcome.bytes = bytes }
        guard bytes > limits.softBytes else {
            outcome.bytes = bytes
            return outcome
        }
        // 1. Roll old telemetry up, a minute (and a topic) at a time.
        if let rollup {
            let rows = try OutboxStore.oldest(.telemetry, limit: 5000, db: db)
            let groups = Dictionary(grouping: rows) { "\(Int($0.createdAt / 60))|\($0.topic)" }
            for (_, group) in groups.sorted(by: { $0.value[0].seq < $1.value[0].seq }) where group.count > 1 {
                guard bytes > limits.softBytes else { break }
                let ordered = group.sorted { $0.seq < $1.seq }
                guard let merged = rollup(ordered.map(\.payload)) else { continue }
                try OutboxStore.delete(ordered.dropFirst().map(\.seq), db: db)
                try db.execute(sql: "UPDATE message SET payload = ? WHERE seq = ?", arguments: [Data(merged), Int64(ordered[0].seq)])
                bytes -= ordered.reduce(0) { $0 + $1.payload.count } - merged.count
                outcome.rolledUp += ordered.count - 1
                outcome.removedRows += ordered.count - 1
            }
        }
        // 2. Evict the oldest telemetry.
        if bytes > limits.softBytes {
            let (count, freed) = try evict(.telemetry, over: bytes - limits.softBytes, db: db)
            bytes -= freed
            outcome.removedRows += count
            outcome.evictions.append(.init(messageClass: .telemetry, count: count, bytes: freed))
        }
        // 3. Past the hard cap, state and then events go too.
        for messageClass in [MessageClass.state, .event] where bytes > limits.hardBytes {
            let (count, freed) = try evict(messageClass, over: bytes - limits.hardBytes, db: db)
            bytes -= freed
            outcome.removedRows += count
            outcome.evictions.append(.init(messageClass: messageClass, count: count, bytes: freed))
        }
        outcome.bytes = bytes
        return outcome
    }

    /// Deletes the oldest rows of a class until `excess` bytes are freed.
    private static func evict(_ messageClass: MessageClass, over excess: Int, db: Database) throws -> (Int, Int) {
        var freed = 0
        var count = 0
        while freed < excess {
            let rows = try OutboxStore.oldest(messageClass, limit: 500, db: db)
            if rows.isEmpty { break }
            var victims: [UInt64] = []
            for row in rows where freed < excess {
                victims.append(row.seq)
                freed += row.payload.count
            }
            try OutboxStore.delete(victims, db: db)
            count += victims.count
        }
        return (count, freed)
    }
}
