import Foundation
import GRDB
import SpectraProtocol

extension SQLiteStatsStore {
    public func summary(fleet: String?, now: Date) async throws -> FleetSummary {
        let today = Day(now)
        return try await pool.read { db in
            let filter = Self.fleetFilter(fleet)
            let counts = try Row.fetchOne(
                db, sql: """
                    SELECT COUNT(*) AS n, TOTAL(online) AS online,
                        TOTAL(online AND COALESCE(lastSeen, 0) < ?) AS silent FROM gateway \(filter.sql)
                    """, arguments: StatementArguments([now.timeIntervalSince1970 - self.silentAfterSeconds]) + filter.arguments)
            let active = try Int.fetchOne(
                db, sql: """
                    SELECT COUNT(DISTINCT gw) FROM daily WHERE day = ? AND (started + completed + aborted) > 0
                    \(fleet == nil ? "" : "AND fleet = ?")
                    """, arguments: StatementArguments([today.number] + (fleet.map { [$0] } ?? []))) ?? 0
            let totals = try Self.totals(db, where: filter)
            let reasons = try Self.abortReasons(db, where: filter)
            var firmware: [String: Int] = [:]
            for row in try Row.fetchAll(
                db, sql: "SELECT COALESCE(firmware, 'unknown') AS fw, COUNT(*) AS n FROM gateway \(filter.sql) GROUP BY fw",
                arguments: filter.arguments)
            {
                firmware[row["fw"] ?? "unknown"] = row.count("n")
            }
            let backlogRow = try Row.fetchOne(
                db, sql: """
                    SELECT TOTAL(outboxDepth) AS m, TOTAL(outboxBytes) AS b, TOTAL(outboxDepth > 0) AS g FROM gateway \(filter.sql)
                    """, arguments: filter.arguments)
            let completeness = try Self.completeness(db, where: filter)
            let adherence = try Self.adherence(db, where: filter, today: today).values.reduce(Adherence(), +)
            return FleetSummary(
                fleet: fleet, generatedAt: now, today: today, gateways: counts?.count("n") ?? 0, online: counts?.count("online") ?? 0,
                silent: counts?.count("silent") ?? 0, activeToday: active, sessions: totals, abortReasons: reasons, adherence: adherence,
                adherenceRatio: adherence.ratio, firmware: firmware,
                backlog: Backlog(
                    messages: backlogRow?.count("m") ?? 0, bytes: backlogRow?.count("b") ?? 0,
                    gatewaysWithBacklog: backlogRow?.count("g") ?? 0),
                completeness: completeness.values.reduce(Completeness(), +))
        }
    }

    public func daily(fleet: String?, from: Day, to: Day) async throws -> [DailyStats] {
        try await pool.read { db in
            var filter = Self.fleetFilter(fleet)
            filter.add("day >= ?", from.number)
            filter.add("day <= ?", to.number)
            return try Self.dailyStats(db, where: filter, from: from, to: to)
        }
    }

    public func gateways(fleet: String?, search: String?, now: Date) async throws -> [GatewaySummary] {
        try await pool.read { db in
            var filter = Self.fleetFilter(fleet)
            if let search, !search.isEmpty {
                filter.add("instr(lower(gw), lower(?)) > 0", search)
            }
            return try Self.gatewaySummaries(db, where: filter, now: now)
        }
    }

    public func gateway(fleet: String?, id: String, now: Date, from: Day, to: Day) async throws -> GatewayDetail? {
        try await pool.read { db in
            var filter = Self.fleetFilter(fleet)
            filter.add("gw = ?", id)
            guard let summary = try Self.gatewaySummaries(db, where: filter, now: now).first else { return nil }
            var dayFilter = filter
            dayFilter.add("fleet = ?", summary.fleet)
            dayFilter.add("day >= ?", from.number)
            dayFilter.add("day <= ?", to.number)
            let daily = try Self.dailyStats(db, where: dayFilter, from: from, to: to)
            let sessions = try Self.sessionRecords(db, fleet: summary.fleet, gateway: id, from: Day(number: .min / 2), to: Day(number: .max / 2), limit: 20)
            return GatewayDetail(gateway: summary, daily: daily, recentSessions: sessions)
        }
    }

