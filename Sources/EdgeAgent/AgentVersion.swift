/// The agent's version, reported in `status` and `state`.
public enum AgentVersion {
    /// The release this build is.
    public static let current = "0.1.0"
}
