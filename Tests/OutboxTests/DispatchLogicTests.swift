import Foundation
import MQTT
@testable @_spi(Testing) import Outbox
import SpectraTesting
import Testing

/// The outbox's dispatch logic over an in-process link that acknowledges only what the test
/// says: windows, out-of-order and repeated acknowledgements, refusals and stalls.
@Suite("Outbox dispatch logic, in process")
struct DispatchLogicTests {
    @Test("acknowledgements out of order and repeated delete each row once; only the unacknowledged go again on the next connection")
    func acknowledgementsInAnyOrder() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), window: 64))
        for _ in 0..<40 { await outbox.enqueue { numbered($0, $1) } }
        let link = InProcessTransport()
        await outbox.dispatching(through: link)
        link.connect()
        #expect(await eventually { link.sent.count == 40 })
        let tokens = link.sent.map(\.token)
        #expect(tokens == Array(1...40), "the backlog in seq order")
        // Every other message acknowledged, backwards, some twice.
        let acknowledged = tokens.filter { $0 % 2 == 0 }.reversed()
        link.acknowledge(Array(acknowledged))
        link.acknowledge([2, 4, 40])
        #expect(await eventually { await outbox.stats().depth == 20 })
        let stats = await outbox.stats()
        #expect(stats.refused == 0 && stats.depth == 20, "\(stats)")

        link.drop()
        link.connect()
        #expect(await eventually { link.sent.count == 60 })
        #expect(link.sent.suffix(20).map(\.token) == tokens.filter { $0 % 2 == 1 }, "the 20 never acknowledged, and only those")
        #expect(link.sent.suffix(20).allSatisfy { $0.message.userProperties.contains(UserProperty("historical", "true")) })
        link.acknowledge(tokens.filter { $0 % 2 == 1 })
        #expect(await eventually { await outbox.stats().depth == 0 })
    }

    @Test("no more than the window is in flight; acknowledgements let the rest out")
    func window() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), window: 16))
        for _ in 0..<100 { await outbox.enqueue { numbered($0, $1) } }
        let link = InProcessTransport()
        await outbox.dispatching(through: link)
        link.connect()
        #expect(await eventually { link.sent.count == 16 })
        try await Task.sleep(for: .milliseconds(200))
        #expect(link.sent.count == 16, "nothing past the window before an acknowledgement")
        var acknowledged = 0
        while acknowledged < 100 {
            let sent = link.sent.map(\.token)
            guard sent.count > acknowledged else {
                #expect(await eventually { link.sent.count > acknowledged }, "stalled at \(acknowledged)")
                continue
            }
            link.acknowledge(Array(sent[acknowledged...]))
            acknowledged = sent.count
        }
        #expect(await eventually { await outbox.stats().depth == 0 })
        #expect(link.sent.map(\.token) == Array(1...100))
    }

    @Test("a refusal sets the message aside (not deleted as delivered); a drain nobody acknowledges is recycled after stallSeconds")
    func refusalAndStall() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), window: 8, stallSeconds: 0.5))
        for _ in 0..<3 { await outbox.enqueue { numbered($0, $1) } }
        let link = InProcessTransport()
        await outbox.dispatching(through: link)
        link.connect()
        #expect(await eventually { link.sent.count == 3 })
        link.acknowledge([1])
        link.acknowledge([2], reason: 0x87)  // not authorised
        #expect(await eventually { await outbox.stats().refused == 1 })
        let stats = await outbox.stats()
        #expect(stats.lastRefusal?.contains("on spectra/v1/demo/gw/gw-1/event") == true, "\(stats)")

        // Message 3 is never acknowledged: the link is recycled and it goes again.
        #expect(await eventually(timeout: 10) { link.reconnects >= 1 })
        #expect(await eventually { link.sent.filter { $0.token == 3 }.count >= 2 })
        #expect(await outbox.stats().stallRecycles >= 1)
        #expect(!link.sent.dropFirst(3).contains { $0.token == 1 || $0.token == 2 }, "neither the delivered nor the refused one is sent again on this run")
    }
}
