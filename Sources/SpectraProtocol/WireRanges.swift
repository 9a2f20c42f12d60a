import Foundation

/// The valid range of every number (and the length of every free text) an envelope carries,
/// derived from what a real gateway can produce. `docs/wire-ranges.md` is the table of record;
/// this type is the check.
///
/// Both envelope decoders (the reference and the ingest fast path) run ``check(_:)`` on what
/// they decoded, so they refuse the same envelopes with the same error: `outOfRange`, naming the
/// field, the value and the range. Nothing outside these ranges reaches a consumer's arithmetic.
public enum WireRanges {
    /// The first day the product could have produced data: 2024-01-01T00:00:00Z. No `ts` is
    /// earlier, and no regimen is longer than the days since.
    public static let productEpoch = Date(timeIntervalSince1970: 1_704_067_200)
    /// The end of the static `ts` window: 2100-01-01T00:00:00Z. Receivers also refuse a synced
    /// `ts` more than ``maxFutureSkewSeconds`` ahead of their own clock.
    public static let timestampEnd = Date(timeIntervalSince1970: 4_102_444_800)
    /// How far ahead of the receiver's clock a synced `ts` may be, seconds (one day).
    public static let maxFutureSkewSeconds: Double = 86_400

    /// `seq`: 0 to 2^40 - 1 (a gateway publishing 100 messages a second for 300 years).
    public static let seq: ClosedRange<UInt64> = 0...(1 << 40 - 1)
    /// `mono`, nanoseconds since boot: any non-negative 64-bit count (it is never summed).
    public static let monoNanos: ClosedRange<UInt64> = 0...UInt64(Int64.max)

    /// Seconds of stimulation in one session: 900 by hard rule 6, plus 1 s for rounding.
    public static let stimulatingSeconds: ClosedRange<Double> = 0...901
    /// Wall seconds from a session's start to its end, pauses and a gateway's downtime
    /// included (a session cut by a restart ends when the agent is back): at most a year.
    public static let sessionDurationSeconds: ClosedRange<Double> = 0...31_622_400
    /// Pauses in one session: a resume needs 1 s of stable contact, so at most one per
    /// second of stimulation.
    public static let pauses: ClosedRange<Int> = 0...1_000
    /// Absolute charge per channel in one session, microcoulombs: 1000 uA for 900 s is 900,000.
    public static let chargeMicroCoulombs: ClosedRange<Double> = 0...1_000_000
    /// Channels named in one session (`channels`, `chargeMicroCoulombs`, telemetry's `channels`).
    public static let maxChannels = 32
    /// The longest free text (reasons, rule names, channel ids, versions), UTF-8 bytes.
    public static let maxShortText = 64
    /// The longest detail text (`config.rejected` reason, `firmware.progress` detail,
    /// `outbox.reset` fields), UTF-8 bytes.
    public static let maxDetailText = 1_024
    /// `regimenDay`: 1 up to the days from ``productEpoch`` to the envelope's `ts`, plus one.
    public static func regimenDays(at timestamp: Date) -> ClosedRange<Int> {
        1...max(1, Int((timestamp.timeIntervalSince(productEpoch) / 86_400).rounded(.down)) + 1)
    }

    /// `outbox.evicted` `count`: messages dropped in one eviction (an outbox holds under a few
    /// million messages at any cap a gateway's disk allows).
    public static let evictedCount: ClosedRange<Int> = 1...10_000_000
    /// `outbox.evicted` `bytes`, and telemetry's `outboxBytes`: up to 1 TiB.
    public static let outboxBytes: ClosedRange<Int> = 0...(1 << 40)
    /// Telemetry's `outboxDepth`, messages.
    public static let outboxDepth: ClosedRange<Int> = 0...1_000_000_000
    /// Telemetry's `oldestUnackedS`: up to ten years.
    public static let oldestUnackedSeconds: ClosedRange<Double> = 0...315_360_000
    /// Telemetry's `reconnects` since the agent started.
    public static let reconnects: ClosedRange<Int> = 0...Int(Int32.max)
    /// Telemetry's `rssKiB`: up to 4 TiB.
    public static let rssKiB: ClosedRange<Int> = 0...(1 << 32)
    /// Telemetry's `elapsedS` in a session: the session's wall duration.
    public static let elapsedSeconds: ClosedRange<Double> = sessionDurationSeconds
    /// Telemetry's `vibrationRpm`: the motor's 8000 rpm target with room for faults.
    public static let vibrationRpm: ClosedRange<Double> = 0...20_000
    /// Telemetry's `batteryPct`.
    public static let batteryPct: ClosedRange<Double> = 0...100
    /// Telemetry's `headbandTempC`: the sensor's range.
    public static let headbandTempC: ClosedRange<Double> = -40...125
    /// A channel's measured `peakMicroAmps` and `rmsMicroAmps` (the ceiling is 1000; a fault
    /// reading may be higher, and is what trips the monitor).
    public static let measuredMicroAmps: ClosedRange<Double> = 0...10_000
    /// A channel's `impedanceOhms` (an open circuit reads high).
    public static let impedanceOhms: ClosedRange<Double> = 0...1_000_000_000
    /// A channel's `complianceVolts`.
    public static let complianceVolts: ClosedRange<Double> = 0...1_000
    /// A config document's `version` as reported in `config.applied` / `config.rejected`.
    public static let configVersion: ClosedRange<Int> = 0...(1 << 53)
    /// `safety.trip` `value` and `limit`: finite, and within +-1e12 in the rule's unit.
    public static let tripValue: ClosedRange<Double> = -1e12...1e12

