import Foundation
@testable import MQTT
import SpectraTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Many clients in one process")
struct ManyClientsTests {
    @Test("2,000 clients on one event loop connect, subscribe and each get a message", .timeLimit(.minutes(1)))
    func twoThousandClients() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let broker = try await MosquittoBroker(extraConfig: "max_connections -1\n")
        let loop = MQTTEventLoop(name: "many")
        let count = 2000
        let clients = (0..<count).map { MQTTClient(broker.client(String(format: "gw-%04d", $0)), loop: loop) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients {
                group.addTask {
                    try await client.connect()
                    try await client.subscribe([Subscription("spectra/v1/demo/gw/\(client.configuration.clientID)/cmd/+")])
                }
            }
            try await group.waitForAll()
        }
        #expect(clients.allSatisfy { $0.isConnected })
        let collectors = clients.map { Collector($0.messages) }
        // Each client publishes to the next one's command topic.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, client) in clients.enumerated() {
                let target = clients[(index + 1) % count].configuration.clientID
                group.addTask {
                    try await client.publish(OutgoingMessage(
                        topic: "spectra/v1/demo/gw/\(target)/cmd/rebirth", payload: bytes(client.configuration.clientID)))
                }
            }
            try await group.waitForAll()
        }
        #expect(await eventually(timeout: 20) { collectors.allSatisfy { $0.count == 1 } })
        for (index, collector) in collectors.enumerated() {
            let sender = clients[(index + count - 1) % count].configuration.clientID
            #expect(collector.elements.first.map(text) == sender)
        }
        await withTaskGroup(of: Void.self) { group in
            for client in clients { group.addTask { await client.disconnect() } }
        }
    }
}
