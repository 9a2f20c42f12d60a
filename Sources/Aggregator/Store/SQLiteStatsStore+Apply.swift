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

    /// - Throws: ``StoreFailure``: `unavailable` when SQLite cannot commit now (full, locked, I/O),
    ///   `refused` for anything else SQLite refuses in the batch.
    public func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome {
        do {
            return try await applyInTransaction(records)
        } catch let error as DatabaseError {
            throw StoreFailure(Self.isTransient(error) ? .unavailable : .refused, Self.describe(error))
        }
    }

    /// SQLite's result codes that say "not now" rather than "never".
    static func isTransient(_ error: DatabaseError) -> Bool {
        switch error.resultCode {
        case .SQLITE_FULL, .SQLITE_IOERR, .SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_CANTOPEN, .SQLITE_READONLY, .SQLITE_NOMEM,
            .SQLITE_PROTOCOL, .SQLITE_INTERRUPT, .SQLITE_NOLFS, .SQLITE_CORRUPT, .SQLITE_NOTADB, .SQLITE_PERM, .SQLITE_AUTH:
            true
        default:
            false
        }
    }

    /// One line for an operator: what SQLite said, and what to do for the common cases.
    static func describe(_ error: DatabaseError) -> String {
        let text = error.message ?? "\(error.resultCode)"
        switch error.resultCode {
        case .SQLITE_FULL: return "the database or its disk is full (\(text)); free space on the database's filesystem"
        case .SQLITE_BUSY, .SQLITE_LOCKED: return "the database is locked by another process (\(text))"
        case .SQLITE_IOERR: return "I/O error on the database (\(text)); check the disk"
        case .SQLITE_READONLY, .SQLITE_PERM, .SQLITE_CANTOPEN: return "the database cannot be written (\(text)); check its file and folder permissions"
        default: return "SQLite refused the batch: \(text) (\(error.resultCode))"
        }
    }

    private func applyInTransaction(_ records: [IngestRecord]) async throws -> ApplyOutcome {
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
                caches.newEpochs.merge(staged.newEpochs) { _, committed in committed }
                for (gateway, boots) in staged.clockOffsets { caches.clockOffsets[gateway] = boots }
            }
            return outcome
        }
    }

    /// What a batch changes in the caches, handed over once its transaction commits.
    struct Staged {
        var streams: [StreamKey: Stream] = [:]
        var regimenStarts: [GatewayKey: Int] = [:]
        var newEpochs: [GatewayKey: EpochCount] = [:]
        var clockOffsets: [GatewayKey: [(boot: UUID, offset: Double)]] = [:]
    }

    /// Refusals of one gateway for one reason, gathered over a batch.
    struct RefusalKey: Hashable {
        var gateway: GatewayKey
        var reason: String
    }

    struct RefusalDelta {
        var count = 0
        var lastAt = 0.0
        var detail = ""
        var payload: Data?
    }

    /// The most of a refused message's payload kept for the operator to look at, bytes.
    static let keptPayloadBytes = 4_096

    /// Applies `records` in `db`'s open transaction; returns the outcome and the cached state
    /// it moved, for the caches once the transaction commits.
    private func apply(_ records: [IngestRecord], _ db: Database) throws -> (ApplyOutcome, Staged) {
        var outcome = ApplyOutcome()
        var daily: [DailyKey: DailyDelta] = [:]
        var aborts: [DailyKey: [String: Int]] = [:]
        var activity: [GatewayKey: GatewayActivity] = [:]
        /// The earliest regimen start each gateway's events in this batch imply.
        var regimen: [GatewayKey: Int] = [:]
        var refusals: [RefusalKey: RefusalDelta] = [:]
        func refuse(_ gateway: GatewayKey, _ refusal: IngestRecord.Refusal, at: Date, payload: Data?) {
            let key = RefusalKey(gateway: gateway, reason: refusal.reason)
            refusals[key, default: RefusalDelta()].count += 1
            guard at.timeIntervalSince1970 >= refusals[key]?.lastAt ?? 0 else { return }
            refusals[key]?.lastAt = at.timeIntervalSince1970
            refusals[key]?.detail = String(refusal.detail.prefix(300))
            refusals[key]?.payload = payload.map { Data($0.prefix(Self.keptPayloadBytes)) }
        }
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
                    let seen = receivedAt.timeIntervalSince1970
                    var stream: Stream
                    if let known = staged.streams[streamKey] ?? caches.streams[streamKey] {
                        stream = known
                    } else {
                        // A new outbox epoch: a real gateway starts one only when its outbox
                        // database is made anew, so past a few a day it is refused.
                        let today = Day(receivedAt).number
                        var epochs = staged.newEpochs[gateway] ?? caches.newEpochs[gateway] ?? EpochCount(day: today, count: 0)
                        if epochs.day != today { epochs = EpochCount(day: today, count: 0) }
                        guard epochs.count < newEpochsPerGatewayPerDay else {
                            let refusal = IngestRecord.Refusal(
                                reason: IngestRecord.Refusal.epochLimit,
                                detail: "epoch \(envelope.epoch.wireString) would be new epoch \(epochs.count + 1) today; the limit is \(newEpochsPerGatewayPerDay)",
                                gateway: gateway)
                            refuse(gateway, refusal, at: receivedAt, payload: payload)
                            outcome.refused[refusal.reason, default: 0] += 1
                            continue
                        }
                        epochs.count += 1
                        staged.newEpochs[gateway] = epochs
                        stream = Stream(
                            epochText: envelope.epoch.wireString, minSeq: envelope.seq, maxSeq: envelope.seq, count: 0, evicted: 0,
                            contiguous: 0, gapSince: nil, createdAt: seen, lastAt: seen)
                    }
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
                    stream.lastAt = max(stream.lastAt, seen)
                    outcome.accepted += 1

                    let at = effectiveTime(envelope, receivedAt: receivedAt, historical: historical, caches: caches, staged: &staged)
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
                    // A forgotten gateway's old presence (retained on the broker) does not bring it back.
                    if try Self.forgotten(gateway, before: status.ts, db: db) { continue }
                    // The status the broker kept (sent again at every subscribe, so at every
                    // restart of the aggregator) is no sign of life: it moves `lastSeen` only
                    // for a gateway never heard from before. A Will (`lost`) carries the time
                    // its connection was set up, not of the loss: a live one is dated by its
                    // arrival, which is within 1.5 keepalives of the loss.
                    let statusAt = status.reason == "lost" && !retained ? receivedAt : status.ts
                    try db.cachedStatement(sql: """
                        INSERT INTO gateway (fleet, gw, online, statusAt, boot, agentVersion, lastSeen) VALUES (?, ?, ?, ?, ?, ?, ?)
                        ON CONFLICT (fleet, gw) DO UPDATE SET online = excluded.online, statusAt = excluded.statusAt,
                            boot = excluded.boot, agentVersion = COALESCE(excluded.agentVersion, agentVersion),
                            lastSeen = iif(?, COALESCE(lastSeen, excluded.lastSeen), MAX(COALESCE(lastSeen, 0), excluded.lastSeen))
                        """).execute(arguments: [
                            gateway.fleet, gateway.gateway, status.online, statusAt.timeIntervalSince1970, status.boot.wireString,
                            status.agentVersion, receivedAt.timeIntervalSince1970, retained,
                        ])
                    outcome.presence += 1
                    outcome.changedGateways.insert(gateway)

                case .state(let fleet, let gw, let state, _):
                    let gateway = GatewayKey(fleet: fleet.rawValue, gateway: gw.rawValue)
                    if try Self.forgotten(gateway, before: state.ts, db: db) { continue }
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

                case .refused(let gateway, let refusal, let receivedAt, let payload):
                    refuse(gateway, refusal, at: receivedAt, payload: payload)
                    outcome.changedGateways.insert(gateway)
                }
            }
        }

        let saveRefusal = try db.cachedStatement(sql: """
            INSERT INTO refusal (fleet, gw, reason, count, lastAt, lastDetail, lastPayload) VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (fleet, gw, reason) DO UPDATE SET count = MIN(count + excluded.count, \(Int64(1) << 53)),
                lastDetail = iif(excluded.lastAt >= lastAt, excluded.lastDetail, lastDetail),
                lastPayload = iif(excluded.lastAt >= lastAt, excluded.lastPayload, lastPayload),
                lastAt = MAX(lastAt, excluded.lastAt)
            """)
        for (key, delta) in refusals {
            try saveRefusal.run(key.gateway.fleet, key.gateway.gateway, key.reason, delta.count, delta.lastAt, delta.detail, delta.payload)
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
    private func effectiveTime(_ envelope: Envelope, receivedAt: Date, historical: Bool, caches: Caches, staged: inout Staged) -> Double {
        let ts = envelope.timestamp.timeIntervalSince1970
        if envelope.synced { return ts }
        let gateway = GatewayKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue)
        var boots = staged.clockOffsets[gateway] ?? caches.clockOffsets[gateway] ?? []
        if !historical {
            // Newest boot first; a gateway's older boots fall off (they only date backlog).
            boots.removeAll { $0.boot == envelope.boot }
            boots.insert((envelope.boot, receivedAt.timeIntervalSince1970 - ts), at: 0)
            if boots.count > Self.bootsPerGateway { boots.removeLast(boots.count - Self.bootsPerGateway) }
            staged.clockOffsets[gateway] = boots
        }
        if let offset = boots.first(where: { $0.boot == envelope.boot })?.offset { return ts + offset }
        return receivedAt.timeIntervalSince1970
    }

    private func apply(
        _ event: Event, gateway: GatewayKey, day: DailyKey, at: Double, daily: inout [DailyKey: DailyDelta],
        aborts: inout [DailyKey: [String: Int]], regimen: inout [GatewayKey: Int], stream: inout Stream, _ db: Database
    ) throws {
        /// Day 1 of the wearer's regimen: the earliest implied by any event's `regimenDay`.
        func noteRegimen(_ regimenDay: Int?) {
            // `regimenDay` is within 1 and the days since the product existed (WireRanges), and no
            // regimen starts before the product did.
            guard let regimenDay, regimenDay >= 1 else { return }
            let start = max(day.day - (regimenDay - 1), Day(WireRanges.productEpoch).number)
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
            // Never more than the seqs the stream can have; the summary counts only as many as
            // are missing.
            stream.evicted = min(stream.evicted.saturatingAdd(eviction.count), Int(WireRanges.seq.upperBound))
        case .sessionPaused, .sessionResumed, .configApplied, .configRejected, .firmwareProgress, .outboxReset:
            break
        }
    }
}
