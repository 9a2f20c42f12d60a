import Foundation
import SpectraTesting

/// Writes `FOLDER/agent.yaml` for gateway `gw-0001` of fleet `demo` on broker `url`, with its
/// data in `FOLDER/var` and the default calibration profile; returns its path.
/// - Parameters:
///   - mqtt: more `mqtt.*` lines (`protocol: 3.1.1`), indented under `mqtt:`.
///   - telemetry: the in-session and idle telemetry intervals, seconds.
///   - timeScale: the session's time scale (300: a 15-minute session in 3 s).
func writeAgentConfig(
    in folder: URL, broker url: String, mqtt: [String] = [], telemetry: (session: Double, idle: Double)? = nil, timeScale: Int? = nil
) throws -> String {
    let path = folder.appendingPathComponent("agent.yaml").path
    var lines = [
        "fleet: demo", "gateway: gw-0001", "dataDir: \(folder.path)/var",
        "mqtt:", "  url: \(url)",
    ]
    lines += mqtt.map { "  \($0)" }
    if let telemetry { lines += ["telemetry:", "  intervalS: \(telemetry.session)", "  idleIntervalS: \(telemetry.idle)"] }
    lines += ["session:", "  profile: \(TestEnvironment.packageRoot.path)/Config/calibration/default.yaml"]
    if let timeScale { lines.append("  timeScale: \(timeScale)") }
    try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return path
}
