import Foundation
import GRDB
import MQTT
@testable @_spi(Testing) import Outbox
import SpectraTesting
import Testing

@Suite("Outbox delivery against a real mosquitto")
struct DeliveryTests {
    @Test("a backlog built offline drains by itself on connect, in order, flagged historical; rows go only after PUBACK")
    func drainOnConnect() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), window: 50))
        for _ in 0..<500 { await outbox.enqueue { numbered($0, $1) } }
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        #expect(await witness.waitFor(count: 500, timeout: 20))
        let seqs = witness.elements.compactMap(seqOf)
        #expect(seqs == Array(1...500))
        #expect(witness.elements.allSatisfy { $0.userProperty("historical") == "true" })
        #expect(await eventually { await outbox.stats().depth == 0 })
        let stats = await outbox.stats()
        #expect(stats.acknowledged == 500 && stats.resent == 0)
    }

    @Test("live messages go first while a backlog drains, unflagged")
    func liveFirst() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), window: 20, backlogShare: 0.25))
        for _ in 0..<3000 { await outbox.enqueue { numbered($0, $1) } }
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        try await Task.sleep(for: .milliseconds(20))
        let live = await outbox.enqueue { numbered($0, $1) }
        #expect(await witness.waitFor(count: 3001, timeout: 30))
        let order = witness.elements.compactMap(seqOf)
        let livePosition = try #require(order.firstIndex(of: live))
        #expect(livePosition < 2900, "the live message waited behind the backlog (position \(livePosition))")
        #expect(witness.elements[livePosition].userProperty("historical") == nil)
        let backlog = order.filter { $0 != live }
        #expect(backlog == backlog.sorted())
    }

    @Test("nothing is lost across a broker restart and a silent link; duplicates only for unacknowledged messages")
    func brokerTrouble() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), window: 100))
        let client = MQTTClient(broker.mqtt("gw-1", keepalive: 5))
        await outbox.dispatching(through: client)
        try await client.connect()
        let total = 3000
        let producer = Task {
            for index in 0..<total {
                await outbox.enqueue { numbered($0, $1) }
                if index % 100 == 0 { try? await Task.sleep(for: .milliseconds(10)) }
            }
        }
        try await Task.sleep(for: .milliseconds(100))
        try await broker.restart()
        try await Task.sleep(for: .milliseconds(300))
        broker.pause()
        try await Task.sleep(for: .seconds(8))
        broker.resume()
        await producer.value
        #expect(await eventually(timeout: 40) { await outbox.stats().depth == 0 })
        #expect(await eventually(timeout: 10) { Set(witness.elements.compactMap(seqOf)).count == total })
        let received = witness.elements.compactMap(seqOf)
        #expect(Set(received) == Set(1...UInt64(total)))
        let duplicates = received.count - Set(received).count
        let stats = await outbox.stats()
        #expect(duplicates <= stats.resent, "a duplicate without a resend")
    }

    @Test("a restart while offline keeps the queue and drains it after the restart")
    func restartWhileOffline() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        do {
            let outbox = try Outbox(OutboxConfiguration(path: path))
            for _ in 0..<100 { await outbox.enqueue { numbered($0, $1) } }
        }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: path))
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        #expect(await witness.waitFor(count: 100))
        #expect(witness.elements.compactMap(seqOf) == Array(1...100))
    }

    @Test("SIGKILL during heavy enqueue: the database is intact and every enqueue that returned is there")
    func killDuringEnqueue() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        let child = try ChildProcess(TestEnvironment.product("spectra-bench"), ["outbox-enqueue", "--path", path, "--count", "1000000", "--report"])
        #expect(await child.waitForLine(timeout: 30) { $0.hasPrefix("returned 20000") } != nil)
        child.send(SIGKILL)
        await child.wait()
        let returned = child.lines.compactMap { line -> UInt64? in
            line.hasPrefix("returned ") ? UInt64(line.dropFirst("returned ".count)) : nil
        }.max() ?? 0
        #expect(returned >= 20000)
        let queue = try DatabaseQueue(path: path)
        let check = try await queue.read { db in try String.fetchOne(db, sql: "PRAGMA integrity_check") }
        #expect(check == "ok")
        let (count, maxSeq) = try await queue.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message WHERE seq <= ?", arguments: [Int64(returned)]) ?? 0,
             try Int64.fetchOne(db, sql: "SELECT MAX(seq) FROM message") ?? 0)
        }
        #expect(count == Int(returned), "an enqueue that returned is missing")
        #expect(maxSeq >= Int64(returned))
        try queue.close()
        // The reopened outbox continues after the highest committed seq, and delivers everything.
        let outbox = try Outbox(OutboxConfiguration(path: path, window: 2000))
        #expect(await outbox.enqueue { numbered($0, $1) } == UInt64(maxSeq) + 1)
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        #expect(await eventually(timeout: 60) { await outbox.stats().depth == 0 })
        #expect(await witness.waitFor(count: Int(maxSeq) + 1, timeout: 20))
        let delivered = Set(witness.elements.compactMap(seqOf))
        #expect(Set(1...returned).isSubset(of: delivered), "an enqueue that returned was not delivered")
    }

    @Test("after a backlog drains, its space goes back to the file system")
    func spaceGivenBack() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        func onDisk() -> Int {
            ["", "-wal"].reduce(0) { total, suffix in
                total + ((try? FileManager.default.attributesOfItem(atPath: path + suffix)[.size] as? Int) ?? 0)
            }
        }
        let outbox = try Outbox(OutboxConfiguration(path: path, window: 500))
        for _ in 0..<4000 { await outbox.enqueue { numbered($0, $1, .telemetry, size: 2000) } }
        let full = onDisk()
        #expect(full > 8_000_000)
        let broker = try await MosquittoBroker()
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        #expect(await eventually(timeout: 60) { await outbox.stats().depth == 0 })
        #expect(await eventually(timeout: 10) { onDisk() < 1_000_000 }, "\(onDisk()) bytes still on disk after the drain (\(full) before)")
    }

    @Test("messages committed only after the connect (a disk that healed) are delivered on the same connection")
    func committedAfterConnect() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: folder.path("o.sqlite"), minFreeBytes: 0))
        await outbox.enqueue { numbered($0, $1) }
        try await outbox.setMaxPageCount(1)
        for _ in 0..<5 { await outbox.enqueue { numbered($0, $1, size: 2000) } }
        #expect(await outbox.stats().memoryBuffered >= 4)
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        #expect(await witness.waitFor(count: 1))
        try await outbox.setMaxPageCount(1_000_000)
        #expect(await witness.waitFor(count: 6, timeout: 10), "held messages waited for another connection")
        #expect(witness.elements.compactMap(seqOf) == Array(1...6))
    }
    @Test("the oldest unacknowledged age is the oldest stored row's, across a reopen and a drain")
    func oldestAge() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        do {
            let outbox = try Outbox(OutboxConfiguration(path: path))
            #expect(await outbox.stats().oldestUnackedSeconds == 0)
            await outbox.enqueue { numbered($0, $1) }
            try await Task.sleep(for: .milliseconds(400))
            await outbox.enqueue { numbered($0, $1) }
            #expect(await outbox.stats().oldestUnackedSeconds >= 0.4)
        }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let outbox = try Outbox(OutboxConfiguration(path: path))
        #expect(await outbox.stats().oldestUnackedSeconds >= 0.4, "a reopened outbox knows how old its rows are")
        let client = MQTTClient(broker.mqtt("gw-1"))
        await outbox.dispatching(through: client)
        try await client.connect()
        #expect(await witness.waitFor(count: 2))
        #expect(await eventually { await outbox.stats().depth == 0 })
        #expect(await outbox.stats().oldestUnackedSeconds == 0)
        // Offline again: a new row's age starts from its own enqueue, not the drained ones'.
        await client.disconnect()
        #expect(await eventually { !client.isConnected })
        let enqueued = Date()
        await outbox.enqueue { numbered($0, $1) }
        let age = await outbox.stats().oldestUnackedSeconds
        #expect(age <= Date().timeIntervalSince(enqueued) + 0.001, "the age must not reach back before this enqueue")
    }

    @Test("acknowledged rows leave the database without another enqueue or at close, and a reopened outbox sends none again")
    func acknowledgedRowsGo() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let path = folder.path("o.sqlite")
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        // Another connection, once the outbox has closed.
        func storedRows() async throws -> Int {
            try await DatabaseQueue(path: path).read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message") ?? -1 }
        }
        func connected(_ outbox: Outbox) async throws -> MQTTClient {
            let client = MQTTClient(broker.mqtt("gw-1"))
            await outbox.dispatching(through: client)
            try await client.connect()
            return client
        }
        // Nothing else is enqueued: the housekeeping tick (every 0.1 s here) deletes them.
        do {
            let outbox = try Outbox(OutboxConfiguration(path: path, stallSeconds: 0.4))
            let client = try await connected(outbox)
            for _ in 0..<5 { await outbox.enqueue { numbered($0, $1) } }
            #expect(await witness.waitFor(count: 5))
            #expect(await eventually {
                let stats = await outbox.stats()
                return stats.depth == 0 && stats.bytes == 0
            })
            #expect(
                try await eventually(timeout: 3) {
                    try await outbox.readDatabase { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM message") } == 0
                }, "acknowledged rows stayed in the database")
            await outbox.close()
            await client.disconnect()
        }
        // A trickle, then a close before the first tick (5 s with the default stall period).
        do {
            let outbox = try Outbox(OutboxConfiguration(path: path))
            let client = try await connected(outbox)
            for count in 6...8 {
                let seq = await outbox.enqueue { numbered($0, $1) }
                #expect(seq == UInt64(count), "seq \(seq) given twice: the emptied queue forgot its next seq")
                #expect(await witness.waitFor(count: count))
            }
            #expect(await eventually { await outbox.stats().depth == 0 })
            await outbox.close()
            await client.disconnect()
            #expect(try await storedRows() == 0, "close left acknowledged rows behind")
        }
        let reopened = try Outbox(OutboxConfiguration(path: path))
        #expect(await reopened.stats().depth == 0)
        let client = try await connected(reopened)
        await reopened.enqueue { numbered($0, $1) }
        #expect(await witness.waitFor(count: 9))
        try await Task.sleep(for: .milliseconds(300))
        #expect(witness.elements.compactMap(seqOf) == Array(1...9), "an acknowledged message was sent again")
        await client.disconnect()
    }

    @Test("outboxes sharing one dispatch queue keep their own seqs and all deliver")
    func sharedQueue() async throws {
        let folder = try TempFolder()
        defer { folder.remove() }
        let broker = try await MosquittoBroker()
        let (_, witness) = try await broker.witness()
        let shared = DispatchQueue(label: "test.outbox.shared")
        var outboxes: [Outbox] = []
        for index in 0..<3 {
            outboxes.append(try Outbox(OutboxConfiguration(path: folder.path("o\(index).sqlite"), targetQueue: shared)))
        }
        let all = outboxes
        // Enqueues into all three at once, then connect each to the broker as its own gateway.
        let seqs = await withTaskGroup(of: (Int, UInt64).self) { group in
            for (index, outbox) in all.enumerated() {
                for _ in 0..<100 { group.addTask { (index, await outbox.enqueue { numbered($0, $1) }) } }
            }
            return await group.reduce(into: [Int: [UInt64]]()) { $0[$1.0, default: []].append($1.1) }
        }
        for index in 0..<3 { #expect(seqs[index]?.sorted() == Array(1...100)) }
        var clients: [MQTTClient] = []
        for (index, outbox) in all.enumerated() {
            let client = MQTTClient(broker.mqtt("gw-\(index)"))
            await outbox.dispatching(through: client)
            try await client.connect()
            clients.append(client)
        }
        #expect(await witness.waitFor(count: 300, timeout: 20))
        for outbox in all { #expect(await eventually { await outbox.stats().depth == 0 }) }
        let delivered = witness.elements.compactMap(seqOf)
        #expect((1...100).allSatisfy { seq in delivered.filter { $0 == seq }.count == 3 })
        for client in clients { await client.disconnect() }
    }
}
