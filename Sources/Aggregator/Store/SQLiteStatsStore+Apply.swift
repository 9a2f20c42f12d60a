import Foundation
import GRDB
import SpectraProtocol

extension SQLiteStatsStore {
    /// Per-day counters gathered over one batch, written as one upsert per `(gateway, day)`.
    struct DailyDelta {
        var started = 0, completed = 0, aborted = 0, pauses = 0, trips = 0
        var levelSeconds = [0.0, 0.0, 0.0]
    }

    struct DailyKey: Hashable {
        var gateway: GatewayKey
        var day: Int
    }

    struct LatestTelemetry {
        var at: Double
        var agent: Telemetry.Agent
        var batteryPct: Double
    }

    /// What a batch saw of one gateway: when it was last heard from, its newest live telemetry.
    struct GatewayActivity {
        var lastSeen = 0.0
        var telemetry: LatestTelemetry?
    }

    public func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome {
        try await pool.writeWithoutTransaction { db in
            var outcome = ApplyOutcome()
            var staged = Staged()
            try db.inTransaction {
                (outcome, staged) = try self.apply(records, db)
                return .commit
            }
            // Only a committed batch moves the watermarks later batches dedupe against: after a
            // rollback (a full disk), the same records come again and must count again.
            self.withCaches { caches in
                caches.streams.merge(staged.streams) { _, committed in committed }
                caches.regimenStarts.merge(staged.regimenStarts) { _, committed in committed }
            }
            return outcome
        }
    }

    /// What a batch changes in the caches, handed over once its transaction commits.
    struct Staged {
        var streams: [StreamKey: Stream] = [:]
        var regimenStarts: [GatewayKey: Int] = [:]
    }

