import Foundation

/// A small file that says a session is running, so that after a crash or kill the next start
/// reports it as `session.aborted` with reason `agent_restart` (and never resumes it).
public struct SessionJournal: Sendable {
    /// What the journal records about the running session.
    public struct Entry: Sendable, Equatable, Codable {
        public var sessionId: String
        public var level: Int
        public var startedAt: Date
        /// Totals at the last checkpoint.
        public var stimulatingS: Double
        public var levelSeconds: [String: Double]
        public var pauses: Int
        public var chargeMicroCoulombs: [String: Double]

        public init(
            sessionId: String, level: Int, startedAt: Date, stimulatingS: Double, levelSeconds: [String: Double], pauses: Int,
            chargeMicroCoulombs: [String: Double]
        ) {
            self.sessionId = sessionId
            self.level = level
            self.startedAt = startedAt
            self.stimulatingS = stimulatingS
            self.levelSeconds = levelSeconds
            self.pauses = pauses
            self.chargeMicroCoulombs = chargeMicroCoulombs
        }
    }

    public let path: String

    public init(path: String) { self.path = path }

    /// The entry left by a session that did not end, if any.
    public func read() -> Entry? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return try? JSONDecoder().decode(Entry.self, from: data)
    }

    /// Records the running session (atomically: a crash leaves the old or the new entry).
    public func write(_ entry: Entry) {
        guard let data = try? JSONEncoder().encode(entry) else { return }
        try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Removes the entry once the session has ended and its event is queued.
    public func clear() {
        try? FileManager.default.removeItem(atPath: path)
    }
}
