import Foundation

/// What the agent keeps across restarts besides the outbox: applied config layers and the
/// wearer's regimen. Written atomically as JSON in the data folder.
public struct AgentState: Sendable, Equatable, Codable {
    public var applied = AppliedLayers()
    public var regimen = Regimen()

    public init() {}

    /// Reads the state file, or a fresh state when there is none or it is unreadable.
    public static func load(path: String) -> AgentState {
        guard let data = FileManager.default.contents(atPath: path),
            let state = try? JSONDecoder().decode(AgentState.self, from: data)
        else { return AgentState() }
        return state
    }

    /// Writes the state file atomically.
    public func save(path: String) throws {
        try JSONEncoder().encode(self).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