    /// Applies `records` in `db`'s open transaction; returns the outcome and the cached state
    /// it moved, for the caches once the transaction commits.
    private func apply(_ records: [IngestRecord], _ db: Database) throws -> (ApplyOutcome, Staged) {
        var outcome = ApplyOutcome()
        var daily: [DailyKey: DailyDelta] = [:]
        var aborts: [DailyKey: [String: Int]] = [:]
        var activity: [GatewayKey: GatewayActivity] = [:]
        /// The earliest regimen start each gateway's events in this batch imply.
        var regimen: [GatewayKey: Int] = [:]
        var staged = Staged()
        let commitTime = Date().timeIntervalSince1970
        let insertKey = try db.cachedStatement(sql: "INSERT OR IGNORE INTO received (fleet, gw, epoch, seq) VALUES (?, ?, ?, ?)")
        let deleteKey = try db.cachedStatement(sql: "DELETE FROM received WHERE fleet = ? AND gw = ? AND epoch = ? AND seq = ?")
        let insertEvent = try db.cachedStatement(sql: """
            INSERT INTO event (fleet, gw, epoch, seq, day, ts, type, body, receivedAt)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """)

        try withCaches { caches in
            for record in records {
                switch record {
                case .envelope(let envelope, let receivedAt, let historical, let payload):
                    let gateway = GatewayKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue)
                    let streamKey = StreamKey(fleet: gateway.fleet, gateway: gateway.gateway, epoch: envelope.epoch)
                    var stream = staged.streams[streamKey] ?? caches.streams[streamKey]
                        ?? Stream(
                            epochText: envelope.epoch.wireString, minSeq: envelope.seq, maxSeq: envelope.seq, count: 0, evicted: 0,
                            contiguous: 0, gapSince: nil)
                    if envelope.seq <= stream.contiguous {
                        outcome.duplicates += 1
                        continue
                    }
                    if envelope.seq == stream.contiguous + 1 {
                        // In order: the watermark alone records it; fold in keys that were
                        // waiting above it.
                        stream.contiguous += 1
                        while stream.pendingAbove > 0 {
                            try deleteKey.run(gateway.fleet, gateway.gateway, stream.epochText, Int64(stream.contiguous + 1))
                            guard db.changesCount == 1 else { break }
                            stream.contiguous += 1
                            stream.pendingAbove -= 1
                        }
                    } else {
                        try insertKey.run(gateway.fleet, gateway.gateway, stream.epochText, Int64(envelope.seq))
                        if db.changesCount == 0 {
                            outcome.duplicates += 1
                            continue
                        }
                        stream.pendingAbove += 1
                    }
                    stream.minSeq = min(stream.minSeq, envelope.seq)
                    stream.maxSeq = max(stream.maxSeq, envelope.seq)
                    stream.count += 1
                    outcome.accepted += 1

                    let at = effectiveTime(envelope, receivedAt: receivedAt, historical: historical, caches: &caches)
                    if envelope.synced {
                        let lag = commitTime - envelope.timestamp.timeIntervalSince1970
                        outcome.maxLagSeconds = max(outcome.maxLagSeconds ?? lag, lag)
                        if !historical { outcome.latenciesSeconds.append(lag) }
                    }
                    let dayKey = DailyKey(gateway: gateway, day: Day(Date(timeIntervalSince1970: at)).number)
                    let latest: LatestTelemetry?
                    if case .telemetry(let body) = envelope.message, !historical {
                        latest = LatestTelemetry(at: at, agent: body.agent, batteryPct: body.batteryPct)
                    } else {
                        latest = nil
                    }
                    update(&activity[gateway, default: GatewayActivity()], seen: receivedAt.timeIntervalSince1970, latest)
                    if case .event(let event) = envelope.message {
                        outcome.acceptedEvents += 1
                        try insertEvent.run(
                            gateway.fleet, gateway.gateway, stream.epochText, Int64(envelope.seq), dayKey.day, at,
                            event.type.rawValue, payload ?? envelope.encoded(), receivedAt.timeIntervalSince1970)
                        try apply(
                            event, gateway: gateway, day: dayKey, at: at, daily: &daily, aborts: &aborts, regimen: &regimen, stream: &stream, db)
                    }
                    staged.streams[streamKey] = stream

                case .status(let fleet, let gw, let status, let receivedAt, let retained):
                    let gateway = GatewayKey(fleet: fleet.rawValue, gateway: gw.rawValue)
                    // The status the broker kept (sent again at every subscribe, so at every
                    // restart of the aggregator) is no sign of life: it moves `lastSeen` only
                    // for a gateway never heard from before.
                    try db.cachedStatement(sql: """
                        INSERT INTO gateway (fleet, gw, online, statusAt, boot, agentVersion, lastSeen) VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (fleet, gw) DO UPDATE SET online = excluded.online, statusAt = excluded.statusAt,
                            boot = excluded.boot, agentVersion = COALESCE(excluded.agentVersion, agentVersion),
                            lastSeen = iif(?, COALESCE(lastSeen, excluded.lastSeen), MAX(COALESCE(lastSeen, 0), excluded.lastSeen))
                        """).execute(arguments: [
                            gateway.fleet, gateway.gateway, status.online, status.ts.timeIntervalSince1970, status.boot.wireString,
                            status.agentVersion, receivedAt.timeIntervalSince1970, retained,
                        ])
                    outcome.presence += 1
                    outcome.changedGateways.insert(gateway)

                case .state(let fleet, let gw, let state, _):
                    let gateway = GatewayKey(fleet: fleet.rawValue, gateway: gw.rawValue)
                    let versions = String(decoding: WireFormat.encode(state.configVersions), as: UTF8.self)
                    let groups = String(decoding: WireFormat.encode(state.groups), as: UTF8.self)
                    try db.cachedStatement(sql: """
                        INSERT INTO gateway (fleet, gw, agentVersion, firmware, maxLevel, unlockedLevel, configVersions, groups)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (fleet, gw) DO UPDATE SET agentVersion = excluded.agentVersion, firmware = excluded.firmware,
                            maxLevel = excluded.maxLevel, unlockedLevel = excluded.unlockedLevel,
                            configVersions = excluded.configVersions, groups = excluded.groups
                        """).execute(arguments: [
                            gateway.fleet, gateway.gateway, state.agentVersion, state.firmware, state.levelLimits.maxLevel,
                            state.levelLimits.unlockedLevel, versions, groups,
                        ])
                    outcome.presence += 1
                    outcome.changedGateways.insert(gateway)
                }
            }
        }

