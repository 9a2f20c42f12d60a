/// Placeholder until this module's issue lands.
public enum OutboxModule {
    /// The module's name, for diagnostics.
    public static let name = "Outbox"
}
