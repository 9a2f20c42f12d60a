import ArgumentParser
import FleetControl
import Foundation
import MQTT
import SpectraProtocol

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow the fleet's events live.",
        discussion: """
            One line per event: time, gateway, type and its body. Ctrl-C stops.
            Example: spectra-ctl watch --fleet demo --type session.aborted --type safety.trip
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: ArgumentHelp("Fleet (default: from --config or SPECTRA_FLEET, else demo).", valueName: "name")) var fleet: String?
    @Option(help: ArgumentHelp("Only this gateway.", valueName: "id")) var gateway: String?
    @Option(help: ArgumentHelp("Only this event type (repeatable), e.g. session.completed.", valueName: "type")) var type: [String] = []
    @Option(help: ArgumentHelp("Exit after this many events.", valueName: "n")) var count: Int?
    @Flag(help: "Print each event's envelope as JSON.") var json = false

    func run() async throws {
        let known = Set(Event.EventType.allCases.map(\.rawValue))
        if let unknown = type.first(where: { !known.contains($0) }) {
            throw UsageFailure("'\(unknown)' is not an event type; use one of \(known.sorted().joined(separator: ", "))")
        }
        if let gateway, !Identifier.isValid(gateway) { throw UsageFailure("--gateway must be 1-64 of A-Z a-z 0-9 _ -") }
        let fleet = try await connection.fleet(fleet)
        let client = try await connection.connect()
        let messages = client.messages()
        let filter = "spectra/v1/\(fleet)/gw/\(gateway ?? "+")/event"
        _ = try await client.client.subscribe([Subscription(filter)])
        FileHandle.standardError.write(Data("watching \(filter)\(type.isEmpty ? "" : " for \(type.joined(separator: ", "))")\n".utf8))
        var seen = 0
        for await message in messages {
            guard let envelope = try? Envelope.decode(Data(message.payload)), case .event(let event) = envelope.message else { continue }
            guard type.isEmpty || type.contains(event.type.rawValue) else { continue }
            if json {
                print(String(decoding: envelope.encoded(), as: UTF8.self))
            } else {
                let body = (try? JSONSerialization.jsonObject(with: envelope.encoded()) as? [String: Any])?["body"]
                let bodyText = body.flatMap { try? JSONSerialization.data(withJSONObject: $0, options: [.sortedKeys]) }.map { String(decoding: $0, as: UTF8.self) } ?? ""
                let historical = envelope.historical || message.userProperty("historical") == "true" ? " (replayed)" : ""
                print("\(WireFormat.timestamp(envelope.timestamp))  \(envelope.gateway)  \(event.type.rawValue)\(historical)  \(bodyText)")
            }
            fflush(nil)
            seen += 1
            if let count, seen >= count { break }
        }
        await client.disconnect()
    }
}
