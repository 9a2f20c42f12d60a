import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
import PostgresNIO
import SpectraProtocol

extension PostgresStatsStore {
    typealias StreamKey = SQLiteStatsStore.StreamKey
    typealias Stream = SQLiteStatsStore.Stream
    typealias DailyKey = SQLiteStatsStore.DailyKey
    typealias DailyDelta = SQLiteStatsStore.DailyDelta
    typealias RefusalKey = SQLiteStatsStore.RefusalKey
    typealias RefusalDelta = SQLiteStatsStore.RefusalDelta
    typealias GatewayActivity = SQLiteStatsStore.GatewayActivity
    typealias LatestTelemetry = SQLiteStatsStore.LatestTelemetry

    /// The stream state of some gateways, as read inside a batch's transaction, and what the
    /// batch did to it.
    struct StreamState {
        var streams: [StreamKey: Stream] = [:]
        /// Dedupe keys stored above each stream's watermark, as read.
        var stored: [StreamKey: Set<UInt64>] = [:]
        /// The same, as the batch leaves them.
        var pending: [StreamKey: Set<UInt64>] = [:]
        /// Streams the batch changed.
        var changed: Set<StreamKey> = []

        /// Reads the streams of `gateways` (all of them, or only `streams`) and their stored keys.
        static func load(
            for gateways: [GatewayKey], streams wanted: [StreamKey]?, _ connection: PostgresConnection, _ logger: Logger
        ) async throws -> StreamState {
            var state = StreamState()
            var binds = PostgresBindings()
            let keyFilter: String
            if let wanted {
                guard !wanted.isEmpty else { return state }
                keyFilter = "(fleet, gw, epoch) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
                binds.append(wanted.map(\.fleet))
                binds.append(wanted.map(\.gateway))
                binds.append(wanted.map(\.epoch.wireString))
            } else {
                keyFilter = "(fleet, gw) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
                binds.append(gateways.map(\.fleet))
                binds.append(gateways.map(\.gateway))
            }
            let rows = try await connection.query(
                PostgresQuery(
                    unsafeSQL: """
                        SELECT fleet, gw, epoch, minSeq, maxSeq, count, evicted, contiguous, gapSince, createdAt, lastAt
                        FROM stream WHERE \(keyFilter)
                        """, binds: binds), logger: logger)
            for try await (fleet, gw, epochText, minSeq, maxSeq, count, evicted, contiguous, gapSince, createdAt, lastAt) in rows.decode(
                (String, String, String, Int64, Int64, Int64, Int64, Int64, Double?, Double, Double).self)
            {
                // Every epoch here was written from a UUID's wire form.
                guard let epoch = UUID(uuidString: epochText) else { continue }
                state.streams[StreamKey(fleet: fleet, gateway: gw, epoch: epoch)] = Stream(
                    epochText: epochText, minSeq: UInt64(max(0, minSeq)), maxSeq: UInt64(max(0, maxSeq)), count: Int(count),
                    evicted: Int(evicted), contiguous: UInt64(max(0, contiguous)), gapSince: gapSince, createdAt: createdAt, lastAt: lastAt)
            }
            let keys = try await connection.query(
                PostgresQuery(unsafeSQL: "SELECT fleet, gw, epoch, seq FROM received WHERE \(keyFilter)", binds: binds), logger: logger)
            for try await (fleet, gw, epochText, seq) in keys.decode((String, String, String, Int64).self) {
                guard let epoch = UUID(uuidString: epochText) else { continue }
                state.stored[StreamKey(fleet: fleet, gateway: gw, epoch: epoch), default: []].insert(UInt64(max(0, seq)))
            }
            state.pending = state.stored
            for key in state.streams.keys {
                state.streams[key]?.pendingAbove = state.stored[key]?.count ?? 0
            }
            return state
        }

