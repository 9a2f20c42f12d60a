import Foundation
import Waveform
import Yams

/// Loads a calibration profile from YAML and validates it against the hard rules.
public enum ProfileLoader {
    /// Reads and validates `path`.
    /// - Throws: ``ConfigurationError`` naming the file and, for a hard-rule violation, the
    ///   entry, the offending value and the rule.
    public static func load(path: String) throws(ConfigurationError) -> CalibrationProfile {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigurationError(file: path, problem: "the calibration profile cannot be read: does it exist?")
        }
        return try parse(text, source: path)
    }

    /// Parses and validates profile YAML.
    public static func parse(_ text: String, source: String = "profile") throws(ConfigurationError) -> CalibrationProfile {
        let profile: CalibrationProfile
        do {
            profile = try YAMLDecoder().decode(CalibrationProfile.self, from: text)
        } catch let error as DecodingError {
            throw ConfigurationError(file: source, key: Self.path(of: error), problem: Self.describe(error))
        } catch {
            throw ConfigurationError(file: source, problem: "is not valid YAML: \(ConfigLoader.oneLine(error))")
        }
        do {
            try profile.validate()
        } catch {
            throw ConfigurationError(file: source, key: error.path, problem: "\(error.reason) (\(error.rule.number.map { "hard rule \($0), " } ?? "")\(error.rule.rawValue))")
        }
        return profile
    }

    private static func path(of error: DecodingError) -> String {
        let context: DecodingError.Context? = switch error {
        case .keyNotFound(let key, let context): DecodingError.Context(codingPath: context.codingPath + [key], debugDescription: "")
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context): context
        @unknown default: nil
        }
        return (context?.codingPath ?? []).map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            .trimmingCharacters(in: CharacterSet(charactersIn: "."))
    }

    private static func describe(_ error: DecodingError) -> String {
        switch error {
        case .keyNotFound(let key, _): "required key '\(key.stringValue)' is missing"
        case .typeMismatch(let type, _): "expected \(type)"
        case .valueNotFound(let type, _): "expected \(type), found nothing"
        case .dataCorrupted(let context): context.debugDescription
        @unknown default: "\(error)"
        }
    }
}
