/// Placeholder until this module's issue lands.
public enum AggregatorModule {
    /// The module's name, for diagnostics.
    public static let name = "Aggregator"
}