        /// Writes the changed streams and the dedupe keys that came and went.
        func save(_ connection: PostgresConnection, _ logger: Logger) async throws {
            var gone: [(StreamKey, UInt64)] = [], new: [(StreamKey, UInt64)] = []
            for key in Set(stored.keys).union(pending.keys) {
                let before = stored[key] ?? [], after = pending[key] ?? []
                gone += before.subtracting(after).map { (key, $0) }
                new += after.subtracting(before).map { (key, $0) }
            }
            if !gone.isEmpty {
                try await connection.query(
                    """
                    DELETE FROM received WHERE (fleet, gw, epoch, seq) IN
                        (SELECT * FROM unnest(\(gone.map(\.0.fleet))::text[], \(gone.map(\.0.gateway))::text[],
                            \(gone.map(\.0.epoch.wireString))::text[], \(gone.map { Int64(clamping: $0.1) })::int8[]))
                    """, logger: logger)
            }
            if !new.isEmpty {
                try await connection.query(
                    """
                    INSERT INTO received (fleet, gw, epoch, seq)
                        SELECT * FROM unnest(\(new.map(\.0.fleet))::text[], \(new.map(\.0.gateway))::text[],
                            \(new.map(\.0.epoch.wireString))::text[], \(new.map { Int64(clamping: $0.1) })::int8[])
                    """, logger: logger)
            }
            let keys = changed.compactMap { key in streams[key].map { (key, $0) } }
            guard !keys.isEmpty else { return }
            try await connection.query(
                """
                INSERT INTO stream (fleet, gw, epoch, minSeq, maxSeq, count, evicted, contiguous, gapSince, createdAt, lastAt)
                    SELECT f, g, e, mn, mx, c, ev, ct, NULLIF(gs, 'NaN'::float8), ca, la FROM unnest(
                        \(keys.map(\.0.fleet))::text[], \(keys.map(\.0.gateway))::text[], \(keys.map(\.1.epochText))::text[],
                        \(keys.map { Int64(clamping: $0.1.minSeq) })::int8[], \(keys.map { Int64(clamping: $0.1.maxSeq) })::int8[],
                        \(keys.map { Int64($0.1.count) })::int8[], \(keys.map { Int64($0.1.evicted) })::int8[],
                        \(keys.map { Int64(clamping: $0.1.contiguous) })::int8[], \(keys.map { $0.1.gapSince ?? .nan })::float8[],
                        \(keys.map(\.1.createdAt))::float8[], \(keys.map(\.1.lastAt))::float8[])
                        AS t(f, g, e, mn, mx, c, ev, ct, gs, ca, la)
                ON CONFLICT (fleet, gw, epoch) DO UPDATE SET minSeq = excluded.minSeq, maxSeq = excluded.maxSeq,
                    count = excluded.count, evicted = excluded.evicted, contiguous = excluded.contiguous,
                    gapSince = excluded.gapSince, lastAt = excluded.lastAt
                """, logger: logger)
        }
    }

    /// Text as PostgreSQL stores it: a NUL byte (which a gateway may put in a version string or an
    /// abort reason, and SQLite keeps) cannot be in a TEXT value, so it becomes U+FFFD.
    static func text(_ value: String) -> String {
        value.utf8.contains(0) ? value.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : value
    }

    static func text(_ value: String?) -> String? { value.map { text($0) } }

    /// - Throws: ``StoreFailure``: `unavailable` when the database cannot commit now (the
    ///   connection, its disk, a shutdown), `refused` for what it refuses in the batch.
    public func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome {
        var (outcome, retries) = try await countedTransaction { connection in try await self.apply(records, connection) }
        outcome.retries = retries
        return outcome
    }

    /// One session row change, in the batch's order (a start and an end of one session may
    /// come in one batch, either way round); ``SessionRow`` folds them per session.
    enum SessionChange {
        case started(GatewayKey, SessionStarted, day: Int, at: Double)
        case levelChanged(GatewayKey, sessionId: String, day: Int)
        case ended(GatewayKey, SessionSummary, completed: Bool, day: Int, at: Double)
        case tripped(GatewayKey, sessionId: String, day: Int)
    }

    /// A presence or state message, in the batch's order; ``PresenceRow`` folds them per gateway.
    enum PresenceChange {
        case status(GatewayKey, GatewayStatus, statusAt: Double, receivedAt: Double, retained: Bool)
        case state(GatewayKey, ReportedState)
    }

