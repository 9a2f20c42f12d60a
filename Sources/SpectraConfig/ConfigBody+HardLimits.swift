import SpectraProtocol
import Waveform

extension ConfigBody {
    /// Why this body breaks the engine's hard limits (docs/safety.md, checked by the
    /// waveform rules that run sessions), or nil when it does not. The agent refuses such a
    /// document whole; `spectra-ctl config push` refuses to sign it.
    public var hardLimitProblem: String? {
        for (index, entry) in (levels ?? []).enumerated() {
            let row = CalibrationProfile.Level(
                level: entry.level, peakMicroAmps: entry.peakMicroAmps, frequencyHz: entry.frequencyHz ?? 10,
                phaseWidthMicros: entry.phaseWidthMicros ?? 20_000, rampUpS: entry.rampUpS ?? 2, rampDownS: entry.rampDownS ?? 1,
                dwellS: entry.dwellS ?? 8)
            do {
                try CalibrationProfile.validate(row, path: "levels[\(index)]")
            } catch {
                return error.description
            }
        }
        // The agent's own bounds for the intervals (as for telemetry.* in its file): a signed
        // document cannot make it flood its uplink.
        if let interval = telemetryIntervalS, !(0.1...3600).contains(interval) {
            return "telemetryIntervalS: \(interval) s is outside 0.1-3600"
        }
        if let interval = idleTelemetryIntervalS, !(1...86_400).contains(interval) {
            return "idleTelemetryIntervalS: \(interval) s is outside 1-86400"
        }
        if let watchdog = headband?.sessionWatchdogS, !(watchdog > 0 && watchdog <= HardLimits.maxSessionSeconds) {
            return "headband.sessionWatchdogS: \(watchdog) s is outside (0, 900] (rule 6, session_limit)"
        }
        return nil
    }
}