    public func sessions(fleet: String?, gateway: String, from: Day, to: Day, limit: Int) async throws -> [SessionRecord]? {
        try await pool.read { db in
            var filter = Self.fleetFilter(fleet)
            filter.add("gw = ?", gateway)
            guard let fleet = try String.fetchOne(db, sql: "SELECT fleet FROM gateway \(filter.sql) ORDER BY fleet LIMIT 1", arguments: filter.arguments)
            else { return nil }
            return try Self.sessionRecords(db, fleet: fleet, gateway: gateway, from: from, to: to, limit: limit)
        }
    }

    // MARK: Building blocks

    /// A WHERE clause built from conditions, with its arguments.
    struct Filter {
        var conditions: [String] = []
        var values: [any DatabaseValueConvertible & Sendable] = []
        mutating func add(_ condition: String, _ value: any DatabaseValueConvertible & Sendable) {
            conditions.append(condition)
            values.append(value)
        }
        var sql: String { conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ") }
        var arguments: StatementArguments { StatementArguments(values) }
    }

    static func fleetFilter(_ fleet: String?) -> Filter {
        var filter = Filter()
        if let fleet { filter.add("fleet = ?", fleet) }
        return filter
    }

    static func totals(_ db: Database, where filter: Filter) throws -> SessionTotals {
        var totals = SessionTotals()
        if let row = try Row.fetchOne(
            db, sql: """
                SELECT TOTAL(started) AS s, TOTAL(completed) AS c, TOTAL(aborted) AS a, TOTAL(pauses) AS p, TOTAL(trips) AS t,
                    TOTAL(l1) AS l1, TOTAL(l2) AS l2, TOTAL(l3) AS l3
                FROM daily \(filter.sql)
                """, arguments: filter.arguments)
        {
            totals = Self.totals(row)
        }
        return totals
    }

    /// Totals from a row of sums (`TOTAL`, which never overflows), read without trapping.
    static func totals(_ row: Row) -> SessionTotals {
        var totals = SessionTotals()
        totals.started = row.count("s")
        totals.completed = row.count("c")
        totals.aborted = row.count("a")
        totals.pauses = row.count("p")
        totals.safetyTrips = row.count("t")
        totals.levelMinutes = ["1": row.seconds("l1") / 60, "2": row.seconds("l2") / 60, "3": row.seconds("l3") / 60]
        return totals
    }

    static func abortReasons(_ db: Database, where filter: Filter) throws -> [String: Int] {
        var reasons: [String: Int] = [:]
        for row in try Row.fetchAll(
            db, sql: "SELECT reason, TOTAL(count) AS n FROM abort \(filter.sql) GROUP BY reason", arguments: filter.arguments)
        {
            reasons[row["reason"] ?? "unknown"] = row.count("n")
        }
        return reasons
    }

    static func dailyStats(_ db: Database, where filter: Filter, from: Day, to: Day) throws -> [DailyStats] {
        var byDay: [Int: DailyStats] = [:]
        for row in try Row.fetchAll(
            db, sql: """
                SELECT day, TOTAL(started + completed + aborted > 0) AS active,
                    TOTAL(started) AS s, TOTAL(completed) AS c, TOTAL(aborted) AS a, TOTAL(pauses) AS p, TOTAL(trips) AS t,
                    TOTAL(l1) AS l1, TOTAL(l2) AS l2, TOTAL(l3) AS l3
                FROM daily \(filter.sql) GROUP BY day
                """, arguments: filter.arguments)
        {
            let day: Int = row["day"]
            byDay[day] = DailyStats(day: Day(number: day), activeGateways: row.count("active"), sessions: totals(row), abortReasons: [:])
        }
        for row in try Row.fetchAll(
            db, sql: "SELECT day, reason, TOTAL(count) AS n FROM abort \(filter.sql) GROUP BY day, reason", arguments: filter.arguments)
        {
            byDay[row["day"]]?.abortReasons[row["reason"] ?? "unknown"] = row.count("n")
        }
        guard from <= to else { return [] }
        return (from.number...to.number).map { number in
            byDay[number] ?? DailyStats(day: Day(number: number), activeGateways: 0, sessions: SessionTotals(), abortReasons: [:])
        }
    }

