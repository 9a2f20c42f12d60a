import Foundation
import GRDB
import Logging
import MQTT
@testable @_spi(Testing) import Outbox
import ServiceLifecycle
import SpectraTesting
import Testing

@Suite("Outbox and client as services")
struct LifecycleTests {
    /// Stands for the agent's runtime: on a graceful shutdown it queues a last few messages
    /// (a session's end) and waits until the outbox has handed everything to the broker.
    struct Drainer: Service {
        let outbox: Outbox
        let last: Int
        func run() async throws {
            try? await gracefulShutdown()
            for _ in 0..<last { await outbox.enqueue { numbered($0, $1) } }
            let deadline = ContinuousClock.now + .seconds(20)
            while await outbox.stats().depth > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    @Test("a graceful shutdown stops the group in reverse: the drain goes through the outbox and the client still running, then the outbox commits its deletes and gives up its file, and the client disconnects last")
    func shutdownOrder() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: path, window: 32))
        for _ in 0..<200 { await outbox.enqueue { numbered($0, $1) } }
        let client = MQTTClient(broker.mqtt("gw-1"))
        // Wired before the group runs, as the agent does: the first connection is not missed.
        await outbox.attach(client)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: client), .init(service: outbox), .init(service: Drainer(outbox: outbox, last: 300))],
                logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(await witness.waitFor(count: 200, timeout: 20), "the backlog drains once the client service connects")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(await witness.waitFor(count: 500, timeout: 5), "messages queued during the shutdown were delivered")
        #expect(witness.elements.compactMap(seqOf).sorted() == Array(1...500))
        #expect(!client.isConnected, "the client disconnected when the group ended")
        // The outbox closed: another connection reads its file, with nothing left in it (the
        // deletes of every acknowledged row were committed before the close).
        let rows = try await DatabaseQueue(path: path).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message") }
        #expect(rows == 0, "acknowledged rows were left behind")
        await broker.stop()
    }

    @Test("the dispatcher runs once, ends at close, and a closed outbox takes no transport")
    func dispatcherEndsAtClose() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite")))
        let link = InProcessTransport()
        let dispatcher = Task { await outbox.run() }
        await outbox.attach(link)
        link.connect()
        await outbox.enqueue { numbered($0, $1) }
        #expect(await eventually { link.sent.count == 1 })
        // A second run() returns at once rather than racing the first.
        await outbox.run()
        await outbox.close()
        await dispatcher.value
        await outbox.attach(link)
        #expect(await outbox.client == nil, "a closed outbox took a transport")
    }
}
