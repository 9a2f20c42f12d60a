import Foundation
import MQTT
import Synchronization

/// What `/healthz` answers and the age figures `/metrics` carries: whether commits succeed,
/// whether the stats round keeps up with its interval, and (asked of the broker client)
/// whether the broker is there.
///
/// Ages are measured on the process's own wall clock, not the statistics clock tests inject.
public final class IngestHealth: Sendable {
    /// The stats round's interval, seconds: a round that takes longer has overrun.
    let statsIntervalSeconds: Double
    private let state: Mutex<State>

    struct State {
        var started: Date
        var lastCommit: Date?
        /// Why commits fail, and since when; nil while they succeed.
        var commitFailure: (reason: String, since: Date)?
        var roundStartedAt: Date?
        var lastRoundEnd: Date?
        var lastRoundSeconds: Double?
        var link = LinkDiagnostics()
        /// Lasting problems other than commits, by what failed ("subscribe", "publish").
        var problems: [String: String] = [:]
    }

    /// One answer of `/healthz`.
    public struct Report: Sendable, Equatable {
        public var healthy: Bool
        /// Why it is not healthy, one line each (empty when healthy).
        public var reasons: [String]
        public var brokerConnected: Bool
        /// Seconds since the last committed batch (since the start when none has committed yet).
        public var lastCommitAgeSeconds: Double
        /// Seconds since the last stats round ended (since the start when none has).
        public var statsRoundAgeSeconds: Double
        /// How long the last stats round took, seconds.
        public var lastStatsRoundSeconds: Double?
        /// Why the broker link is (or last was) down, in words; nil before any failure.
        public var brokerLastError: String?
        /// Since when the broker link has been in its current state (up, or down).
        public var brokerSince: Date
    }

    public init(statsIntervalSeconds: Double, now: Date = Date()) {
        self.statsIntervalSeconds = statsIntervalSeconds
        state = Mutex(State(started: now))
    }

    /// A batch committed. Returns how long commits had been failing, when they had.
    func commitSucceeded(at now: Date = Date()) -> Double? {
        state.withLock { state in
            state.lastCommit = now
            defer { state.commitFailure = nil }
            return state.commitFailure.map { now.timeIntervalSince($0.since) }
        }
    }

    /// A batch could not be committed for `reason`. Returns true when this is a new failure (or a
    /// different reason than before), so it is logged once.
    func commitFailed(_ reason: String, at now: Date = Date()) -> Bool {
        state.withLock { state in
            if let failure = state.commitFailure, failure.reason == reason { return false }
            state.commitFailure = (reason, state.commitFailure?.since ?? now)
            return true
        }
    }

    /// The broker link changed (for the reason `/healthz` gives while it is down).
    func linkChanged(_ link: LinkDiagnostics) {
        state.withLock { $0.link = link }
    }

    /// A reminder of a broker failure that has lasted ``LinkDiagnostics/reminderSeconds`` since
    /// it was last said, with how long it has lasted.
    func linkReminder(now: Date = Date()) -> (reason: String, seconds: Double)? {
        state.withLock { $0.link.reminder(now: now) }
    }

    /// Something other than commits fails (`what`: "subscribe", "publish") for `reason`, or
    /// works again (`reason` nil). Returns true when this is news (said once, logged once).
    @discardableResult
    func problem(_ what: String, _ reason: String?) -> Bool {
        state.withLock { state in
            guard state.problems[what] != reason else { return false }
            state.problems[what] = reason
            return true
        }
    }

    @_spi(Testing) public func roundStarted(at now: Date = Date()) {
        state.withLock { $0.roundStartedAt = now }
    }

    /// A stats round ended. Returns its duration, seconds.
    @discardableResult
    @_spi(Testing) public func roundFinished(at now: Date = Date()) -> Double {
        state.withLock { state in
            let seconds = now.timeIntervalSince(state.roundStartedAt ?? now)
            state.roundStartedAt = nil
            state.lastRoundEnd = now
            state.lastRoundSeconds = seconds
            return seconds
        }
    }

    /// The health as of `now`.
    public func report(brokerConnected: Bool, now: Date = Date()) -> Report {
        state.withLock { state in
            var reasons: [String] = []
            if !brokerConnected {
                let why = state.link.lastError.map { ": \($0)" } ?? ""
                reasons.append("the broker is not connected\(why); ingest resumes when it is back")
            }
            if let failure = state.commitFailure {
                reasons.append(
                    "commits have been failing for \(Int(now.timeIntervalSince(failure.since))) s: \(failure.reason); "
                        + "nothing is acknowledged to the broker meanwhile")
            }
            for what in state.problems.keys.sorted() {
                if let reason = state.problems[what] { reasons.append(reason) }
            }
            if let running = state.roundStartedAt, now.timeIntervalSince(running) > statsIntervalSeconds {
                reasons.append(
                    "the stats round has run for \(Int(now.timeIntervalSince(running))) s, past its \(Int(statsIntervalSeconds)) s interval")
            } else if let last = state.lastRoundSeconds, last > statsIntervalSeconds {
                reasons.append("the last stats round took \(Int(last)) s, past its \(Int(statsIntervalSeconds)) s interval")
            }
            return Report(
                healthy: reasons.isEmpty, reasons: reasons, brokerConnected: brokerConnected,
                lastCommitAgeSeconds: now.timeIntervalSince(state.lastCommit ?? state.started),
                statsRoundAgeSeconds: now.timeIntervalSince(state.lastRoundEnd ?? state.started),
                lastStatsRoundSeconds: state.lastRoundSeconds, brokerLastError: state.link.lastError, brokerSince: state.link.since)
        }
    }
}
