import Foundation
import PostgresNIO
import SpectraProtocol

/// The API's questions on PostgreSQL: the same answers as ``SQLiteStatsStore``'s, from the
/// database every instance shares.
extension PostgresStatsStore {
    /// A WHERE clause built from conditions, with its bindings (`$1`, `$2`, ... in order).
    struct Filter {
        var conditions: [String] = []
        var binds = PostgresBindings()

        init(fleet: String?) {
            if let fleet { add("fleet = $", fleet) }
        }

        /// Adds `condition`, whose one `$` is the value's placeholder.
        mutating func add(_ condition: String, _ value: some PostgresDynamicTypeEncodable) {
            binds.append(value)
            conditions.append(condition.replacingOccurrences(of: "$", with: "$\(binds.count)"))
        }

        var sql: String { conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ") }

        /// `sql` with this filter's WHERE clause in place of `{where}`.
        func query(_ sql: String) -> PostgresQuery {
            PostgresQuery(unsafeSQL: sql.replacingOccurrences(of: "{where}", with: self.sql), binds: binds)
        }
    }

    /// Sums read back as doubles (they never overflow) and held to `Int`'s range.
    static func count(_ value: Double?) -> Int {
        guard let value, value.isFinite else { return (value ?? 0) > 0 ? .max : 0 }
        return Int(clampingFinite: value)
    }

    /// The first row of `query`, decoded as `T`.
    func first<T: Sendable>(_ query: PostgresQuery, as type: T.Type) async throws -> T? where T: PostgresDecodable {
        for try await value in try await client.query(query, logger: logger).decode(T.self) { return value }
        return nil
    }

    public func fleets() async throws -> [String] {
        var fleets: [String] = []
        for try await fleet in try await client.query("SELECT DISTINCT fleet FROM gateway ORDER BY fleet", logger: logger).decode(String.self) {
            fleets.append(fleet)
        }
        return fleets
    }

    public func summary(fleet: String?, now: Date) async throws -> FleetSummary {
        let today = Day(now)
        let filter = Filter(fleet: fleet)
        var counts = (0, 0, 0)
        let threshold = now.timeIntervalSince1970 - silentAfterSeconds
        let countQuery = filter.query(
            """
            SELECT COUNT(*)::float8, COALESCE(SUM(online::int), 0)::float8,
                COALESCE(SUM((online AND COALESCE(lastSeen, 0) < \(threshold))::int), 0)::float8 FROM gateway {where}
            """)
        for try await (n, online, silent) in try await client.query(countQuery, logger: logger).decode((Double, Double, Double).self) {
            counts = (Self.count(n), Self.count(online), Self.count(silent))
        }
        var activeFilter = filter
        activeFilter.add("day = $", Int64(today.number))
        let active = try await first(
            activeFilter.query("SELECT COUNT(DISTINCT gw)::int8 FROM daily {where} AND (started + completed + aborted) > 0"), as: Int64.self) ?? 0
        let totals = try await totals(filter)
        let reasons = try await abortReasons(filter)
        var firmware: [String: Int] = [:]
        for try await (name, n) in try await client.query(
            filter.query("SELECT COALESCE(firmware, 'unknown'), COUNT(*)::float8 FROM gateway {where} GROUP BY 1"), logger: logger
        ).decode((String, Double).self) {
            firmware[name] = Self.count(n)
        }
        var backlog = Backlog(messages: 0, bytes: 0, gatewaysWithBacklog: 0)
        for try await (m, b, g) in try await client.query(
            filter.query(
                """
                SELECT COALESCE(SUM(outboxDepth), 0)::float8, COALESCE(SUM(outboxBytes), 0)::float8,
                    COALESCE(SUM((outboxDepth > 0)::int), 0)::float8 FROM gateway {where}
                """), logger: logger
        ).decode((Double, Double, Double).self) {
            backlog = Backlog(messages: Self.count(m), bytes: Self.count(b), gatewaysWithBacklog: Self.count(g))
        }
        let completeness = try await completeness(filter)
        let adherence = try await adherence(filter, today: today).values.reduce(Adherence(), +)
        return FleetSummary(
            fleet: fleet, generatedAt: now, today: today, gateways: counts.0, online: counts.1, silent: counts.2,
            activeToday: Int(active), sessions: totals, abortReasons: reasons, adherence: adherence, adherenceRatio: adherence.ratio,
            firmware: firmware, backlog: backlog, completeness: completeness.values.reduce(Completeness(), +))
    }

    public func daily(fleet: String?, from: Day, to: Day) async throws -> [DailyStats] {
        var filter = Filter(fleet: fleet)
        filter.add("day >= $", Int64(from.number))
        filter.add("day <= $", Int64(to.number))
        return try await dailyStats(filter, from: from, to: to)
    }