    static func completeness(_ db: Database, where filter: Filter) throws -> [GatewayKey: Completeness] {
        var result: [GatewayKey: Completeness] = [:]
        for row in try Row.fetchAll(
            db, sql: """
                SELECT fleet, gw, TOTAL(count) AS r, TOTAL(maxSeq - minSeq + 1) AS e, TOTAL(evicted) AS ev
                FROM stream \(filter.sql) GROUP BY fleet, gw
                """, arguments: filter.arguments)
        {
            result[GatewayKey(fleet: row["fleet"], gateway: row["gw"])] = Completeness(
                received: row.count("r"), expected: row.count("e"), evicted: row.count("ev"))
        }
        return result
    }

    /// Adherence per gateway that has a regimen start or a completed session. Completions per
    /// day come from `daily` (kept for good; session rows are pruned past retention).
    static func adherence(_ db: Database, where filter: Filter, today: Day) throws -> [GatewayKey: Adherence] {
        var completed: [GatewayKey: [Day: Int]] = [:]
        var dailyFilter = filter
        dailyFilter.conditions.append("completed > 0")
        for row in try Row.fetchAll(
            db, sql: "SELECT fleet, gw, day, completed FROM daily \(dailyFilter.sql)", arguments: dailyFilter.arguments)
        {
            completed[GatewayKey(fleet: row["fleet"], gateway: row["gw"]), default: [:]][Day(number: row["day"])] = row.count("completed")
        }
        var starts: [GatewayKey: Day] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT fleet, gw, regimenStart FROM gateway \(filter.sql)", arguments: filter.arguments) {
            // No regimen starts before the product existed (a row from before the contract's
            // ranges could say otherwise; judging it would take a loop over every day since).
            if let start = row.int("regimenStart") {
                starts[GatewayKey(fleet: row["fleet"], gateway: row["gw"])] = Day(number: max(start, Day(WireRanges.productEpoch).number))
            }
        }
        var result: [GatewayKey: Adherence] = [:]
        for key in Set(completed.keys).union(starts.keys) {
            let days = completed[key] ?? [:]
            guard let start = (starts[key] ?? days.keys.min()).map({ Day(number: max($0.number, Day(WireRanges.productEpoch).number)) })
            else { continue }
            result[key] = Adherence(start: start, completed: days, today: today)
        }
        return result
    }

    static func gatewaySummaries(_ db: Database, where filter: Filter, now: Date) throws -> [GatewaySummary] {
        let today = Day(now)
        let adherence = try adherence(db, where: filter, today: today)
        let completeness = try completeness(db, where: filter)
        var totals: [GatewayKey: SessionTotals] = [:]
        for row in try Row.fetchAll(
            db, sql: """
                SELECT fleet, gw, TOTAL(started) AS s, TOTAL(completed) AS c, TOTAL(aborted) AS a, TOTAL(pauses) AS p,
                    TOTAL(trips) AS t, TOTAL(l1) AS l1, TOTAL(l2) AS l2, TOTAL(l3) AS l3 FROM daily \(filter.sql) GROUP BY fleet, gw
                """, arguments: filter.arguments)
        {
            totals[GatewayKey(fleet: row["fleet"], gateway: row["gw"])] = Self.totals(row)
        }
        var lastSession: [GatewayKey: Double] = [:]
        for row in try Row.fetchAll(
            db, sql: "SELECT fleet, gw, MAX(COALESCE(startedAt, endedAt)) AS at FROM session \(filter.sql) GROUP BY fleet, gw",
            arguments: filter.arguments)
        {
            if let at: Double = row["at"] { lastSession[GatewayKey(fleet: row["fleet"], gateway: row["gw"])] = at }
        }
        let refusals = try refusals(db, where: filter, now: now)
        return try Row.fetchAll(db, sql: "SELECT * FROM gateway \(filter.sql) ORDER BY fleet, gw", arguments: filter.arguments).map { row in
            let key = GatewayKey(fleet: row["fleet"], gateway: row["gw"])
            let start = row.int("regimenStart").map(Day.init(number:))
            let gatewayAdherence = adherence[key] ?? Adherence()
            let depth = row.int("outboxDepth")
            return GatewaySummary(
                fleet: key.fleet, gateway: key.gateway, online: row["online"] ?? false,
                lastSeen: (row["lastSeen"] as Double?).map(Date.init(timeIntervalSince1970:)),
                agentVersion: row["agentVersion"], firmware: row["firmware"], maxLevel: row.int("maxLevel"),
                unlockedLevel: row.int("unlockedLevel"),
                configVersions: decode([String: Int].self, row["configVersions"]) ?? [:],
                groups: decode([String].self, row["groups"]) ?? [],
                sessions: totals[key] ?? SessionTotals(),
                lastSessionAt: lastSession[key].map(Date.init(timeIntervalSince1970:)),
                regimenStart: start,
                phase: start.map { today.number - $0.number < Adherence.loadingPhaseDays ? "loading" : "maintenance" },
                adherence: gatewayAdherence, adherenceRatio: gatewayAdherence.ratio,
                backlog: Backlog(messages: depth ?? 0, bytes: row.int("outboxBytes") ?? 0, gatewaysWithBacklog: (depth ?? 0) > 0 ? 1 : 0),
                completeness: completeness[key] ?? Completeness(),
                batteryPct: row["batteryPct"], rssKiB: row.int("rssKiB"), reconnects: row.int("reconnects"),
                refusals: refusals[key], statusSince: (row["statusAt"] as Double?).map(Date.init(timeIntervalSince1970:)))
        }
    }

