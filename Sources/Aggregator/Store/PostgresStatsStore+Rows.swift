import Foundation
import Logging
import PostgresNIO
import SpectraProtocol

// A batch's session and presence changes, folded in arrival order into one row each, then
// written with two statements per table: an update of the rows that exist and an insert of
// those that do not (the batch holds its gateways' locks, so no other instance writes them in
// between). Each fold leaves a row as the upserts the SQLite store runs one by one would.

extension PostgresStatsStore {
    struct SessionKey: Hashable {
        var gateway: GatewayKey
        var sessionId: String
    }

    /// What a batch does to one session's row.
    struct SessionRow {
        /// The day of the first change: the row's day when the batch makes the row without a start.
        var firstDay: Int
        /// The last start: its day, time and level replace the row's.
        var start: (day: Int, at: Double, level: Int)?
        var levelChanges = 0
        var trips = 0
        /// The last end: its outcome and figures replace the row's.
        var end: (summary: SessionSummary, completed: Bool, day: Int, at: Double)?
        /// An end that names a phase or regimen day sets it (the last such end's); a start only
        /// fills one the row does not have (the first start that names one).
        var phaseSet: String?, phaseFill: String?
        var regimenDaySet: Int?, regimenDayFill: Int?

        init(firstDay: Int) { self.firstDay = firstDay }

        mutating func add(_ change: SessionChange) {
            switch change {
            case .started(_, let body, let day, let at):
                start = (day, at, body.level)
                if phaseFill == nil { phaseFill = body.regimenPhase?.rawValue }
                if regimenDayFill == nil { regimenDayFill = body.regimenDay }
            case .levelChanged:
                levelChanges += 1
            case .tripped:
                trips += 1
            case .ended(_, let summary, let completed, let day, let at):
                end = (summary, completed, day, at)
                if let phase = summary.regimenPhase { phaseSet = phase.rawValue }
                if let regimenDay = summary.regimenDay { regimenDaySet = regimenDay }
            }
        }

        /// The changes, in order, folded per session.
        static func fold(_ changes: [SessionChange]) -> [(SessionKey, SessionRow)] {
            var order: [SessionKey] = []
            var rows: [SessionKey: SessionRow] = [:]
            for change in changes {
                let key: SessionKey, day: Int
                switch change {
                case .started(let gateway, let body, let changeDay, _):
                    (key, day) = (SessionKey(gateway: gateway, sessionId: body.sessionId.rawValue), changeDay)
                case .levelChanged(let gateway, let sessionId, let changeDay), .tripped(let gateway, let sessionId, let changeDay):
                    (key, day) = (SessionKey(gateway: gateway, sessionId: sessionId), changeDay)
                case .ended(let gateway, let summary, _, let changeDay, _):
                    (key, day) = (SessionKey(gateway: gateway, sessionId: summary.sessionId.rawValue), changeDay)
                }
                if rows[key] == nil {
                    order.append(key)
                    rows[key] = SessionRow(firstDay: day)
                }
                rows[key]?.add(change)
            }
            return order.compactMap { key in rows[key].map { (key, $0) } }
        }
    }

