import Configuration

/// Typed, validated reads from a layered configuration, each failure a ``ConfigurationError``
/// that names the key, the bad value and the expected form.
public struct ConfigFields: Sendable {
    /// The layered reader (command line > environment > file).
    public let reader: ConfigReader
    /// The file the values came from, for error messages.
    public let source: String

    public init(reader: ConfigReader, source: String) {
        self.reader = reader
        self.source = source
    }

    private func fail(_ key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError(
            file: source, key: key,
            problem: "\(problem) (set in the file, \(ConfigLoader.environmentName(forKey: key)) or --set \(key)=...)")
    }

    /// The raw text of `key`, if any layer sets it.
    public func raw(_ key: String) -> String? {
        reader.string(forKey: ConfigKey(key))
    }

    /// A string, or `default` when unset.
    /// - Throws: ``ConfigurationError`` when the value is empty and `allowEmpty` is false.
    public func string(_ key: String, default defaultValue: String, allowEmpty: Bool = false) throws(ConfigurationError) -> String {
        guard let value = raw(key) else { return defaultValue }
        guard allowEmpty || !value.isEmpty else { throw fail(key, "must not be empty") }
        return value
    }

    /// An optional string (nil when unset or empty).
    public func optionalString(_ key: String) -> String? {
        guard let value = raw(key), !value.isEmpty else { return nil }
        return value
    }

    /// An integer in `range`, or `default` when unset.
    /// - Throws: ``ConfigurationError`` for a non-integer or out-of-range value.
    public func int(_ key: String, default defaultValue: Int, in range: ClosedRange<Int>) throws(ConfigurationError) -> Int {
        guard let text = raw(key) else { return defaultValue }
        guard let value = (try? reader.requiredInt(forKey: ConfigKey(key))) ?? Int(text) else {
            throw fail(key, "'\(text)' is not an integer")
        }
        guard range.contains(value) else {
            throw fail(key, "\(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// A finite number in `range`, or `default` when unset.
    /// - Throws: ``ConfigurationError`` for a non-number or out-of-range value.
    public func double(_ key: String, default defaultValue: Double, in range: ClosedRange<Double>) throws(ConfigurationError) -> Double {
        guard let text = raw(key) else { return defaultValue }
        guard let value = (try? reader.requiredDouble(forKey: ConfigKey(key))) ?? Double(text), value.isFinite else {
            throw fail(key, "'\(text)' is not a number")
        }
        guard range.contains(value) else {
            throw fail(key, "\(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// A boolean (`true`/`false`), or `default` when unset.
    /// - Throws: ``ConfigurationError`` for anything else.
    public func bool(_ key: String, default defaultValue: Bool) throws(ConfigurationError) -> Bool {
        guard let text = raw(key) else { return defaultValue }
        switch text.lowercased() {
        case "true", "yes", "on", "1": return true
        case "false", "no", "off", "0": return false
        default: throw fail(key, "'\(text)' is not true or false")
        }
    }

    /// A list of strings: a YAML sequence, or comma-separated text from the environment or `--set`.
    public func stringList(_ key: String, default defaultValue: [String]) -> [String] {
        if let list = reader.stringArray(forKey: ConfigKey(key)) { return list }
        guard let text = raw(key) else { return defaultValue }
        return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// One of `choices`, or `default` when unset.
    /// - Throws: ``ConfigurationError`` naming the allowed values.
    public func choice<T: RawRepresentable & CaseIterable>(_ key: String, default defaultValue: T) throws(ConfigurationError) -> T
    where T.RawValue == String {
        guard let text = raw(key) else { return defaultValue }
        guard let value = T(rawValue: text) else {
            throw fail(key, "'\(text)' is not one of \(T.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }

    /// A value checked by `parse`, which returns nil (with `expected` describing the form) when invalid.
    public func parsed<T>(_ key: String, default defaultValue: T, expected: String, _ parse: (String) -> T?) throws(ConfigurationError) -> T {
        guard let text = raw(key) else { return defaultValue }
        guard let value = parse(text) else { throw fail(key, "'\(text)' is not \(expected)") }
        return value
    }
}
