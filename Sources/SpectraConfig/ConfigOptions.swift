import ArgumentParser
import Foundation

/// The command-line options every executable shares for configuration:
/// `--config FILE` and repeatable `--set KEY=VALUE`.
public struct ConfigOptions: ParsableArguments, Sendable {
    @Option(name: .long, help: ArgumentHelp("The YAML configuration file.", valueName: "file"))
    public var config: String?

    @Option(
        name: .customLong("set"),
        help: ArgumentHelp("Override one key, e.g. --set mqtt.url=mqtt://10.0.0.5:1883 (repeatable).", valueName: "key=value"))
    public var overrides: [String] = []

    public init() {}

    /// Loads the layered configuration, or prints one clear line and exits with status 2.
    public func load(knownKeys: Set<String>, defaultFile: String? = nil) async -> ConfigFields {
        do {
            let loader = ConfigLoader(
                filePath: config ?? defaultFile, overrides: try ConfigLoader.parseOverrides(overrides))
            return try await loader.load(knownKeys: knownKeys)
        } catch {
            Self.exit(with: error)
        }
    }

    /// Prints a configuration error to standard error and exits with status 2.
    public static func exit(with error: ConfigurationError) -> Never {
        FileHandle.standardError.write(Data((error.description + "\n").utf8))
        Foundation.exit(ConfigurationError.exitCode)
    }
}