    public func gateways(fleet: String?, search: String?, now: Date) async throws -> [GatewaySummary] {
        var filter = Filter(fleet: fleet)
        if let search, !search.isEmpty { filter.add("strpos(lower(gw), lower($)) > 0", search) }
        return try await gatewaySummaries(filter, now: now)
    }

    public func gateway(fleet: String?, id: String, now: Date, from: Day, to: Day) async throws -> GatewayDetail? {
        var filter = Filter(fleet: fleet)
        filter.add("gw = $", id)
        guard let summary = try await gatewaySummaries(filter, now: now).first else { return nil }
        var dayFilter = filter
        dayFilter.add("fleet = $", summary.fleet)
        dayFilter.add("day >= $", Int64(from.number))
        dayFilter.add("day <= $", Int64(to.number))
        let daily = try await dailyStats(dayFilter, from: from, to: to)
        let sessions = try await sessionRecords(
            fleet: summary.fleet, gateway: id, from: Day(number: .min / 2), to: Day(number: .max / 2), limit: 20)
        return GatewayDetail(gateway: summary, daily: daily, recentSessions: sessions)
    }

    public func sessions(fleet: String?, gateway: String, from: Day, to: Day, limit: Int) async throws -> [SessionRecord]? {
        var filter = Filter(fleet: fleet)
        filter.add("gw = $", gateway)
        guard let fleet = try await first(filter.query("SELECT fleet FROM gateway {where} ORDER BY fleet LIMIT 1"), as: String.self)
        else { return nil }
        return try await sessionRecords(fleet: fleet, gateway: gateway, from: from, to: to, limit: limit)
    }

    // MARK: Building blocks

    /// The sums every totals query reads, in this order.
    static let totalsColumns = """
        COALESCE(SUM(started), 0)::float8, COALESCE(SUM(completed), 0)::float8, COALESCE(SUM(aborted), 0)::float8,
        COALESCE(SUM(pauses), 0)::float8, COALESCE(SUM(trips), 0)::float8, COALESCE(SUM(l1), 0)::float8,
        COALESCE(SUM(l2), 0)::float8, COALESCE(SUM(l3), 0)::float8
        """

    typealias Sums = (Double, Double, Double, Double, Double, Double, Double, Double)

    static func totals(_ sums: Sums) -> SessionTotals {
        var totals = SessionTotals()
        totals.started = count(sums.0)
        totals.completed = count(sums.1)
        totals.aborted = count(sums.2)
        totals.pauses = count(sums.3)
        totals.safetyTrips = count(sums.4)
        func minutes(_ seconds: Double) -> Double { seconds.isFinite ? max(0, seconds) / 60 : (seconds > 0 ? .greatestFiniteMagnitude : 0) }
        totals.levelMinutes = ["1": minutes(sums.5), "2": minutes(sums.6), "3": minutes(sums.7)]
        return totals
    }

    func totals(_ filter: Filter) async throws -> SessionTotals {
        let rows = try await client.query(filter.query("SELECT \(Self.totalsColumns) FROM daily {where}"), logger: logger)
        for try await sums in rows.decode(Sums.self) { return Self.totals(sums) }
        return SessionTotals()
    }

    func abortReasons(_ filter: Filter) async throws -> [String: Int] {
        var reasons: [String: Int] = [:]
        for try await (reason, n) in try await client.query(
            filter.query("SELECT reason, SUM(count)::float8 FROM abort_reason {where} GROUP BY reason"), logger: logger
        ).decode((String, Double).self) {
            reasons[reason] = Self.count(n)
        }
        return reasons
    }

    func dailyStats(_ filter: Filter, from: Day, to: Day) async throws -> [DailyStats] {
        var byDay: [Int: DailyStats] = [:]
        for try await (day, active, s0, s1, s2, s3, s4, s5, s6, s7) in try await client.query(
            filter.query(
                """
                SELECT day, SUM((started + completed + aborted > 0)::int)::float8, \(Self.totalsColumns)
                FROM daily {where} GROUP BY day
                """), logger: logger
        ).decode((Int64, Double, Double, Double, Double, Double, Double, Double, Double, Double).self) {
            byDay[Int(day)] = DailyStats(
                day: Day(number: Int(day)), activeGateways: Self.count(active), sessions: Self.totals((s0, s1, s2, s3, s4, s5, s6, s7)),
                abortReasons: [:])
        }
        for try await (day, reason, n) in try await client.query(
            filter.query("SELECT day, reason, SUM(count)::float8 FROM abort_reason {where} GROUP BY day, reason"), logger: logger
        ).decode((Int64, String, Double).self) {
            byDay[Int(day)]?.abortReasons[reason] = Self.count(n)
        }
        guard from <= to else { return [] }
        return (from.number...to.number).map { number in
            byDay[number] ?? DailyStats(day: Day(number: number), activeGateways: 0, sessions: SessionTotals(), abortReasons: [:])
        }
    }

