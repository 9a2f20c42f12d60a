/// Placeholder until this module's issue lands.
public enum FleetSimModule {
    /// The module's name, for diagnostics.
    public static let name = "FleetSim"
}
