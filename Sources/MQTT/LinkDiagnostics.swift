import Foundation

/// What a process tells an operator about its broker link: whether it is up, the last reason it
/// was not, and since when. It turns the client's state changes into log lines said once per
/// change of cause (a client that keeps failing for the same reason is not logged again at
/// every retry; ``reminder(now:)`` repeats it at a bounded rate).
public struct LinkDiagnostics: Sendable, Equatable {
    /// Whether the link is up.
    public private(set) var connected = false
    /// Why the link is down (or was, last), in words; nil before any failure.
    public private(set) var lastError: String?
    /// Since when the current state (up, or down for `lastError`) holds.
    public private(set) var since: Date
    private var lastSaid: Date

    /// How often a lasting failure is said again, seconds.
    public static let reminderSeconds: Double = 300

    public init(now: Date = Date()) {
        since = now
        lastSaid = now
    }

    /// What to log about a change.
    public enum Line: Sendable, Equatable {
        /// The link is up; `after` says what had kept it down, when something had.
        case connected(after: String?)
        /// The link went down (or a first connection failed) for a reason not said before.
        case failing(reason: String, wasConnected: Bool)
    }

    /// Takes a state change; returns the line to log, or nil when there is nothing new to say.
    public mutating func update(_ state: ConnectionState, now: Date = Date()) -> Line? {
        switch state {
        case .connecting:
            return nil
        case .connected:
            guard !connected else { return nil }
            connected = true
            since = now
            lastSaid = now
            return .connected(after: lastError)
        case .disconnected(let reason):
            if reason == "stopped" { return nil }
            let wasConnected = connected
            guard wasConnected || reason != lastError else { return nil }
            connected = false
            lastError = reason
            since = now
            lastSaid = now
            return .failing(reason: reason, wasConnected: wasConnected)
        }
    }

    /// A reminder of a failure that has lasted ``reminderSeconds`` since it was last said, and
    /// how long it has lasted; nil otherwise.
    public mutating func reminder(now: Date = Date()) -> (reason: String, seconds: Double)? {
        guard !connected, let lastError, now.timeIntervalSince(lastSaid) >= Self.reminderSeconds else { return nil }
        lastSaid = now
        return (lastError, now.timeIntervalSince(since))
    }
}
