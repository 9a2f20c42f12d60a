/// A configuration problem, reported as one line that names the file, the key and what to fix.
///
/// Executables print ``description`` and exit with status 2.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The config file involved, or a description of the source (`--set`, environment).
    public var file: String
    /// The dotted key (`mqtt.port`); empty when the whole file is at fault.
    public var key: String
    /// What is wrong and what to do about it.
    public var problem: String

    /// The exit status for configuration errors.
    public static let exitCode: Int32 = 2

    public init(file: String, key: String = "", problem: String) {
        self.file = file
        self.key = key
        self.problem = problem
    }

    public var description: String {
        key.isEmpty ? "config error: \(file): \(problem)" : "config error: \(file): key '\(key)': \(problem)"
    }
}
