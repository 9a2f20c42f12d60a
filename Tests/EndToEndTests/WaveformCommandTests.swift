import Foundation
import SpectraTesting
import Testing

@Suite("spectra-agent waveform")
struct WaveformCommandTests {
    let root = TestEnvironment.packageRoot.path

    @Test("render writes float32 samples interleaved by channel and a JSON description")
    func render() async throws {
        let dir = try TestEnvironment.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("l2.f32").path
        let result = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), [
            "waveform", "render", "--profile", "\(root)/Config/calibration/default.yaml", "--level", "2", "--seconds", "20",
            "--sample-rate", "2000", "--out", out,
        ])
        #expect(result.status == 0, "\(result.stderr)")
        let data = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(data.count == 20 * 2000 * 10 * 4)
        let meta = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + ".json"))) as? [String: Any]
        #expect((meta?["channels"] as? [String])?.count == 10)
        #expect(meta?["sampleRate"] as? Double == 2000)
        #expect(meta?["unit"] as? String == "uA")
        #expect(meta?["level"] as? Int == 2)
        #expect(meta?["seconds"] as? Double == 20)
        let samples = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        #expect(samples.map(abs).max()! <= 300)
        #expect(samples.map(abs).max()! > 290)
    }

    @Test("characterize prints every level at 500, 2000 and 10000 ohm; --json for scripts")
    func characterize() async throws {
        let result = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), [
            "waveform", "characterize", "--profile", "\(root)/Config/calibration/default.yaml", "--json",
        ])
        #expect(result.status == 0)
        let rows = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]]
        #expect(rows?.count == 9)
        #expect(Set(rows?.compactMap { $0["loadOhms"] as? Double } ?? []) == [500, 2000, 10_000])
        let text = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), [
            "waveform", "characterize", "--profile", "\(root)/Config/calibration/default.yaml",
        ])
        #expect(text.stdout.contains("Imax(uA)"))
    }

    @Test("a profile breaking a hard rule is refused with exit 2 and one line")
    func badProfile() async throws {
        let dir = try TestEnvironment.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try String(contentsOfFile: "\(root)/Config/calibration/default.yaml", encoding: .utf8)
            .replacingOccurrences(of: "peakMicroAmps: 400", with: "peakMicroAmps: 1200")
        let path = dir.appendingPathComponent("bad.yaml").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await ChildProcess.run(TestEnvironment.product("spectra-agent"), [
            "waveform", "characterize", "--profile", path,
        ])
        #expect(result.status == 2)
        #expect(result.stderr.contains("1200 uA") && result.stderr.contains("levels[2].peakMicroAmps"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }
}
