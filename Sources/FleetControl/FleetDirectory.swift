import Foundation
import MQTT
import SpectraProtocol

/// The gateways of a fleet as their retained `state` messages describe them.
public struct FleetDirectory: Sendable {
    public struct Entry: Sendable, Equatable {
        public var gateway: Identifier
        public var state: ReportedState
    }

    public var entries: [Entry]

    /// Reads every gateway's retained state in `fleet`.
    public static func read(fleet: Identifier, from connection: OperatorClient) async throws -> FleetDirectory {
        let messages = try await connection.retained(TopicFilter.allGateways(fleet: fleet, leaf: "state"))
        var entries: [Entry] = []
        for message in messages {
            guard case .state(_, let gateway)? = try? Topic(parsing: message.topic),
                let state = try? WireFormat.decode(ReportedState.self, from: Data(message.payload))
            else { continue }
            entries.append(Entry(gateway: gateway, state: state))
        }
        return FleetDirectory(entries: entries.sorted { $0.gateway < $1.gateway })
    }

    /// The highest version the gateways a target reaches report for its layer (nil: none does).
    public func appliedVersion(of target: DocumentTarget) -> Int? {
        let layer = target.layer
        let reached = Set(gateways(for: target))
        return entries.filter { reached.contains($0.gateway) }.compactMap { $0.state.configVersions[layer] }.max()
    }

    /// The gateways a target reaches: one gateway, the members of a group, or everyone.
    public func gateways(for target: DocumentTarget) -> [Identifier] {
        switch target {
        case .gateway(let gateway): [gateway]
        case .group(let group): entries.filter { $0.state.groups.contains(group.rawValue) }.map(\.gateway)
        case .all: entries.map(\.gateway)
        }
    }
}