    /// Checks every field of `envelope` against its range, in a fixed order (so the same bad
    /// envelope always names the same field).
    /// - Throws: ``ProtocolError`` with code `outOfRange`.
    public static func check(_ envelope: Envelope) throws(ProtocolError) {
        try within(envelope.seq, seq, "seq")
        try within(envelope.monoNanos, monoNanos, "mono")
        guard envelope.timestamp >= productEpoch, envelope.timestamp < timestampEnd else {
            throw ProtocolError(
                .outOfRange, path: "ts",
                "\(Timestamp.format(envelope.timestamp)) is outside 2024-01-01T00:00:00Z..<2100-01-01T00:00:00Z")
        }
        switch envelope.message {
        case .telemetry(let telemetry): try check(telemetry)
        case .event(let event): try check(event, at: envelope.timestamp)
        }
    }

    /// Checks a receiver's view of `envelope`: a synced `ts` no more than
    /// ``maxFutureSkewSeconds`` ahead of `receivedAt`.
    /// - Throws: ``ProtocolError`` with code `outOfRange`.
    public static func checkArrival(_ envelope: Envelope, receivedAt: Date) throws(ProtocolError) {
        guard !envelope.synced || envelope.timestamp.timeIntervalSince(receivedAt) <= maxFutureSkewSeconds else {
            throw ProtocolError(
                .outOfRange, path: "ts",
                "a synced ts of \(Timestamp.format(envelope.timestamp)) is more than a day ahead of the receiver's clock")
        }
    }

    static func check(_ telemetry: Telemetry) throws(ProtocolError) {
        if let level = telemetry.level { try within(level, 1...3, "body.level") }
        if let elapsed = telemetry.elapsedS { try within(elapsed, elapsedSeconds, "body.elapsedS") }
        if let rpm = telemetry.vibrationRpm { try within(rpm, vibrationRpm, "body.vibrationRpm") }
        try within(telemetry.batteryPct, batteryPct, "body.batteryPct")
        try within(telemetry.headbandTempC, headbandTempC, "body.headbandTempC")
        let agent = telemetry.agent
        try within(agent.outboxDepth, outboxDepth, "body.agent.outboxDepth")
        try within(agent.outboxBytes, outboxBytes, "body.agent.outboxBytes")
        try within(agent.oldestUnackedS, oldestUnackedSeconds, "body.agent.oldestUnackedS")
        try within(agent.reconnects, reconnects, "body.agent.reconnects")
        try within(agent.rssKiB, rssKiB, "body.agent.rssKiB")
        if let refused = agent.outboxRefused { try within(refused, outboxDepth, "body.agent.outboxRefused") }
        try count(telemetry.channels.count, maxChannels, "body.channels")
        for (index, channel) in telemetry.channels.enumerated() {
            let path = "body.channels[\(index)]"
            try text(channel.id, maxShortText, path + ".id")
            try within(channel.peakMicroAmps, measuredMicroAmps, path + ".peakMicroAmps")
            try within(channel.rmsMicroAmps, measuredMicroAmps, path + ".rmsMicroAmps")
            try within(channel.impedanceOhms, impedanceOhms, path + ".impedanceOhms")
            try within(channel.complianceVolts, complianceVolts, path + ".complianceVolts")
        }
    }