    struct EventRow {
        var gateway: GatewayKey
        var epoch: String
        var seq: UInt64
        var day: Int
        var at: Double
        var type: String
        var body: Data
        var receivedAt: Double
    }

    private func apply(_ records: [IngestRecord], _ connection: PostgresConnection) async throws -> ApplyOutcome {
        var touched = Set<GatewayKey>(), wantedStreams = Set<StreamKey>()
        var unsyncedGateways = Set<GatewayKey>(), presenceGateways = Set<GatewayKey>()
        for record in records {
            switch record {
            case .envelope(let envelope, _, _, _):
                let gateway = GatewayKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue)
                touched.insert(gateway)
                wantedStreams.insert(StreamKey(fleet: gateway.fleet, gateway: gateway.gateway, epoch: envelope.epoch))
                if !envelope.synced { unsyncedGateways.insert(gateway) }
            case .status(let fleet, let gw, _, _, _), .state(let fleet, let gw, _, _):
                let gateway = GatewayKey(fleet: fleet.rawValue, gateway: gw.rawValue)
                touched.insert(gateway)
                presenceGateways.insert(gateway)
            case .refused(let gateway, _, _, _):
                touched.insert(gateway)
            }
        }
        try await Self.lock(touched, connection, logger)

        // What later batches dedupe against, read under the locks.
        var state = try await StreamState.load(for: [], streams: Array(wantedStreams), connection, logger)
        let streamGateways = Array(Set(wantedStreams.map { GatewayKey(fleet: $0.fleet, gateway: $0.gateway) }))
        let firstDay = records.compactMap { record -> Int? in
            if case .envelope(_, let receivedAt, _, _) = record { return Day(receivedAt).number } else { return nil }
        }.min() ?? Day(Date()).number
        var newEpochs = try await loadNewEpochs(streamGateways, since: firstDay, connection)
        var clockOffsets = try await loadClockOffsets(Array(unsyncedGateways), connection)
        let forgotten = try await loadForgotten(Array(presenceGateways), connection)

        var outcome = ApplyOutcome()
        var daily: [DailyKey: DailyDelta] = [:]
        var aborts: [DailyKey: [String: Int]] = [:]
        var activity: [GatewayKey: GatewayActivity] = [:]
        var regimen: [GatewayKey: Int] = [:]
        var refusals: [RefusalKey: RefusalDelta] = [:]
        var events: [EventRow] = []
        var sessions: [SessionChange] = []
        var presence: [PresenceChange] = []
        var movedOffsets = Set<GatewayKey>()
        func refuse(_ gateway: GatewayKey, _ refusal: IngestRecord.Refusal, at: Date, payload: Data?) {
            let key = RefusalKey(gateway: gateway, reason: Self.text(refusal.reason))
            refusals[key, default: RefusalDelta()].count += 1
            guard at.timeIntervalSince1970 >= refusals[key]?.lastAt ?? 0 else { return }
            refusals[key]?.lastAt = at.timeIntervalSince1970
            refusals[key]?.detail = Self.text(String(refusal.detail.prefix(300)))
            refusals[key]?.payload = payload.map { Data($0.prefix(SQLiteStatsStore.keptPayloadBytes)) }
        }
        let commitTime = Date().timeIntervalSince1970

