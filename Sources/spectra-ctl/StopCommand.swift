import ArgumentParser
import FleetControl
import Foundation
import MQTT
import SpectraProtocol

struct StopCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stop", abstract: "Emergency stop: end a gateway's running session now (through a ramp).",
        discussion: "Example: spectra-ctl stop --fleet demo --gateway gw-0001 --reason \"wearer reported discomfort\"")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: ArgumentHelp("Fleet (default: from --config or SPECTRA_FLEET, else demo).", valueName: "name")) var fleet: String?
    @Option(help: ArgumentHelp("The gateway.", valueName: "id")) var gateway: String
    @Option(help: ArgumentHelp("Why (shown in the gateway's log).", valueName: "text")) var reason = "operator stop"

    func run() async throws {
        let gatewayID: Identifier
        do { gatewayID = try Identifier(gateway, field: "gateway") } catch { throw UsageFailure(error.description) }
        guard reason.utf8.count <= StopCommand.maxReasonBytes else { throw UsageFailure("--reason is longer than \(StopCommand.maxReasonBytes) bytes") }
        let fleet = try await connection.fleet(fleet)
        let client = try await connection.connect()
        let topic = Topic.stop(fleet: fleet, gateway: gatewayID)
        let payload = WireFormat.encode(SpectraProtocol.StopCommand(reason: reason))
        try await client.client.publish(OutgoingMessage(topic: topic.path, payload: [UInt8](payload)))
        AuditLog().append(action: "stop", fleet: fleet.rawValue, target: "gateway:\(gatewayID)", topic: topic.path, payload: payload, detail: reason)
        await client.disconnect()
        print("stop sent to \(fleet)/\(gatewayID) (acknowledged by the broker)")
    }

    static let maxReasonBytes = SpectraProtocol.StopCommand.maxReasonLength
}