    func completeness(_ filter: Filter) async throws -> [GatewayKey: Completeness] {
        var result: [GatewayKey: Completeness] = [:]
        for try await (fleet, gw, r, e, ev) in try await client.query(
            filter.query(
                """
                SELECT fleet, gw, SUM(count)::float8, SUM(maxSeq::float8 - minSeq::float8 + 1)::float8, SUM(evicted)::float8
                FROM stream {where} GROUP BY fleet, gw
                """), logger: logger
        ).decode((String, String, Double, Double, Double).self) {
            result[GatewayKey(fleet: fleet, gateway: gw)] = Completeness(received: Self.count(r), expected: Self.count(e), evicted: Self.count(ev))
        }
        return result
    }

    /// Adherence per gateway that has a regimen start or a completed session (as on SQLite).
    func adherence(_ filter: Filter, today: Day) async throws -> [GatewayKey: Adherence] {
        var completed: [GatewayKey: [Day: Int]] = [:]
        var dailyFilter = filter
        dailyFilter.conditions.append("completed > 0")
        for try await (fleet, gw, day, n) in try await client.query(
            dailyFilter.query("SELECT fleet, gw, day, completed FROM daily {where}"), logger: logger
        ).decode((String, String, Int64, Int64).self) {
            completed[GatewayKey(fleet: fleet, gateway: gw), default: [:]][Day(number: Int(day))] = Int(n)
        }
        let epoch = Day(WireRanges.productEpoch).number
        var starts: [GatewayKey: Day] = [:]
        for try await (fleet, gw, start) in try await client.query(
            filter.query("SELECT fleet, gw, regimenStart FROM gateway {where}"), logger: logger
        ).decode((String, String, Int64?).self) {
            if let start { starts[GatewayKey(fleet: fleet, gateway: gw)] = Day(number: max(Int(start), epoch)) }
        }
        var result: [GatewayKey: Adherence] = [:]
        for key in Set(completed.keys).union(starts.keys) {
            let days = completed[key] ?? [:]
            guard let start = (starts[key] ?? days.keys.min()).map({ Day(number: max($0.number, epoch)) }) else { continue }
            result[key] = Adherence(start: start, completed: days, today: today)
        }
        return result
    }

    func gatewaySummaries(_ filter: Filter, now: Date) async throws -> [GatewaySummary] {
        let today = Day(now)
        let adherence = try await adherence(filter, today: today)
        let completeness = try await completeness(filter)
        var totals: [GatewayKey: SessionTotals] = [:]
        for try await (fleet, gw, s0, s1, s2, s3, s4, s5, s6, s7) in try await client.query(
            filter.query("SELECT fleet, gw, \(Self.totalsColumns) FROM daily {where} GROUP BY fleet, gw"), logger: logger
        ).decode((String, String, Double, Double, Double, Double, Double, Double, Double, Double).self) {
            totals[GatewayKey(fleet: fleet, gateway: gw)] = Self.totals((s0, s1, s2, s3, s4, s5, s6, s7))
        }
        var lastSession: [GatewayKey: Double] = [:]
        for try await (fleet, gw, at) in try await client.query(
            filter.query("SELECT fleet, gw, MAX(COALESCE(startedAt, endedAt)) FROM session {where} GROUP BY fleet, gw"), logger: logger
        ).decode((String, String, Double?).self) {
            if let at { lastSession[GatewayKey(fleet: fleet, gateway: gw)] = at }
        }
        let refusals = try await refusals(filter, now: now)
        var result: [GatewaySummary] = []
        let rows = try await client.query(
            filter.query(
                """
                SELECT fleet, gw, online, lastSeen, agentVersion, firmware, maxLevel, unlockedLevel, configVersions, groupList,
                    regimenStart, outboxDepth, outboxBytes, batteryPct, rssKiB, reconnects, statusAt
                FROM gateway {where} ORDER BY fleet, gw
                """), logger: logger)
        for try await row in rows {
            let (fleet, gw, online, lastSeen, agentVersion, firmware, maxLevel, unlockedLevel, versions, groups, start, depth, bytes,
                battery, rss, reconnects, statusAt) = try row.decode(
                    (String, String, Bool, Double?, String?, String?, Int64?, Int64?, String?, String?, Int64?, Int64?, Int64?, Double?,
                     Int64?, Int64?, Double?).self)
            let key = GatewayKey(fleet: fleet, gateway: gw)
            let regimenStart = start.map { Day(number: Int($0)) }
            let gatewayAdherence = adherence[key] ?? Adherence()
            result.append(
                GatewaySummary(
                    fleet: fleet, gateway: gw, online: online, lastSeen: lastSeen.map(Date.init(timeIntervalSince1970:)),
                    agentVersion: agentVersion, firmware: firmware, maxLevel: maxLevel.map { Int($0) },
                    unlockedLevel: unlockedLevel.map { Int($0) },
                    configVersions: Self.decode([String: Int].self, versions) ?? [:], groups: Self.decode([String].self, groups) ?? [],
                    sessions: totals[key] ?? SessionTotals(), lastSessionAt: lastSession[key].map(Date.init(timeIntervalSince1970:)),
                    regimenStart: regimenStart,
                    phase: regimenStart.map { today.number - $0.number < Adherence.loadingPhaseDays ? "loading" : "maintenance" },
                    adherence: gatewayAdherence, adherenceRatio: gatewayAdherence.ratio,
                    backlog: Backlog(
                        messages: Int(depth ?? 0), bytes: Int(bytes ?? 0), gatewaysWithBacklog: (depth ?? 0) > 0 ? 1 : 0),
                    completeness: completeness[key] ?? Completeness(), batteryPct: battery, rssKiB: rss.map { Int($0) },
                    reconnects: reconnects.map { Int($0) }, refusals: refusals[key],
                    statusSince: statusAt.map(Date.init(timeIntervalSince1970:))))
        }
        return result
    }

