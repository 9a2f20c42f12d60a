import Foundation
import MQTT
import SpectraProtocol
import Synchronization

/// A staged firmware rollout's durable record: written after every step, so whatever drives the
/// rollout can be restarted and carry on where it stopped.
public struct RolloutState: Codable, Sendable, Equatable {
    public enum Status: String, Codable, Sendable {
        case running, halted, completed
    }

    public var fleet: String
    public var group: String?
    public var firmwareVersion: String
    /// The signed manifest (kid, payload, sig), as published to each gateway.
    public var manifest: SignedDocument
    /// Cumulative share of the gateways each wave reaches, percent.
    public var waves: [Double]
    public var maxFailurePct: Double
    public var soakSeconds: Double
    public var waveTimeoutSeconds: Double
    /// Every gateway in the rollout, in the order the waves take them.
    public var gateways: [String]
    /// The wave being run (or the next to run).
    public var currentWave: Int
    /// Gateways the manifest was sent to.
    public var sent: [String]
    /// Per gateway: `installed`, or the failure (`failed`, `rolled_back`, `rejected: ...`, `timeout`).
    public var results: [String: String]
    public var status: Status
    public var haltReason: String?
    public var updatedAt: Date

    public init(
        fleet: String, group: String?, firmwareVersion: String, manifest: SignedDocument, waves: [Double], maxFailurePct: Double,
        soakSeconds: Double, waveTimeoutSeconds: Double, gateways: [String], currentWave: Int = 0, sent: [String] = [],
        results: [String: String] = [:], status: Status = .running, haltReason: String? = nil, updatedAt: Date = Date()
    ) {
        self.fleet = fleet
        self.group = group
        self.firmwareVersion = firmwareVersion
        self.manifest = manifest
        self.waves = waves
        self.maxFailurePct = maxFailurePct
        self.soakSeconds = soakSeconds
        self.waveTimeoutSeconds = waveTimeoutSeconds
        self.gateways = gateways
        self.currentWave = currentWave
        self.sent = sent
        self.results = results
        self.status = status
        self.haltReason = haltReason
        self.updatedAt = updatedAt
    }

    /// How many gateways waves 0...`wave` reach together.
    public func cumulativeCount(through wave: Int) -> Int {
        guard !gateways.isEmpty else { return 0 }
        let share = waves[min(wave, waves.count - 1)]
        return min(gateways.count, max(1, Int((share / 100 * Double(gateways.count)).rounded(.up))))
    }

    public var failures: [String] { results.filter { $0.value != "installed" }.map(\.key).sorted() }

    /// Failed share of the gateways sent the manifest, percent.
    public var failurePct: Double { sent.isEmpty ? 0 : 100 * Double(failures.count) / Double(sent.count) }

    public func save(to path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        let folder = (path as NSString).deletingLastPathComponent
        if !folder.isEmpty { try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true) }
        let temporary = path + ".tmp"
        try encoder.encode(self).write(to: URL(fileURLWithPath: temporary))
        _ = rename(temporary, path)
    }

    public static func load(from path: String) throws -> RolloutState {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        guard let data = FileManager.default.contents(atPath: path) else { throw OperatorError("cannot read \(path)") }
        do {
            return try decoder.decode(RolloutState.self, from: data)
        } catch {
            throw OperatorError("\(path) is not a rollout state file: \(error)")
        }
    }
}

/// Runs a rollout wave by wave: sends the manifest to the wave's gateways, waits for each to
/// report `installed` or a failure, halts by itself once failures pass the threshold (and
/// withdraws the manifest from gateways that have not acted on it), otherwise soaks and moves on.
public struct RolloutRunner: Sendable {
    public let connection: OperatorClient
    public let statePath: String
    public let log: @Sendable (String) -> Void

    public init(connection: OperatorClient, statePath: String, log: @escaping @Sendable (String) -> Void) {
        self.connection = connection
        self.statePath = statePath
        self.log = log
    }

