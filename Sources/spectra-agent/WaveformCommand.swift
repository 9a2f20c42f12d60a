import ArgumentParser
import Foundation
import SpectraConfig
import Waveform

struct WaveformCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "waveform",
        abstract: "Render and characterise the stimulation a calibration profile produces.",
        subcommands: [Render.self, Characterize.self]
    )

    static func loadProfile(_ path: String) -> CalibrationProfile {
        do {
            return try ProfileLoader.load(path: path)
        } catch {
            ConfigOptions.exit(with: error)
        }
    }

    struct Render: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Plan a session with an ideal headband and write its per-channel current samples.",
            discussion: """
                Writes little-endian float32 samples in microamps, interleaved by channel, to FILE and a
                description to FILE.json (channels, sampleRate, unit, level, seconds).

                Example: spectra-agent waveform render --profile Config/calibration/default.yaml --level 2 --seconds 60 --out /tmp/l2.f32
                """)

        @Option(help: "The calibration profile (YAML).") var profile: String
        @Option(help: "Level 1-3.") var level: Int
        @Option(help: "Seconds of the session to render (at most the session length).") var seconds: Double
        @Option(name: .customLong("sample-rate"), help: "Samples per second per channel.") var sampleRate: Double = 10_000
        @Option(name: .customLong("load-ohms"), help: "A resistive load; the current is limited by the compliance voltage.")
        var loadOhms: Double?
        @Option(help: "Output file.") var out: String

        func validate() throws {
            guard (1...3).contains(level) else { throw ValidationError("--level must be 1, 2 or 3") }
            guard seconds > 0, seconds <= HardLimits.maxSessionSeconds else { throw ValidationError("--seconds must be in (0, 900]") }
            guard sampleRate >= 100, sampleRate <= 1_000_000 else { throw ValidationError("--sample-rate must be 100 to 1000000") }
            if let loadOhms, !(loadOhms > 0 && loadOhms.isFinite) { throw ValidationError("--load-ohms must be a positive number") }
        }

        func run() async throws {
            let profile = WaveformCommand.loadProfile(self.profile)
            let segments = try SessionPlan.ideal(profile: profile, level: level)
            let samples = Renderer.render(
                segments, channels: profile.channels.count, sampleRate: sampleRate, seconds: seconds, loadOhms: loadOhms,
                complianceVolts: profile.complianceVolts)
            let data = samples.withUnsafeBufferPointer { Data(buffer: $0) }  // little-endian on every supported CPU
            do {
                try data.write(to: URL(fileURLWithPath: out))
                let meta: [String: Any] = [
                    "channels": profile.channels.map(\.id), "sampleRate": sampleRate, "unit": "uA", "level": level,
                    "seconds": seconds, "profileVersion": profile.version, "loadOhms": loadOhms as Any? ?? NSNull(),
                ]
                let json = try JSONSerialization.data(withJSONObject: meta, options: [.sortedKeys, .prettyPrinted])
                try json.write(to: URL(fileURLWithPath: out + ".json"))
            } catch {
                throw ValidationError("cannot write \(out): \(error.localizedDescription)")
            }
        }
    }

    struct Characterize: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print output figures per level at 500 ohm, 2 kohm and 10 kohm.",
            discussion: "Example: spectra-agent waveform characterize --profile Config/calibration/default.yaml --json")

        @Option(help: "The calibration profile (YAML).") var profile: String
        @Flag(help: "Emit JSON.") var json = false

        func run() async throws {
            let profile = WaveformCommand.loadProfile(self.profile)
            let rows = Characterization.table(for: profile)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                print(String(decoding: try encoder.encode(rows), as: UTF8.self))
                return
            }
            print("level  load(ohm)  Vmax(V)  Imax(uA)  net/pulse(uC)  phase Q(uC)  J(mA/cm2)  Iavg(uA)  Pavg(mW/cm2)")
            for row in rows {
                print(String(
                    format: "%5d  %9.0f  %7.2f  %8.1f  %13.3f  %11.3f  %9.4f  %8.1f  %12.5f", row.level, row.loadOhms, row.maxVolts,
                    row.maxMicroAmps, row.netChargePerPulseMicroCoulombs, row.maxPhaseChargeMicroCoulombs,
                    row.currentDensityMilliAmpsPerCm2, row.averageMicroAmps, row.averagePowerDensityMilliWattsPerCm2))
            }
        }
    }
}