    func refusals(_ filter: Filter, now date: Date) async throws -> [GatewayKey: GatewayRefusals] {
        var result: [GatewayKey: GatewayRefusals] = [:]
        let now = date.timeIntervalSince1970
        for try await (fleet, gw, reason, count, lastAt, detail) in try await client.query(
            filter.query("SELECT fleet, gw, reason, count, lastAt, lastDetail FROM refusal {where} ORDER BY lastAt"), logger: logger
        ).decode((String, String, String, Int64, Double, String).self) {
            let key = GatewayKey(fleet: fleet, gateway: gw)
            var refusals = result[key] ?? GatewayRefusals(
                total: 0, byReason: [:], lastReason: reason, lastDetail: "", lastAt: Date(timeIntervalSince1970: lastAt), refusing: false)
            refusals.total = refusals.total.saturatingAdd(Int(count))
            refusals.byReason[reason] = Int(count)
            refusals.lastReason = reason
            refusals.lastDetail = detail
            refusals.lastAt = Date(timeIntervalSince1970: lastAt)
            refusals.refusing = now - lastAt <= GatewayRefusals.recentSeconds
            result[key] = refusals
        }
        return result
    }

    func sessionRecords(fleet: String, gateway: String, from: Day, to: Day, limit: Int) async throws -> [SessionRecord] {
        var records: [SessionRecord] = []
        let rows = try await client.query(
            """
            SELECT sessionId, day, startedAt, endedAt, outcome, reason, level, durationS, stimulatingS, l1, l2, l3,
                pauses, levelChanges, trips, phase, regimenDay
            FROM session WHERE fleet = \(fleet) AND gw = \(gateway) AND day >= \(Int64(from.number)) AND day <= \(Int64(to.number))
            ORDER BY COALESCE(startedAt, endedAt) DESC NULLS LAST, sessionId LIMIT \(Int64(max(0, limit)))
            """, logger: logger)
        for try await row in rows {
            let r = try row.decode(
                (String, Int64, Double?, Double?, String, String?, Int64?, Double?, Double?, Double, Double, Double, Int64, Int64, Int64,
                 String?, Int64?).self)
            records.append(
                SessionRecord(
                    sessionId: r.0, day: Day(number: Int(r.1)), startedAt: r.2.map(Date.init(timeIntervalSince1970:)),
                    endedAt: r.3.map(Date.init(timeIntervalSince1970:)), outcome: r.4, reason: r.5, level: r.6.map { Int($0) },
                    durationS: r.7, stimulatingS: r.8, levelSeconds: ["1": r.9, "2": r.10, "3": r.11], pauses: Int(r.12),
                    levelChanges: Int(r.13), safetyTrips: Int(r.14), regimenPhase: r.15, regimenDay: r.16.map { Int($0) }))
        }
        return records
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ text: String?) -> T? {
        guard let text else { return nil }
        return try? JSONDecoder().decode(type, from: Data(text.utf8))
    }
}
