import SpectraProtocol

/// The agent's version, reported in `status` and `state`: the release it is part of.
public enum AgentVersion {
    /// The release this build is.
    public static let current = SpectraVersion.current
}
