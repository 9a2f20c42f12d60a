/// Placeholder until this module's issue lands.
public enum WaveformModule {
    /// The module's name, for diagnostics.
    public static let name = "Waveform"
}
