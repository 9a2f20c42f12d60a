import ArgumentParser
import Foundation
import SpectraProtocol

@main
struct SpectraBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-bench",
        abstract: "Release-built measurements for docs/performance.md (run through Deploy/bench.sh).",
        version: SpectraVersion.current,
        subcommands: [
            MQTTPublishBench.self, WaveformBench.self, OutboxEnqueueBench.self, OutboxDrainBench.self, MQTTHold.self,
            IngestPublish.self, IngestBench.self, IngestStages.self, EnvelopeEncodeBench.self, OutboxDiskFull.self, FleetLoad.self,
        ]
    )
}

/// Prints one JSON line of results.
func report(_ fields: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Seconds of the monotonic clock.
func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
}

/// CPU seconds (user and system, every thread) this process has used so far.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU seconds a server and its worker processes have used so far: the server's own, its
/// children's that ended (cutime, cstime), and those of the children still running.
func processTreeCPUSeconds(pid: Int32) -> Double? {
    func fields(_ pid: String) -> [Substring]? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let end = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: end)...].split(separator: " ")
    }
    let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
    guard let own = fields("\(pid)"), own.count > 14 else { return nil }
    var total = (Double(own[11]) ?? 0) + (Double(own[12]) ?? 0) + (Double(own[13]) ?? 0) + (Double(own[14]) ?? 0)
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where entry.allSatisfy(\.isNumber) {
        // Field 4 is the parent's pid.
        guard let child = fields(entry), child.count > 12, child[1] == "\(pid)" else { continue }
        total += (Double(child[11]) ?? 0) + (Double(child[12]) ?? 0)
    }
    return total / tick
}

/// CPU seconds (user and system) another process has used so far, from `/proc/PID/stat`; nil
/// when it cannot be read.
func processCPUSeconds(pid: Int32) -> Double? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")") else { return nil }
    // After the command name: state is field 3, utime and stime are fields 14 and 15.
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
    return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
}
