import EdgeAgent
import Foundation
import Logging
import MQTT
import SpectraProtocol
import Waveform

/// Many simulated gateways in one process against a real broker: the demo, the load
/// generator and the scale test. Deterministic under a seed (who the wearers are, what they
/// do and what goes wrong); the broker and scheduling add their own timing.
public struct FleetSimulator: Sendable {
    public struct Configuration: Sendable {
        public var fleet: Identifier
        public var gateways: Int
        /// The index of this process's first gateway (0: `gw-00001`), so several processes can
        /// share one fleet with distinct gateways, wearers and seeds.
        public var firstGateway: Int
        /// Simulated seconds per real second.
        public var speed: Double
        /// Simulated days to live through; the simulated calendar ends at the real "now".
        public var days: Int
        /// After `days`, carry on at real-time pace until cancelled.
        public var live: Bool
        public var seed: UInt64
        public var broker: MQTTConfiguration
        public var dataDirectory: String
        public var telemetryIntervalSeconds: Double
        public var idleTelemetryIntervalSeconds: Double

        public init(
            fleet: Identifier, gateways: Int, firstGateway: Int = 0, speed: Double, days: Int, live: Bool = false, seed: UInt64 = 1,
            broker: MQTTConfiguration, dataDirectory: String, telemetryIntervalSeconds: Double = 1, idleTelemetryIntervalSeconds: Double = 60
        ) {
            self.fleet = fleet
            self.gateways = gateways
            self.firstGateway = firstGateway
            self.speed = speed
            self.days = days
            self.live = live
            self.seed = seed
            self.broker = broker
            self.dataDirectory = dataDirectory
            self.telemetryIntervalSeconds = telemetryIntervalSeconds
            self.idleTelemetryIntervalSeconds = idleTelemetryIntervalSeconds
        }
    }

    public let configuration: Configuration
    public let counters = FleetCounters()
    private let profile: CalibrationProfile
    private let logger: Logger

    public init(configuration: Configuration, profile: CalibrationProfile, logger: Logger) {
        self.configuration = configuration
        self.profile = profile
        self.logger = logger
    }

    /// Open files each simulated gateway holds: its MQTT socket, the outbox database, its WAL
    /// and its shared-memory index, and room for libmosquitto's wake-up socket pair, which a
    /// client has only where the kernel refused the filter that spares it (`HandleFactory`).
    public static let filesPerGateway = 6
    /// Open files the process needs besides its gateways (logs, event loops, the runtime).
    static let filesForProcess = 256

    /// Raises this process's open-file limit as far as `gateways` need (up to the hard limit).
    /// - Throws: ``FleetSimError`` when the hard limit is too low, naming how many gateways fit:
    ///   past it, sockets and databases would fail at random and the dispatch runtime aborts.
    public static func reserveOpenFiles(gateways: Int) throws(FleetSimError) {
        let needed = gateways * filesPerGateway + filesForProcess
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        if limit.rlim_cur < rlim_t(needed) {
            limit.rlim_cur = min(limit.rlim_max, rlim_t(needed))
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        guard limit.rlim_cur >= rlim_t(needed) else {
            let fit = max(0, (Int(limit.rlim_cur) - filesForProcess) / filesPerGateway)
            throw FleetSimError(
                "\(gateways) gateways need about \(needed) open files (\(filesPerGateway) each) and this process may open "
                    + "\(limit.rlim_cur) (ulimit -Hn); run at most \(fit) gateways per process, or raise the hard limit")
        }
    }

    /// The gateway ids: `gw-00001` ...
    public static func gatewayID(_ index: Int) -> Identifier { try! Identifier(String(format: "gw-%05d", index + 1)) }

    /// Runs the fleet; `progress` is called about every `progressSeconds` with a one-line summary.
    public func run(progressSeconds: Double = 2, progress: @escaping @Sendable (String) -> Void) async throws {
        let days = configuration.days
        // The simulated calendar starts `days` ago (at midnight UTC) so that it ends now.
        // With no days to replay, simulated time is real time from now (load tests).
        let today = (Date().timeIntervalSince1970 / 86_400).rounded(.down) * 86_400
        let clock = SimClock(
            virtualStart: days == 0 ? Date() : Date(timeIntervalSince1970: today - Double(days) * 86_400), speed: configuration.speed)
        // The gateways' outboxes write on a few shared queues, one per core, rather than on a
        // thread each: thousands of threads waking for one small commit apiece cost more than
        // the commits.
        let outboxQueues = (0..<max(1, ProcessInfo.processInfo.activeProcessorCount)).map {
            DispatchQueue(label: "fleetsim.outbox.\($0)", qos: .userInitiated)
        }
        let ticker = FleetTicker()
        var gateways: [SimulatedGateway] = []
        for index in configuration.firstGateway..<(configuration.firstGateway + configuration.gateways) {
            let id = Self.gatewayID(index)
            gateways.append(try SimulatedGateway(
                fleet: configuration.fleet, gateway: id, seed: configuration.seed &* 1_000_003 &+ UInt64(index), clock: clock,
                profile: profile, broker: configuration.broker, dataDirectory: "\(configuration.dataDirectory)/\(id)", counters: counters,
                telemetryIntervalSeconds: configuration.telemetryIntervalSeconds,
                idleTelemetryIntervalSeconds: configuration.idleTelemetryIntervalSeconds, spreadDays: min(21, max(0, days / 2)),
                outboxQueue: outboxQueues[index % outboxQueues.count], ticker: ticker, logger: logger))
        }
        let counters = self.counters
        let total = gateways.count
        let reporter = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(progressSeconds))
                let now = clock.now()
                let day = Int(now.timeIntervalSince(clock.virtualStart) / 86_400) + 1
                progress(
                    "day \(min(day, days) > 0 ? "\(min(day, days))/\(days)" : "live") \(WireFormat.timestamp(now).prefix(16))  "
                        + "online \(counters.online.load(ordering: .relaxed))/\(total)  "
                        + "sessions \(counters.sessionsStarted.load(ordering: .relaxed)) started, "
                        + "\(counters.sessionsCompleted.load(ordering: .relaxed)) completed, \(counters.sessionsAborted.load(ordering: .relaxed)) aborted  "
                        + "messages \(counters.enqueued.load(ordering: .relaxed))  outages \(counters.outages.load(ordering: .relaxed))  "
                        + "broker \(counters.connected.load(ordering: .relaxed))/\(total) connected"
                        + (counters.connected.load(ordering: .relaxed) < counters.online.load(ordering: .relaxed)
                            ? counters.lastLinkError.map { " (last error: \($0))" } ?? "" : ""))
            }
        }
        defer { reporter.cancel() }
        let live = configuration.live
        let all = gateways
        await withTaskGroup(of: Void.self) { group in
            for gateway in all {
                group.addTask {
                    await withTaskCancellationHandler {
                        await gateway.run(days: days, live: live)
                    } onCancel: {}
                }
            }
        }
    }
}

/// Why a simulated fleet cannot run as asked.
public struct FleetSimError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
