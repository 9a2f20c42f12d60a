/// The release every Spectra Fleet binary is part of: `--version` of each prints it, the agent
/// reports it in `status` and its retained `state`.
public enum SpectraVersion {
    public static let current = "0.1.0"
}