    func saveSessions(_ changes: [SessionChange], _ connection: PostgresConnection) async throws {
        let rows = SessionRow.fold(changes)
        guard !rows.isEmpty else { return }
        // Absent values travel as flags beside a placeholder (arrays cannot hold NULL here).
        var binds = PostgresBindings()
        binds.append(rows.map(\.0.gateway.fleet))
        binds.append(rows.map(\.0.gateway.gateway))
        binds.append(rows.map(\.0.sessionId))
        binds.append(rows.map { Int64($0.1.start?.day ?? $0.1.firstDay) })
        binds.append(rows.map { $0.1.start != nil })
        binds.append(rows.map { $0.1.start?.at ?? 0 })
        binds.append(rows.map { Int64($0.1.start?.level ?? 0) })
        binds.append(rows.map { Int64($0.1.levelChanges) })
        binds.append(rows.map { Int64($0.1.trips) })
        binds.append(rows.map { $0.1.end != nil })
        binds.append(rows.map { $0.1.end.map { $0.completed ? "completed" : "aborted" } ?? "running" })
        binds.append(rows.map { $0.1.end?.summary.reason != nil })
        binds.append(rows.map { Self.text($0.1.end?.summary.reason?.rawValue) ?? "" })
        binds.append(rows.map { $0.1.end?.at ?? 0 })
        binds.append(rows.map { Int64($0.1.end?.day ?? 0) })
        binds.append(rows.map { $0.1.end?.summary.durationS ?? 0 })
        binds.append(rows.map { $0.1.end?.summary.stimulatingS ?? 0 })
        for level in ["1", "2", "3"] { binds.append(rows.map { $0.1.end?.summary.levelSeconds[level] ?? 0 }) }
        binds.append(rows.map { Int64($0.1.end?.summary.pauses ?? 0) })
        binds.append(rows.map { $0.1.phaseSet ?? "" })
        binds.append(rows.map { $0.1.phaseFill ?? "" })
        binds.append(rows.map { Int64($0.1.regimenDaySet ?? -1) })
        binds.append(rows.map { Int64($0.1.regimenDayFill ?? -1) })
        let source = """
            unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bool[], $6::float8[], $7::int8[], $8::int8[], $9::int8[],
                $10::bool[], $11::text[], $12::bool[], $13::text[], $14::float8[], $15::int8[], $16::float8[], $17::float8[],
                $18::float8[], $19::float8[], $20::float8[], $21::int8[], $22::text[], $23::text[], $24::int8[], $25::int8[])
                AS t(f, g, id, d, hs, sa, lv, lc, tr, he, oc, hr, re, ea, ed, du, st, l1, l2, l3, pa, ps, pf, rs, rf)
            """
        try await updateThenInsert(
            """
                    UPDATE session AS s SET
                        day = CASE WHEN t.hs THEN t.d ELSE s.day END,
                        startedAt = CASE WHEN t.hs THEN t.sa ELSE s.startedAt END,
                        level = CASE WHEN t.hs THEN t.lv ELSE s.level END,
                        levelChanges = s.levelChanges + t.lc, trips = s.trips + t.tr,
                        outcome = CASE WHEN t.he THEN t.oc ELSE s.outcome END,
                        reason = CASE WHEN t.he THEN CASE WHEN t.hr THEN t.re END ELSE s.reason END,
                        endedAt = CASE WHEN t.he THEN t.ea ELSE s.endedAt END,
                        endDay = CASE WHEN t.he THEN t.ed ELSE s.endDay END,
                        durationS = CASE WHEN t.he THEN t.du ELSE s.durationS END,
                        stimulatingS = CASE WHEN t.he THEN t.st ELSE s.stimulatingS END,
                        l1 = CASE WHEN t.he THEN t.l1 ELSE s.l1 END, l2 = CASE WHEN t.he THEN t.l2 ELSE s.l2 END,
                        l3 = CASE WHEN t.he THEN t.l3 ELSE s.l3 END,
                        pauses = CASE WHEN t.he THEN t.pa ELSE s.pauses END,
                        phase = COALESCE(NULLIF(t.ps, ''), s.phase, NULLIF(t.pf, '')),
                        regimenDay = COALESCE(NULLIF(t.rs, -1), s.regimenDay, NULLIF(t.rf, -1))
                    FROM \(source)
                    WHERE s.fleet = t.f AND s.gw = t.g AND s.sessionId = t.id
            """,
            """
                    INSERT INTO session (fleet, gw, sessionId, day, startedAt, level, levelChanges, trips, outcome, reason,
                        endedAt, endDay, durationS, stimulatingS, l1, l2, l3, pauses, phase, regimenDay)
                    SELECT f, g, id, d, CASE WHEN hs THEN sa END, CASE WHEN hs THEN lv END, lc, tr, oc,
                        CASE WHEN he AND hr THEN re END, CASE WHEN he THEN ea END, CASE WHEN he THEN ed END,
                        CASE WHEN he THEN du END, CASE WHEN he THEN st END, l1, l2, l3, pa,
                        COALESCE(NULLIF(ps, ''), NULLIF(pf, '')), COALESCE(NULLIF(rs, -1), NULLIF(rf, -1))
                    FROM \(source)
                    ON CONFLICT (fleet, gw, sessionId) DO NOTHING
            """, binds, connection)
    }

    /// Updates the rows that exist, then inserts the rest (`ON CONFLICT DO NOTHING`), both with
    /// the same `binds`. Sound because the batch holds its gateways' locks: no other instance
    /// makes or changes those rows between the two statements.
    private func updateThenInsert(_ update: String, _ insert: String, _ binds: PostgresBindings, _ connection: PostgresConnection) async throws {
        try await connection.query(PostgresQuery(unsafeSQL: update, binds: binds), logger: logger)
        try await connection.query(PostgresQuery(unsafeSQL: insert, binds: binds), logger: logger)
    }

    /// What a batch's status and state messages do to one gateway's row.
    struct PresenceRow {
        /// The last status: online, since when, which boot.
        var status: (online: Bool, at: Double, boot: String)?
        /// The last agent version given (a status may leave it out; a state always gives one).
        var agentVersion: String?
        /// The receive time of the first status, when the broker had retained it: it dates a
        /// gateway never heard from, and nothing else.
        var retainedSeen: Double?
        /// The latest receive time of a live status.
        var liveSeen: Double?
        /// The last state: what the gateway has applied.
        var state: ReportedState?

        mutating func add(_ change: PresenceChange) {
            switch change {
            case .status(_, let body, let statusAt, let receivedAt, let retained):
                if status == nil && liveSeen == nil && retained { retainedSeen = receivedAt }
                if !retained { liveSeen = max(liveSeen ?? receivedAt, receivedAt) }
                status = (body.online, statusAt, body.boot.wireString)
                if let version = body.agentVersion { agentVersion = version }
            case .state(_, let body):
                state = body
                agentVersion = body.agentVersion
            }
        }