    static func check(_ event: Event, at timestamp: Date) throws(ProtocolError) {
        switch event {
        case .sessionStarted(let body):
            try text(body.profileVersion, maxShortText, "body.profileVersion")
            try count(body.channels.count, maxChannels, "body.channels")
            for (index, channel) in body.channels.enumerated() { try text(channel, maxShortText, "body.channels[\(index)]") }
            if let day = body.regimenDay { try within(day, regimenDays(at: timestamp), "body.regimenDay") }
            if let who = body.requestedBy { try text(who, maxShortText, "body.requestedBy") }
        case .sessionLevelChanged(let body):
            // (levels are checked, 1-3, as they are decoded)
            if let who = body.requestedBy { try text(who, maxShortText, "body.requestedBy") }
        case .sessionPaused(let body), .sessionResumed(let body):
            try text(body.reason, maxShortText, "body.reason")
        case .sessionCompleted(let summary), .sessionAborted(let summary):
            try within(summary.durationS, sessionDurationSeconds, "body.durationS")
            try within(summary.stimulatingS, stimulatingSeconds, "body.stimulatingS")
            for key in summary.levelSeconds.keys.sorted() {
                try within(summary.levelSeconds[key] ?? 0, stimulatingSeconds, "body.levelSeconds.\(key)")
            }
            try within(summary.pauses, pauses, "body.pauses")
            try count(summary.chargeMicroCoulombs.count, maxChannels, "body.chargeMicroCoulombs")
            for key in summary.chargeMicroCoulombs.keys.sorted() {
                try text(key, maxShortText, "body.chargeMicroCoulombs")
                try within(summary.chargeMicroCoulombs[key] ?? 0, chargeMicroCoulombs, "body.chargeMicroCoulombs.\(key)")
            }
            if let reason = summary.reason { try text(reason.rawValue, maxShortText, "body.reason") }
            if let who = summary.requestedBy { try text(who, maxShortText, "body.requestedBy") }
            if let day = summary.regimenDay { try within(day, regimenDays(at: timestamp), "body.regimenDay") }
        case .safetyTrip(let trip):
            try text(trip.rule, maxShortText, "body.rule")
            if let channel = trip.channel { try text(channel, maxShortText, "body.channel") }
            try within(trip.value, tripValue, "body.value")
            try within(trip.limit, tripValue, "body.limit")
        case .configApplied(let outcome), .configRejected(let outcome):
            try text(outcome.layer, maxShortText + 16, "body.layer")
            try within(outcome.version, configVersion, "body.version")
            if let reason = outcome.reason { try text(reason, maxDetailText, "body.reason") }
        case .firmwareProgress(let progress):
            try text(progress.version, maxShortText, "body.version")
            if let detail = progress.detail { try text(detail, maxDetailText, "body.detail") }
        case .outboxEvicted(let eviction):
            try text(eviction.class, maxShortText, "body.class")
            try within(eviction.count, evictedCount, "body.count")
            try within(eviction.bytes, outboxBytes, "body.bytes")
        case .outboxReset(let reset):
            try text(reset.reason, maxDetailText, "body.reason")
            if let epoch = reset.previousEpoch { try text(epoch, maxShortText, "body.previousEpoch") }
            if let path = reset.movedTo { try text(path, maxDetailText, "body.movedTo") }
        }
    }

    /// Checks a retained status (birth or Will).
    /// - Throws: ``ProtocolError`` with code `outOfRange`.
    public static func check(_ status: GatewayStatus) throws(ProtocolError) {
        if let version = status.agentVersion { try text(version, maxShortText, "agentVersion") }
        if let reason = status.reason { try text(reason, maxDetailText, "reason") }
    }

    /// Checks a retained reported state.
    /// - Throws: ``ProtocolError`` with code `outOfRange`.
    public static func check(_ state: ReportedState) throws(ProtocolError) {
        try text(state.agentVersion, maxShortText, "agentVersion")
        try text(state.firmware, maxShortText, "firmware")
        try count(state.configVersions.count, maxChannels, "configVersions")
        for key in state.configVersions.keys.sorted() {
            try text(key, maxShortText + 16, "configVersions")
            try within(state.configVersions[key] ?? 0, configVersion, "configVersions.\(key)")
        }
        try within(state.levelLimits.maxLevel, 0...3, "levelLimits.maxLevel")
        try within(state.levelLimits.unlockedLevel, 0...3, "levelLimits.unlockedLevel")
        try within(state.levelLimits.completedSessions, 0...10_000_000, "levelLimits.completedSessions")
        try count(state.groups.count, maxChannels, "groups")
        for (index, group) in state.groups.enumerated() { try text(group, maxShortText, "groups[\(index)]") }
        if let refused = state.outboxRefused { try within(refused, outboxDepth, "outboxRefused") }
        if let refusal = state.lastRefusal { try text(refusal, maxDetailText, "lastRefusal") }
    }

    private static func within<T: Comparable>(_ value: T, _ range: ClosedRange<T>, _ path: String) throws(ProtocolError) {
        guard range.contains(value) else {
            throw ProtocolError(.outOfRange, path: path, "\(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
    }

    private static func within(_ value: Double, _ range: ClosedRange<Double>, _ path: String) throws(ProtocolError) {
        guard value.isFinite, range.contains(value) else {
            throw ProtocolError(.outOfRange, path: path, "\(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
    }

    private static func count(_ value: Int, _ limit: Int, _ path: String) throws(ProtocolError) {
        guard value <= limit else { throw ProtocolError(.outOfRange, path: path, "\(value) entries; at most \(limit)") }
    }

    private static func text(_ value: String, _ limit: Int, _ path: String) throws(ProtocolError) {
        guard value.utf8.count <= limit else {
            throw ProtocolError(.outOfRange, path: path, "\(value.utf8.count) bytes of text; at most \(limit)")
        }
    }
}
