import ArgumentParser
import Foundation
import MQTT

/// Connects with a Will and waits to be killed: a process for tests that check the Will.
struct MQTTHold: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt-hold", abstract: "Connect with a retained Will, print 'connected', and wait to be killed.")

    @Option(help: "Broker port on 127.0.0.1.") var port: Int
    @Option(help: "Client id.") var clientID = "hold"
    @Option(help: "Will topic.") var willTopic: String
    @Option(help: "Will payload.") var willPayload = "offline"

    func run() async throws {
        let client = MQTTClient(MQTTConfiguration(
            port: port, clientID: clientID, keepaliveSeconds: 5,
            will: .init(topic: willTopic, payload: Array(willPayload.utf8), qos: .atLeastOnce, retain: true)))
        try await client.connect()
        FileHandle.standardOutput.write(Data("connected\n".utf8))
        try await Task.sleep(for: .seconds(3600))
    }
}