        for (key, delta) in daily {
            try db.cachedStatement(sql: """
                INSERT INTO daily (fleet, gw, day, started, completed, aborted, l1, l2, l3, pauses, trips)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (fleet, gw, day) DO UPDATE SET started = started + excluded.started,
                    completed = completed + excluded.completed, aborted = aborted + excluded.aborted,
                    l1 = l1 + excluded.l1, l2 = l2 + excluded.l2, l3 = l3 + excluded.l3,
                    pauses = pauses + excluded.pauses, trips = trips + excluded.trips
                """).run(
                    key.gateway.fleet, key.gateway.gateway, key.day, delta.started, delta.completed, delta.aborted,
                    delta.levelSeconds[0], delta.levelSeconds[1], delta.levelSeconds[2], delta.pauses, delta.trips)
        }
        for (key, reasons) in aborts {
            for (reason, count) in reasons {
                try db.cachedStatement(sql: """
                    INSERT INTO abort (fleet, gw, day, reason, count) VALUES (?, ?, ?, ?, ?)
                    ON CONFLICT (fleet, gw, day, reason) DO UPDATE SET count = count + excluded.count
                    """).execute(arguments: [key.gateway.fleet, key.gateway.gateway, key.day, reason, count])
            }
        }
        // One statement per gateway: when it was last heard from and, from its newest live
        // telemetry (unless the row holds newer), its agent's health.
        let saveActivity = try db.cachedStatement(sql: """
            INSERT INTO gateway (fleet, gw, lastSeen, outboxDepth, outboxBytes, batteryPct, rssKiB, reconnects, telemetryAt)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (fleet, gw) DO UPDATE SET lastSeen = MAX(COALESCE(lastSeen, 0), excluded.lastSeen),
                outboxDepth = iif(excluded.telemetryAt >= COALESCE(telemetryAt, 0), excluded.outboxDepth, outboxDepth),
                outboxBytes = iif(excluded.telemetryAt >= COALESCE(telemetryAt, 0), excluded.outboxBytes, outboxBytes),
                batteryPct = iif(excluded.telemetryAt >= COALESCE(telemetryAt, 0), excluded.batteryPct, batteryPct),
                rssKiB = iif(excluded.telemetryAt >= COALESCE(telemetryAt, 0), excluded.rssKiB, rssKiB),
                reconnects = iif(excluded.telemetryAt >= COALESCE(telemetryAt, 0), excluded.reconnects, reconnects),
                telemetryAt = iif(excluded.telemetryAt >= COALESCE(telemetryAt, 0), excluded.telemetryAt, telemetryAt)
            """)
        for (gateway, seen) in activity {
            let latest = seen.telemetry
            try saveActivity.run(
                gateway.fleet, gateway.gateway, seen.lastSeen, latest?.agent.outboxDepth, latest?.agent.outboxBytes, latest?.batteryPct,
                latest?.agent.rssKiB, latest?.agent.reconnects, latest?.at)
        }
        outcome.changedGateways.formUnion(activity.keys)
        // Day 1 of each wearer's regimen: the earliest any event implies, written only when
        // earlier than what is committed.
        let earlierStarts = withCaches { caches in regimen.filter { key, start in caches.regimenStarts[key].map { start < $0 } ?? true } }
        for (gateway, start) in earlierStarts {
            try db.cachedStatement(sql: """
                INSERT INTO gateway (fleet, gw, regimenStart) VALUES (?, ?, ?)
                ON CONFLICT (fleet, gw) DO UPDATE SET regimenStart = MIN(COALESCE(regimenStart, excluded.regimenStart), excluded.regimenStart)
                """).execute(arguments: [gateway.fleet, gateway.gateway, start])
            staged.regimenStarts[gateway] = start
        }
        for (key, stream) in staged.streams { try Self.save(stream, key, db) }
        return (outcome, staged)
    }

    /// Folds one accepted envelope into what the batch saw of its gateway.
    private func update(_ activity: inout GatewayActivity, seen: Double, _ telemetry: LatestTelemetry?) {
        activity.lastSeen = max(activity.lastSeen, seen)
        if let telemetry, telemetry.at >= activity.telemetry?.at ?? -.infinity { activity.telemetry = telemetry }
    }

    /// When an envelope happened, for putting it on a day: `ts` when the gateway's clock was
    /// synced; otherwise `ts` corrected by the offset observed on that boot's live messages
    /// (receive time minus `ts`), or the receive time when no live message of that boot has
    /// been seen yet.
    private func effectiveTime(_ envelope: Envelope, receivedAt: Date, historical: Bool, caches: inout Caches) -> Double {
        let ts = envelope.timestamp.timeIntervalSince1970
        if envelope.synced { return ts }
        let key = BootKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue, boot: envelope.boot)
        if !historical {
            caches.clockOffsets[key] = receivedAt.timeIntervalSince1970 - ts
        }
        if let offset = caches.clockOffsets[key] { return ts + offset }
        return receivedAt.timeIntervalSince1970
    }

    private func apply(
        _ event: Event, gateway: GatewayKey, day: DailyKey, at: Double, daily: inout [DailyKey: DailyDelta],
        aborts: inout [DailyKey: [String: Int]], regimen: inout [GatewayKey: Int], stream: inout Stream, _ db: Database
    ) throws {
        /// Day 1 of the wearer's regimen: the earliest implied by any event's `regimenDay`.
        func noteRegimen(_ regimenDay: Int?) {
            guard let regimenDay, regimenDay >= 1 else { return }
            let start = day.day - (regimenDay - 1)
            regimen[gateway] = min(regimen[gateway] ?? start, start)
        }
        switch event {
        case .sessionStarted(let body):
            daily[day, default: DailyDelta()].started += 1
            try db.cachedStatement(sql: """
                INSERT INTO session (fleet, gw, sessionId, day, startedAt, level, phase, regimenDay) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (fleet, gw, sessionId) DO UPDATE SET day = excluded.day, startedAt = excluded.startedAt,
                    level = excluded.level, phase = COALESCE(phase, excluded.phase), regimenDay = COALESCE(regimenDay, excluded.regimenDay)
                """).run(
                    gateway.fleet, gateway.gateway, body.sessionId.rawValue, day.day, at, body.level, body.regimenPhase?.rawValue,
                    body.regimenDay)
            noteRegimen(body.regimenDay)
        case .sessionLevelChanged(let body):
            // The session's row is made if its start has not arrived yet (an end may come first).
            try db.cachedStatement(sql: """
                INSERT INTO session (fleet, gw, sessionId, day, levelChanges) VALUES (?, ?, ?, ?, 1)
                ON CONFLICT (fleet, gw, sessionId) DO UPDATE SET levelChanges = levelChanges + 1
                """).execute(arguments: [gateway.fleet, gateway.gateway, body.sessionId.rawValue, day.day])
        case .sessionCompleted(let summary), .sessionAborted(let summary):
            let completed: Bool
            if case .sessionCompleted = event { completed = true } else { completed = false }
            var delta = daily[day, default: DailyDelta()]
            if completed { delta.completed += 1 } else { delta.aborted += 1 }
            delta.pauses += summary.pauses
            for level in 1...3 { delta.levelSeconds[level - 1] += summary.levelSeconds["\(level)"] ?? 0 }
            daily[day] = delta
            if !completed { aborts[day, default: [:]][summary.reason?.rawValue ?? "unknown", default: 0] += 1 }
            try db.cachedStatement(sql: """
                INSERT INTO session (fleet, gw, sessionId, day, outcome, reason, endedAt, endDay, durationS, stimulatingS,
                    l1, l2, l3, pauses, phase, regimenDay)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (fleet, gw, sessionId) DO UPDATE SET outcome = excluded.outcome, reason = excluded.reason,
                    endedAt = excluded.endedAt, endDay = excluded.endDay, durationS = excluded.durationS,
                    stimulatingS = excluded.stimulatingS, l1 = excluded.l1, l2 = excluded.l2, l3 = excluded.l3,
                    pauses = excluded.pauses, phase = COALESCE(excluded.phase, phase), regimenDay = COALESCE(excluded.regimenDay, regimenDay)
                """).run(
                    gateway.fleet, gateway.gateway, summary.sessionId.rawValue, day.day,
                    completed ? "completed" : "aborted", summary.reason?.rawValue, at, day.day, summary.durationS,
                    summary.stimulatingS, summary.levelSeconds["1"] ?? 0, summary.levelSeconds["2"] ?? 0,
                    summary.levelSeconds["3"] ?? 0, summary.pauses, summary.regimenPhase?.rawValue, summary.regimenDay)
            noteRegimen(summary.regimenDay)
        case .safetyTrip(let trip):
            daily[day, default: DailyDelta()].trips += 1
            if let sessionId = trip.sessionId {
                try db.cachedStatement(sql: """
                    INSERT INTO session (fleet, gw, sessionId, day, trips) VALUES (?, ?, ?, ?, 1)
                    ON CONFLICT (fleet, gw, sessionId) DO UPDATE SET trips = trips + 1
                    """).execute(arguments: [gateway.fleet, gateway.gateway, sessionId.rawValue, day.day])
            }
        case .outboxEvicted(let eviction):
            stream.evicted += eviction.count
        case .sessionPaused, .sessionResumed, .configApplied, .configRejected, .firmwareProgress, .outboxReset:
            break
        }
    }
}