        /// The changes, in order, folded per gateway.
        static func fold(_ changes: [PresenceChange]) -> [(GatewayKey, PresenceRow)] {
            var order: [GatewayKey] = []
            var rows: [GatewayKey: PresenceRow] = [:]
            for change in changes {
                let gateway: GatewayKey
                switch change {
                case .status(let key, _, _, _, _), .state(let key, _): gateway = key
                }
                if rows[gateway] == nil { order.append(gateway) }
                rows[gateway, default: PresenceRow()].add(change)
            }
            return order.compactMap { key in rows[key].map { (key, $0) } }
        }
    }

    func savePresence(_ changes: [PresenceChange], _ connection: PostgresConnection) async throws {
        let rows = PresenceRow.fold(changes)
        guard !rows.isEmpty else { return }
        var binds = PostgresBindings()
        binds.append(rows.map(\.0.fleet))
        binds.append(rows.map(\.0.gateway))
        binds.append(rows.map { $0.1.status != nil })
        binds.append(rows.map { $0.1.status?.online ?? false })
        binds.append(rows.map { $0.1.status?.at ?? 0 })
        binds.append(rows.map { $0.1.status?.boot ?? "" })
        binds.append(rows.map { $0.1.agentVersion != nil })
        binds.append(rows.map { Self.text($0.1.agentVersion) ?? "" })
        binds.append(rows.map { $0.1.retainedSeen ?? .nan })
        binds.append(rows.map { $0.1.liveSeen ?? .nan })
        binds.append(rows.map { $0.1.state != nil })
        binds.append(rows.map { Self.text($0.1.state?.firmware) ?? "" })
        binds.append(rows.map { Int64($0.1.state?.levelLimits.maxLevel ?? 0) })
        binds.append(rows.map { Int64($0.1.state?.levelLimits.unlockedLevel ?? 0) })
        binds.append(rows.map { $0.1.state.map { String(decoding: WireFormat.encode($0.configVersions), as: UTF8.self) } ?? "" })
        binds.append(rows.map { $0.1.state.map { String(decoding: WireFormat.encode($0.groups), as: UTF8.self) } ?? "" })
        let source = """
            unnest($1::text[], $2::text[], $3::bool[], $4::bool[], $5::float8[], $6::text[], $7::bool[], $8::text[],
                $9::float8[], $10::float8[], $11::bool[], $12::text[], $13::int8[], $14::int8[], $15::text[], $16::text[])
                AS t(f, g, hs, ol, sa, bo, hv, av, rs, ls, ht, fw, ml, ul, cv, gl)
            """
        // A retained status moves `lastSeen` only for a gateway never heard from; a live one
        // moves it forward.
        try await updateThenInsert(
            """
                    UPDATE gateway AS g SET
                        online = CASE WHEN t.hs THEN t.ol ELSE g.online END,
                        statusAt = CASE WHEN t.hs THEN t.sa ELSE g.statusAt END,
                        boot = CASE WHEN t.hs THEN t.bo ELSE g.boot END,
                        agentVersion = CASE WHEN t.hv THEN t.av ELSE g.agentVersion END,
                        lastSeen = GREATEST(COALESCE(g.lastSeen, NULLIF(t.rs, 'NaN'::float8)), NULLIF(t.ls, 'NaN'::float8)),
                        firmware = CASE WHEN t.ht THEN t.fw ELSE g.firmware END,
                        maxLevel = CASE WHEN t.ht THEN t.ml ELSE g.maxLevel END,
                        unlockedLevel = CASE WHEN t.ht THEN t.ul ELSE g.unlockedLevel END,
                        configVersions = CASE WHEN t.ht THEN t.cv ELSE g.configVersions END,
                        groupList = CASE WHEN t.ht THEN t.gl ELSE g.groupList END
                    FROM \(source)
                    WHERE g.fleet = t.f AND g.gw = t.g
            """,
            """
                    INSERT INTO gateway (fleet, gw, online, statusAt, boot, agentVersion, lastSeen, firmware, maxLevel,
                        unlockedLevel, configVersions, groupList)
                    SELECT f, g, hs AND ol, CASE WHEN hs THEN sa END, CASE WHEN hs THEN bo END, CASE WHEN hv THEN av END,
                        GREATEST(NULLIF(rs, 'NaN'::float8), NULLIF(ls, 'NaN'::float8)), CASE WHEN ht THEN fw END,
                        CASE WHEN ht THEN ml END, CASE WHEN ht THEN ul END, CASE WHEN ht THEN cv END, CASE WHEN ht THEN gl END
                    FROM \(source)
                    ON CONFLICT (fleet, gw) DO NOTHING
            """, binds, connection)
    }
}