    public func run(_ initial: RolloutState) async throws -> RolloutState {
        var state = initial
        guard state.status == .running else { return state }
        let fleet = try Identifier(state.fleet, field: "fleet")
        let version = state.firmwareVersion
        let progress = Mutex<[String: String]>([:])
        let messages = connection.messages()
        let watcher = Task {
            for await message in messages {
                guard let topic = try? Topic(parsing: message.topic) else { continue }
                switch topic {
                case .event(_, let gateway):
                    guard let envelope = try? Envelope.decode(Data(message.payload)),
                        case .event(.firmwareProgress(let report)) = envelope.message, report.version == version
                    else { continue }
                    let result: String? = switch report.stage {
                    case .installed: "installed"
                    case .failed: "failed"
                    case .rolledBack: "rolled_back"
                    case .rejected: "rejected: \(report.detail ?? "no reason given")"
                    default: nil
                    }
                    if let result {
                        // A rollback after a failure is the final word on that gateway.
                        progress.withLock { $0[gateway.rawValue] = result }
                    }
                case .state(_, let gateway):
                    if let reported = try? WireFormat.decode(ReportedState.self, from: Data(message.payload)), reported.firmware == version {
                        progress.withLock { if $0[gateway.rawValue] == nil { $0[gateway.rawValue] = "installed" } }
                    }
                default: continue
                }
            }
        }
        defer { watcher.cancel() }
        _ = try await connection.client.subscribe([
            Subscription(TopicFilter.allGateways(fleet: fleet, leaf: "event")),
            Subscription(TopicFilter.allGateways(fleet: fleet, leaf: "state")),
        ])

        while state.currentWave < state.waves.count {
            let wave = state.currentWave
            let members = Array(state.gateways.prefix(state.cumulativeCount(through: wave)))
            let newcomers = members.filter { !state.sent.contains($0) }
            for gateway in newcomers {
                let topic = Topic.firmware(fleet: fleet, gateway: try Identifier(gateway, field: "gateway"))
                let bytes = state.manifest.encoded()
                try await connection.client.publish(OutgoingMessage(topic: topic.path, payload: [UInt8](bytes), retain: true))
                AuditLog().append(
                    action: "firmware.rollout", fleet: fleet.rawValue, target: "gateway:\(gateway)", topic: topic.path, payload: bytes,
                    keyID: state.manifest.kid, detail: "wave \(wave + 1)/\(state.waves.count), firmware \(state.firmwareVersion)")
                state.sent.append(gateway)
            }
            try save(&state)
            log("wave \(wave + 1)/\(state.waves.count): manifest sent to \(newcomers.count) gateway(s), \(members.count) of \(state.gateways.count) in all")

            // Wait for every gateway sent the manifest to answer, or time out.
            let deadline = ContinuousClock.now + .seconds(state.waveTimeoutSeconds)
            while true {
                merge(progress.withLock { $0 }, into: &state)
                let waiting = state.sent.filter { state.results[$0] == nil }
                if waiting.isEmpty || ContinuousClock.now >= deadline { break }
                if state.failurePct > state.maxFailurePct { break }
                try await Task.sleep(for: .milliseconds(100))
            }
            for gateway in state.sent where state.results[gateway] == nil && ContinuousClock.now >= deadline {
                state.results[gateway] = "timeout"
            }
            if try await haltIfOver(&state, fleet: fleet) { return state }
            if state.soakSeconds > 0 && wave < state.waves.count - 1 {
                log("wave \(wave + 1): \(installedCount(state)) installed; soaking \(Int(state.soakSeconds)) s")
                let soakEnd = ContinuousClock.now + .seconds(state.soakSeconds)
                while ContinuousClock.now < soakEnd {
                    try await Task.sleep(for: .milliseconds(200))
                    merge(progress.withLock { $0 }, into: &state)
                    if try await haltIfOver(&state, fleet: fleet) { return state }
                }
            }
            state.currentWave += 1
            try save(&state)
            log("wave \(wave + 1) passed: \(installedCount(state)) installed, \(state.failures.count) failed (\(format(state.failurePct)) % <= \(format(state.maxFailurePct)) %)")
        }
        state.status = .completed
        try save(&state)
        log("rollout of \(version) completed: \(installedCount(state)) of \(state.gateways.count) installed")
        return state
    }

    private func merge(_ progress: [String: String], into state: inout RolloutState) {
        for (gateway, result) in progress where state.sent.contains(gateway) {
            // Late news (a rollback after "installed", or an install after a timeout) wins.
            state.results[gateway] = result
        }
    }

    private func installedCount(_ state: RolloutState) -> Int { state.results.values.filter { $0 == "installed" }.count }

    private func format(_ value: Double) -> String { String(format: "%.1f", value) }

    private func save(_ state: inout RolloutState) throws {
        state.updatedAt = Date()
        try state.save(to: statePath)
    }

    /// Halts past the threshold: records why, and withdraws the retained manifest from every
    /// gateway that has not acted on it yet.
    private func haltIfOver(_ state: inout RolloutState, fleet: Identifier) async throws -> Bool {
        guard state.failurePct > state.maxFailurePct else { return false }
        state.status = .halted
        state.haltReason = "wave \(state.currentWave + 1): \(state.failures.count) of \(state.sent.count) failed (\(format(state.failurePct)) % > \(format(state.maxFailurePct)) %): \(state.failures.joined(separator: ", "))"
        for gateway in state.sent where state.results[gateway] == nil {
            let topic = Topic.firmware(fleet: fleet, gateway: try Identifier(gateway, field: "gateway"))
            try await connection.client.publish(OutgoingMessage(topic: topic.path, payload: [], retain: true))
            AuditLog().append(
                action: "firmware.withdraw", fleet: fleet.rawValue, target: "gateway:\(gateway)", topic: topic.path, payload: Data(),
                detail: "rollout halted")
        }
        try save(&state)
        log("rollout HALTED at \(state.haltReason ?? "")")
        return true
    }
}