    /// What was refused per gateway; `refusing` when the latest refusal is at most
    /// ``GatewayRefusals/recentSeconds`` before `now` (refusals are timed by the same clock).
    static func refusals(_ db: Database, where filter: Filter, now date: Date) throws -> [GatewayKey: GatewayRefusals] {
        var result: [GatewayKey: GatewayRefusals] = [:]
        let now = date.timeIntervalSince1970
        for row in try Row.fetchAll(
            db, sql: "SELECT fleet, gw, reason, count, lastAt, lastDetail FROM refusal \(filter.sql) ORDER BY lastAt",
            arguments: filter.arguments)
        {
            let key = GatewayKey(fleet: row["fleet"], gateway: row["gw"])
            let reason: String = row["reason"], count = row.count("count"), lastAt: Double = row["lastAt"] ?? 0
            var refusals = result[key] ?? GatewayRefusals(
                total: 0, byReason: [:], lastReason: reason, lastDetail: "", lastAt: Date(timeIntervalSince1970: lastAt), refusing: false)
            refusals.total = refusals.total.saturatingAdd(count)
            refusals.byReason[reason] = count
            // Rows come oldest first: the last one read is the latest refusal.
            refusals.lastReason = reason
            refusals.lastDetail = row["lastDetail"] ?? ""
            refusals.lastAt = Date(timeIntervalSince1970: lastAt)
            refusals.refusing = now - lastAt <= GatewayRefusals.recentSeconds
            result[key] = refusals
        }
        return result
    }

    static func sessionRecords(_ db: Database, fleet: String, gateway: String, from: Day, to: Day, limit: Int) throws -> [SessionRecord] {
        try Row.fetchAll(
            db, sql: """
                SELECT * FROM session WHERE fleet = ? AND gw = ? AND day >= ? AND day <= ?
                ORDER BY COALESCE(startedAt, endedAt) DESC, sessionId LIMIT ?
                """, arguments: [fleet, gateway, from.number, to.number, limit]
        ).map { row in
            SessionRecord(
                sessionId: row["sessionId"], day: Day(number: row["day"]),
                startedAt: (row["startedAt"] as Double?).map(Date.init(timeIntervalSince1970:)),
                endedAt: (row["endedAt"] as Double?).map(Date.init(timeIntervalSince1970:)),
                outcome: row["outcome"], reason: row["reason"], level: row.int("level"), durationS: row["durationS"],
                stimulatingS: row["stimulatingS"], levelSeconds: ["1": row["l1"], "2": row["l2"], "3": row["l3"]],
                pauses: row.count("pauses"), levelChanges: row.count("levelChanges"), safetyTrips: row.count("trips"),
                regimenPhase: row["phase"], regimenDay: row.int("regimenDay"))
        }
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ text: String?) -> T? {
        guard let text else { return nil }
        return try? JSONDecoder().decode(type, from: Data(text.utf8))
    }
}