        for record in records {
            switch record {
            case .envelope(let envelope, let receivedAt, let historical, let payload):
                let gateway = GatewayKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue)
                let streamKey = StreamKey(fleet: gateway.fleet, gateway: gateway.gateway, epoch: envelope.epoch)
                let seen = receivedAt.timeIntervalSince1970
                var stream: Stream
                if let known = state.streams[streamKey] {
                    stream = known
                } else {
                    let today = Day(receivedAt).number
                    let count = newEpochs[SQLiteStatsStore.DailyKey(gateway: gateway, day: today)] ?? 0
                    guard count < newEpochsPerGatewayPerDay else {
                        let refusal = IngestRecord.Refusal(
                            reason: IngestRecord.Refusal.epochLimit,
                            detail: "epoch \(envelope.epoch.wireString) would be new epoch \(count + 1) today; the limit is \(newEpochsPerGatewayPerDay)",
                            gateway: gateway)
                        refuse(gateway, refusal, at: receivedAt, payload: payload)
                        outcome.refused[refusal.reason, default: 0] += 1
                        continue
                    }
                    newEpochs[SQLiteStatsStore.DailyKey(gateway: gateway, day: today)] = count + 1
                    stream = Stream(
                        epochText: envelope.epoch.wireString, minSeq: envelope.seq, maxSeq: envelope.seq, count: 0, evicted: 0,
                        contiguous: 0, gapSince: nil, createdAt: seen, lastAt: seen)
                }
                if envelope.seq <= stream.contiguous {
                    outcome.duplicates += 1
                    continue
                }
                var pending = state.pending[streamKey] ?? []
                if envelope.seq == stream.contiguous + 1 {
                    // In order: the watermark alone records it; fold in keys that were waiting.
                    stream.contiguous += 1
                    while pending.remove(stream.contiguous + 1) != nil { stream.contiguous += 1 }
                } else {
                    guard pending.insert(envelope.seq).inserted else {
                        outcome.duplicates += 1
                        continue
                    }
                }
                state.pending[streamKey] = pending
                stream.pendingAbove = pending.count
                stream.minSeq = min(stream.minSeq, envelope.seq)
                stream.maxSeq = max(stream.maxSeq, envelope.seq)
                stream.count += 1
                stream.lastAt = max(stream.lastAt, seen)
                outcome.accepted += 1

                let at = effectiveTime(envelope, receivedAt: receivedAt, historical: historical, offsets: &clockOffsets, moved: &movedOffsets)
                if envelope.synced {
                    let lag = commitTime - envelope.timestamp.timeIntervalSince1970
                    outcome.maxLagSeconds = max(outcome.maxLagSeconds ?? lag, lag)
                    if !historical { outcome.latenciesSeconds.append(lag) }
                }
                let dayKey = DailyKey(gateway: gateway, day: Day(Date(timeIntervalSince1970: at)).number)
                var seenActivity = activity[gateway, default: GatewayActivity()]
                seenActivity.lastSeen = max(seenActivity.lastSeen, seen)
                if case .telemetry(let body) = envelope.message, !historical, at >= seenActivity.telemetry?.at ?? -.infinity {
                    seenActivity.telemetry = LatestTelemetry(at: at, agent: body.agent, batteryPct: body.batteryPct)
                }
                activity[gateway] = seenActivity
                if case .event(let event) = envelope.message {
                    outcome.acceptedEvents += 1
                    events.append(
                        EventRow(
                            gateway: gateway, epoch: stream.epochText, seq: envelope.seq, day: dayKey.day, at: at, type: event.type.rawValue,
                            body: payload ?? envelope.encoded(), receivedAt: seen))
                    Self.fold(event, gateway: gateway, day: dayKey, at: at, daily: &daily, aborts: &aborts, regimen: &regimen,
                              stream: &stream, sessions: &sessions)
                }
                state.streams[streamKey] = stream
                state.changed.insert(streamKey)

            case .status(let fleet, let gw, let status, let receivedAt, let retained):
                let gateway = GatewayKey(fleet: fleet.rawValue, gateway: gw.rawValue)
                if let at = forgotten[gateway], status.ts.timeIntervalSince1970 <= at { continue }
                let statusAt = status.reason == "lost" && !retained ? receivedAt : status.ts
                presence.append(
                    .status(gateway, status, statusAt: statusAt.timeIntervalSince1970, receivedAt: receivedAt.timeIntervalSince1970, retained: retained))
                outcome.presence += 1
                outcome.changedGateways.insert(gateway)

            case .state(let fleet, let gw, let agentState, _):
                let gateway = GatewayKey(fleet: fleet.rawValue, gateway: gw.rawValue)
                if let at = forgotten[gateway], agentState.ts.timeIntervalSince1970 <= at { continue }
                presence.append(.state(gateway, agentState))
                outcome.presence += 1
                outcome.changedGateways.insert(gateway)

            case .refused(let gateway, let refusal, let receivedAt, let payload):
                refuse(gateway, refusal, at: receivedAt, payload: payload)
                outcome.changedGateways.insert(gateway)
            }
        }

        try await state.save(connection, logger)
        try await saveEvents(events, connection)
        try await saveSessions(sessions, connection)
        try await savePresence(presence, connection)
        try await saveRefusals(refusals, connection)
        try await saveDaily(daily, aborts: aborts, connection)
        try await saveActivity(activity, connection)
        outcome.changedGateways.formUnion(activity.keys)
        try await saveRegimenStarts(regimen, connection)
        try await saveClockOffsets(clockOffsets.filter { movedOffsets.contains($0.key) }, connection)
        return outcome
    }

    /// When an envelope happened, as ``SQLiteStatsStore`` dates it, with the offsets of each
    /// gateway's latest boots kept in the database.
    private func effectiveTime(
        _ envelope: Envelope, receivedAt: Date, historical: Bool, offsets: inout [GatewayKey: [(boot: UUID, offset: Double)]],
        moved: inout Set<GatewayKey>
    ) -> Double {
        let ts = envelope.timestamp.timeIntervalSince1970
        if envelope.synced { return ts }
        let gateway = GatewayKey(fleet: envelope.fleet.rawValue, gateway: envelope.gateway.rawValue)
        var boots = offsets[gateway] ?? []
        if !historical {
            boots.removeAll { $0.boot == envelope.boot }
            boots.insert((envelope.boot, receivedAt.timeIntervalSince1970 - ts), at: 0)
            if boots.count > SQLiteStatsStore.bootsPerGateway { boots.removeLast(boots.count - SQLiteStatsStore.bootsPerGateway) }
            offsets[gateway] = boots
            moved.insert(gateway)
        }
        if let offset = boots.first(where: { $0.boot == envelope.boot })?.offset { return ts + offset }
        return receivedAt.timeIntervalSince1970
    }

    /// Adds one accepted event to the batch's counters and session changes.
    private static func fold(
        _ event: Event, gateway: GatewayKey, day: DailyKey, at: Double, daily: inout [DailyKey: DailyDelta],
        aborts: inout [DailyKey: [String: Int]], regimen: inout [GatewayKey: Int], stream: inout Stream, sessions: inout [SessionChange]
    ) {
        func noteRegimen(_ regimenDay: Int?) {
            guard let regimenDay, regimenDay >= 1 else { return }
            let start = max(day.day - (regimenDay - 1), Day(WireRanges.productEpoch).number)
            regimen[gateway] = min(regimen[gateway] ?? start, start)
        }
        switch event {
        case .sessionStarted(let body):
            daily[day, default: DailyDelta()].started += 1
            sessions.append(.started(gateway, body, day: day.day, at: at))
            noteRegimen(body.regimenDay)
        case .sessionLevelChanged(let body):
            sessions.append(.levelChanged(gateway, sessionId: body.sessionId.rawValue, day: day.day))
        case .sessionCompleted(let summary), .sessionAborted(let summary):
            let completed: Bool
            if case .sessionCompleted = event { completed = true } else { completed = false }
            var delta = daily[day, default: DailyDelta()]
            if completed { delta.completed += 1 } else { delta.aborted += 1 }
            delta.pauses += summary.pauses
            for level in 1...3 { delta.levelSeconds[level - 1] += summary.levelSeconds["\(level)"] ?? 0 }
            daily[day] = delta
            if !completed { aborts[day, default: [:]][text(summary.reason?.rawValue) ?? "unknown", default: 0] += 1 }
            sessions.append(.ended(gateway, summary, completed: completed, day: day.day, at: at))
            noteRegimen(summary.regimenDay)
        case .safetyTrip(let trip):
            daily[day, default: DailyDelta()].trips += 1
            if let sessionId = trip.sessionId { sessions.append(.tripped(gateway, sessionId: sessionId.rawValue, day: day.day)) }
        case .outboxEvicted(let eviction):
            stream.evicted = min(stream.evicted.saturatingAdd(eviction.count), Int(WireRanges.seq.upperBound))
        case .sessionPaused, .sessionResumed, .configApplied, .configRejected, .firmwareProgress, .outboxReset:
            break
        }
    }

    // MARK: Reads inside the batch

    /// New epochs per gateway and UTC day of creation (receive time), from `firstDay` on.
    private func loadNewEpochs(_ gateways: [GatewayKey], since firstDay: Int, _ connection: PostgresConnection) async throws -> [DailyKey: Int] {
        guard !gateways.isEmpty else { return [:] }
        let since = Double(firstDay) * 86_400
        var result: [DailyKey: Int] = [:]
        let rows = try await connection.query(
            """
            SELECT fleet, gw, floor(createdAt / 86400)::int8, COUNT(*)::int8 FROM stream
            WHERE (fleet, gw) IN (SELECT * FROM unnest(\(gateways.map(\.fleet))::text[], \(gateways.map(\.gateway))::text[]))
                AND createdAt >= \(since)
            GROUP BY 1, 2, 3
            """, logger: logger)
        for try await (fleet, gw, day, count) in rows.decode((String, String, Int64, Int64).self) {
            result[DailyKey(gateway: GatewayKey(fleet: fleet, gateway: gw), day: Int(day))] = Int(count)
        }
        return result
    }

    private func loadClockOffsets(
        _ gateways: [GatewayKey], _ connection: PostgresConnection
    ) async throws -> [GatewayKey: [(boot: UUID, offset: Double)]] {
        guard !gateways.isEmpty else { return [:] }
        var result: [GatewayKey: [(boot: UUID, offset: Double)]] = [:]
        let rows = try await connection.query(
            """
            SELECT fleet, gw, boot, offsetSeconds FROM clock_offset
            WHERE (fleet, gw) IN (SELECT * FROM unnest(\(gateways.map(\.fleet))::text[], \(gateways.map(\.gateway))::text[]))
            ORDER BY fleet, gw, rank
            """, logger: logger)
        for try await (fleet, gw, bootText, offset) in rows.decode((String, String, String, Double).self) {
            guard let boot = UUID(uuidString: bootText) else { continue }
            result[GatewayKey(fleet: fleet, gateway: gw), default: []].append((boot, offset))
        }
        return result
    }

    private func loadForgotten(_ gateways: [GatewayKey], _ connection: PostgresConnection) async throws -> [GatewayKey: Double] {
        guard !gateways.isEmpty else { return [:] }
        var result: [GatewayKey: Double] = [:]
        let rows = try await connection.query(
            """
            SELECT fleet, gw, at FROM forgotten
            WHERE (fleet, gw) IN (SELECT * FROM unnest(\(gateways.map(\.fleet))::text[], \(gateways.map(\.gateway))::text[]))
            """, logger: logger)
        for try await (fleet, gw, at) in rows.decode((String, String, Double).self) {
            result[GatewayKey(fleet: fleet, gateway: gw)] = at
        }
        return result
    }

    // MARK: Writes

    private func saveEvents(_ events: [EventRow], _ connection: PostgresConnection) async throws {
        guard !events.isEmpty else { return }
        try await connection.query(
            """
            INSERT INTO event (fleet, gw, epoch, seq, day, ts, type, body, receivedAt)
                SELECT * FROM unnest(\(events.map(\.gateway.fleet))::text[], \(events.map(\.gateway.gateway))::text[],
                    \(events.map(\.epoch))::text[], \(events.map { Int64(clamping: $0.seq) })::int8[], \(events.map { Int64($0.day) })::int8[],
                    \(events.map(\.at))::float8[], \(events.map(\.type))::text[], \(events.map { ByteBuffer(data: $0.body) })::bytea[],
                    \(events.map(\.receivedAt))::float8[])
            """, logger: logger)
    }

    private func saveRefusals(_ refusals: [RefusalKey: RefusalDelta], _ connection: PostgresConnection) async throws {
        guard !refusals.isEmpty else { return }
        let rows = Array(refusals)
        try await connection.query(
            """
            INSERT INTO refusal AS r (fleet, gw, reason, count, lastAt, lastDetail, lastPayload)
                SELECT f, g, re, c, la, d, NULLIF(p, ''::bytea) FROM unnest(\(rows.map(\.key.gateway.fleet))::text[],
                    \(rows.map(\.key.gateway.gateway))::text[], \(rows.map(\.key.reason))::text[], \(rows.map { Int64($0.value.count) })::int8[],
                    \(rows.map(\.value.lastAt))::float8[], \(rows.map(\.value.detail))::text[],
                    \(rows.map { ByteBuffer(data: $0.value.payload ?? Data()) })::bytea[]) AS t(f, g, re, c, la, d, p)
            ON CONFLICT (fleet, gw, reason) DO UPDATE SET count = LEAST(r.count + excluded.count, \(Int64(1) << 53)),
                lastDetail = CASE WHEN excluded.lastAt >= r.lastAt THEN excluded.lastDetail ELSE r.lastDetail END,
                lastPayload = CASE WHEN excluded.lastAt >= r.lastAt THEN excluded.lastPayload ELSE r.lastPayload END,
                lastAt = GREATEST(r.lastAt, excluded.lastAt)
            """, logger: logger)
    }

    private func saveDaily(
        _ daily: [DailyKey: DailyDelta], aborts: [DailyKey: [String: Int]], _ connection: PostgresConnection
    ) async throws {
        if !daily.isEmpty {
            let rows = Array(daily)
            try await connection.query(
                """
                INSERT INTO daily AS d (fleet, gw, day, started, completed, aborted, l1, l2, l3, pauses, trips)
                    SELECT * FROM unnest(\(rows.map(\.key.gateway.fleet))::text[], \(rows.map(\.key.gateway.gateway))::text[],
                        \(rows.map { Int64($0.key.day) })::int8[], \(rows.map { Int64($0.value.started) })::int8[],
                        \(rows.map { Int64($0.value.completed) })::int8[], \(rows.map { Int64($0.value.aborted) })::int8[],
                        \(rows.map { $0.value.levelSeconds[0] })::float8[], \(rows.map { $0.value.levelSeconds[1] })::float8[],
                        \(rows.map { $0.value.levelSeconds[2] })::float8[], \(rows.map { Int64($0.value.pauses) })::int8[],
                        \(rows.map { Int64($0.value.trips) })::int8[])
                ON CONFLICT (fleet, gw, day) DO UPDATE SET started = d.started + excluded.started,
                    completed = d.completed + excluded.completed, aborted = d.aborted + excluded.aborted,
                    l1 = d.l1 + excluded.l1, l2 = d.l2 + excluded.l2, l3 = d.l3 + excluded.l3,
                    pauses = d.pauses + excluded.pauses, trips = d.trips + excluded.trips
                """, logger: logger)
        }
        let reasons = aborts.flatMap { key, counts in counts.map { (key, $0.key, $0.value) } }
        if !reasons.isEmpty {
            try await connection.query(
                """
                INSERT INTO abort_reason AS a (fleet, gw, day, reason, count)
                    SELECT * FROM unnest(\(reasons.map(\.0.gateway.fleet))::text[], \(reasons.map(\.0.gateway.gateway))::text[],
                        \(reasons.map { Int64($0.0.day) })::int8[], \(reasons.map(\.1))::text[], \(reasons.map { Int64($0.2) })::int8[])
                ON CONFLICT (fleet, gw, day, reason) DO UPDATE SET count = a.count + excluded.count
                """, logger: logger)
        }
    }

    private func saveActivity(_ activity: [GatewayKey: GatewayActivity], _ connection: PostgresConnection) async throws {
        guard !activity.isEmpty else { return }
        let rows = Array(activity)
        // Gateways without telemetry in the batch carry NaN / -1, read back as NULL: their
        // health columns stay as they are.
        func int(_ value: Int?) -> Int64 { value.map { Int64(max(0, $0)) } ?? -1 }
        try await connection.query(
            """
            INSERT INTO gateway AS g (fleet, gw, lastSeen, outboxDepth, outboxBytes, batteryPct, rssKiB, reconnects, telemetryAt)
                SELECT f, gw, ls, NULLIF(od, -1), NULLIF(ob, -1), NULLIF(bp, 'NaN'::float8), NULLIF(rs, -1), NULLIF(rc, -1),
                    NULLIF(ta, 'NaN'::float8)
                FROM unnest(\(rows.map(\.key.fleet))::text[], \(rows.map(\.key.gateway))::text[], \(rows.map(\.value.lastSeen))::float8[],
                    \(rows.map { int($0.value.telemetry?.agent.outboxDepth) })::int8[],
                    \(rows.map { int($0.value.telemetry?.agent.outboxBytes) })::int8[],
                    \(rows.map { $0.value.telemetry?.batteryPct ?? .nan })::float8[],
                    \(rows.map { int($0.value.telemetry?.agent.rssKiB) })::int8[],
                    \(rows.map { int($0.value.telemetry?.agent.reconnects) })::int8[],
                    \(rows.map { $0.value.telemetry?.at ?? .nan })::float8[]) AS t(f, gw, ls, od, ob, bp, rs, rc, ta)
            ON CONFLICT (fleet, gw) DO UPDATE SET lastSeen = GREATEST(COALESCE(g.lastSeen, 0), excluded.lastSeen),
                outboxDepth = CASE WHEN excluded.telemetryAt >= COALESCE(g.telemetryAt, 0) THEN excluded.outboxDepth ELSE g.outboxDepth END,
                outboxBytes = CASE WHEN excluded.telemetryAt >= COALESCE(g.telemetryAt, 0) THEN excluded.outboxBytes ELSE g.outboxBytes END,
                batteryPct = CASE WHEN excluded.telemetryAt >= COALESCE(g.telemetryAt, 0) THEN excluded.batteryPct ELSE g.batteryPct END,
                rssKiB = CASE WHEN excluded.telemetryAt >= COALESCE(g.telemetryAt, 0) THEN excluded.rssKiB ELSE g.rssKiB END,
                reconnects = CASE WHEN excluded.telemetryAt >= COALESCE(g.telemetryAt, 0) THEN excluded.reconnects ELSE g.reconnects END,
                telemetryAt = CASE WHEN excluded.telemetryAt >= COALESCE(g.telemetryAt, 0) THEN excluded.telemetryAt ELSE g.telemetryAt END
            """, logger: logger)
    }

    private func saveRegimenStarts(_ starts: [GatewayKey: Int], _ connection: PostgresConnection) async throws {
        guard !starts.isEmpty else { return }
        let rows = Array(starts)
        try await connection.query(
            """
            INSERT INTO gateway AS g (fleet, gw, regimenStart)
                SELECT * FROM unnest(\(rows.map(\.key.fleet))::text[], \(rows.map(\.key.gateway))::text[], \(rows.map { Int64($0.value) })::int8[])
            ON CONFLICT (fleet, gw) DO UPDATE SET regimenStart = LEAST(COALESCE(g.regimenStart, excluded.regimenStart), excluded.regimenStart)
            """, logger: logger)
    }

    private func saveClockOffsets(_ offsets: [GatewayKey: [(boot: UUID, offset: Double)]], _ connection: PostgresConnection) async throws {
        guard !offsets.isEmpty else { return }
        let gateways = Array(offsets.keys)
        try await connection.query(
            """
            DELETE FROM clock_offset
            WHERE (fleet, gw) IN (SELECT * FROM unnest(\(gateways.map(\.fleet))::text[], \(gateways.map(\.gateway))::text[]))
            """, logger: logger)
        let rows = offsets.flatMap { gateway, boots in boots.enumerated().map { (gateway, Int64($0.offset), $0.element) } }
        try await connection.query(
            """
            INSERT INTO clock_offset (fleet, gw, rank, boot, offsetSeconds)
                SELECT * FROM unnest(\(rows.map(\.0.fleet))::text[], \(rows.map(\.0.gateway))::text[], \(rows.map(\.1))::int8[],
                    \(rows.map(\.2.boot.wireString))::text[], \(rows.map(\.2.offset))::float8[])
            """, logger: logger)
    }
}
