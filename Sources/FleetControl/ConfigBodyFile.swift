import Foundation
import SpectraConfig
import SpectraProtocol
import Yams

/// A config body written by an operator as YAML (the keys of docs/architecture.md, "Signed documents").
public enum ConfigBodyFile {
    /// Reads and validates a body: its shape as the agent decodes it, then the engine's hard
    /// limits, exactly the checks the agent makes before applying.
    /// - Throws: ``OperatorError`` naming the file and the problem.
    public static func load(path: String) throws -> ConfigBody {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw OperatorError("cannot read \(path)")
        }
        let object: Any?
        do {
            object = try Yams.load(yaml: text)
        } catch {
            throw OperatorError("\(path) is not valid YAML: \(error)")
        }
        guard let dictionary = object as? [String: Any] else {
            throw OperatorError("\(path) must be a mapping of config keys (maxLevel, levelUnlock, levels, ...)")
        }
        let known: Set<String> = ["maxLevel", "levelUnlock", "telemetryIntervalS", "idleTelemetryIntervalS", "levels", "headband"]
        if let unknown = dictionary.keys.sorted().first(where: { !known.contains($0) }) {
            throw OperatorError("\(path): '\(unknown)' is not a config key (use \(known.sorted().joined(separator: ", ")))")
        }
        let json: Data
        do {
            json = try JSONSerialization.data(withJSONObject: dictionary)
        } catch {
            throw OperatorError("\(path) holds values that are not plain numbers, strings, lists or mappings")
        }
        let body: ConfigBody
        do {
            body = try WireFormat.decode(ConfigBody.self, from: json)
        } catch {
            throw OperatorError("\(path): \(error)")
        }
        if let problem = body.hardLimitProblem {
            throw OperatorError("\(path) breaks a hard limit, nothing was published: \(problem)")
        }
        return body
    }
}
