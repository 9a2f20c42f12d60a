import Configuration
import Foundation
import SystemPackage
import Yams

/// Builds the one configuration precedence every executable uses:
/// command line (`--set key=value` and named flags) > environment (`SPECTRA_...`) > YAML file > default.
public struct ConfigLoader: Sendable {
    /// The YAML file, if one was named.
    public var filePath: String?
    /// Overrides from the command line, by dotted key (`mqtt.port` -> `1884`).
    public var overrides: [String: String]
    /// The process environment (injected for tests).
    public var environment: [String: String]

    /// The prefix of environment overrides: `SPECTRA_MQTT_PORT` sets `mqtt.port`.
    public static let environmentPrefix = "spectra"

    public init(
        filePath: String?, overrides: [String: String] = [:],
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.filePath = filePath
        self.overrides = overrides
        self.environment = environment
    }

    /// Parses `key=value` pairs given with `--set`.
    /// - Throws: ``ConfigurationError`` naming the pair without `=` or with an empty key.
    public static func parseOverrides(_ pairs: [String]) throws(ConfigurationError) -> [String: String] {
        var result: [String: String] = [:]
        for pair in pairs {
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw ConfigurationError(file: "--set", key: pair, problem: "expected KEY=VALUE, e.g. --set mqtt.port=1884")
            }
            result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
        }
        return result
    }

    /// Loads the file and builds the layered reader.
    ///
    /// - Parameter knownKeys: every dotted key the caller reads; a file key outside this set (a
    ///   typo such as `mqtt.prot`) is an error rather than a silently ignored setting. Keys under
    ///   a prefix ending in `.*` are accepted whole.
    /// - Throws: ``ConfigurationError`` when the file is missing, is not YAML, is not a mapping,
    ///   or holds an unknown key; also for an unknown `--set` key.
    public func load(knownKeys: Set<String>) async throws(ConfigurationError) -> ConfigFields {
        var providers: [any ConfigProvider] = []
        let overrideEnvironment = Dictionary(
            overrides.map { (ConfigLoader.environmentName(forKey: $0.key, prefixed: false), $0.value) },
            uniquingKeysWith: { _, last in last })
        for key in overrides.keys where !Self.isKnown(key, in: knownKeys) {
            throw ConfigurationError(file: "--set", key: key, problem: "unknown key; known keys: \(knownKeys.sorted().joined(separator: ", "))")
        }
        providers.append(EnvironmentVariablesProvider(environmentVariables: overrideEnvironment))
        providers.append(
            EnvironmentVariablesProvider(environmentVariables: environment).prefixKeys(with: [Self.environmentPrefix]))
        if let filePath {
            try validateFile(filePath, knownKeys: knownKeys)
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(filePath)))
            } catch {
                throw ConfigurationError(file: filePath, problem: "cannot be read as YAML: \(error)")
            }
        }
        return ConfigFields(reader: ConfigReader(providers: providers), source: filePath ?? "defaults")
    }

    /// `SPECTRA_MQTT_KEEPALIVE_S` for `mqtt.keepaliveS`.
    public static func environmentName(forKey key: String, prefixed: Bool = true) -> String {
        var out = prefixed ? "SPECTRA_" : ""
        var previousLower = false
        for character in key {
            if character == "." {
                out += "_"
                previousLower = false
                continue
            }
            if character.isUppercase && previousLower { out += "_" }
            out += character.isLetter || character.isNumber ? character.uppercased() : "_"
            previousLower = character.isLowercase
        }
        return out
    }

    static func isKnown(_ key: String, in knownKeys: Set<String>) -> Bool {
        if knownKeys.contains(key) { return true }
        return knownKeys.contains { $0.hasSuffix(".*") && key.hasPrefix($0.dropLast()) }
    }

    /// Reads the file once with Yams to give precise errors (syntax with line, unknown keys).
    private func validateFile(_ path: String, knownKeys: Set<String>) throws(ConfigurationError) {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "cannot be read (permissions or not UTF-8)" : "does not exist"
            throw ConfigurationError(file: path, problem: "the file \(reason); pass an existing file with --config")
        }
        let node: Any?
        do {
            node = try Yams.load(yaml: text)
        } catch {
            throw ConfigurationError(file: path, problem: "is not valid YAML: \(Self.oneLine(error))")
        }
        guard let root = node as? [String: Any] else {
            if node == nil { return }  // an empty file: all defaults
            throw ConfigurationError(file: path, problem: "the top level must be a mapping of keys to values")
        }
        var stack: [(String, [String: Any])] = [("", root)]
        while let (prefix, map) = stack.popLast() {
            for (name, value) in map {
                let key = prefix.isEmpty ? name : "\(prefix).\(name)"
                if let nested = value as? [String: Any], !Self.isKnown(key, in: knownKeys) {
                    stack.append((key, nested))
                } else if !Self.isKnown(key, in: knownKeys) {
                    throw ConfigurationError(file: path, key: key, problem: "unknown key; check its spelling against the commented example in Config/")
                }
            }
        }
    }

    static func oneLine(_ error: any Error) -> String {
        String(describing: error).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}
