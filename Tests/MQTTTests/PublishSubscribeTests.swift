import Foundation
@testable @_spi(Testing) import MQTT
import SpectraTesting
import Synchronization
import Testing

@Suite("Publish and subscribe against a real mosquitto")
struct PublishSubscribeTests {
    @Test("round trip at QoS 0 and 1, with user properties, in order", arguments: [QoS.atMostOnce, .atLeastOnce])
    func roundTrip(qos: QoS) async throws {
        let broker = try await MosquittoBroker()
        let (subscriber, publisher) = try await connectedPair(broker)
        let received = Collector(subscriber.messages)
        #expect(try await subscriber.subscribe([Subscription("t/#", qos: qos)]) == [qos])
        for index in 0..<50 {
            try await publisher.publish(OutgoingMessage(
                topic: "t/\(index % 3)", payload: bytes("m\(index)"), qos: qos,
                userProperties: [UserProperty("historical", "true")]))
        }
        #expect(await received.waitFor(count: 50))
        #expect(received.elements.map(text) == (0..<50).map { "m\($0)" })
        #expect(received.elements.allSatisfy { $0.userProperty("historical") == "true" && $0.qos == qos })
        await subscriber.disconnect()
        await publisher.disconnect()
    }

    @Test("batches handed to send() go out together at once: in order, acknowledged, never held back by the cork")
    func sendBatches() async throws {
        let broker = try await MosquittoBroker()
        let (subscriber, publisher) = try await connectedPair(broker)
        let received = Collector(subscriber.messages)
        try await subscriber.subscribe([Subscription("b/#")])
        var acknowledgements = publisher.acknowledgements.makeAsyncIterator()
        // One round trip after another. A socket left corked holds every batch for 200 ms
        // before the kernel gives up waiting for more; a loaded machine slows some round
        // trips, but not the fastest of 40.
        var roundTrips: [Duration] = []
        for batch in 0..<40 {
            let tokens = (0..<3).map { UInt64(batch * 3 + $0) }
            let start = ContinuousClock.now
            try await publisher.send(tokens.map { (OutgoingMessage(topic: "b/\($0 % 2)", payload: bytes("m\($0)")), $0) })
            var acknowledged: [UInt64] = []
            while acknowledged.count < tokens.count, let acks = await acknowledgements.next() {
                acknowledged += acks.map(\.token)
            }
            roundTrips.append(ContinuousClock.now - start)
            #expect(acknowledged == tokens)
        }
        let fastest = roundTrips.min() ?? .zero
        #expect(fastest < .milliseconds(100), "the fastest of 40 round trips took \(fastest)")
        #expect(await received.waitFor(count: 120))
        #expect(received.elements.map(text) == (0..<120).map { "m\($0)" })
        await subscriber.disconnect()
        await publisher.disconnect()
    }

    @Test("a message handler takes every message, in order, and the stream none")
    func messageHandler() async throws {
        let broker = try await MosquittoBroker()
        let subscriber = MQTTClient(broker.client("sub"))
        let taken = Mutex<[String]>([])
        subscriber.deliverMessages { message in taken.withLock { $0.append(text(message)) } }
        let streamed = Collector(subscriber.messages)
        try await subscriber.connect()
        try await subscriber.subscribe([Subscription("h/#")])
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        for index in 0..<50 { try await publisher.publish(OutgoingMessage(topic: "h/\(index % 4)", payload: bytes("m\(index)"))) }
        #expect(await eventually { taken.withLock { $0.count } == 50 })
        #expect(taken.withLock { $0 } == (0..<50).map { "m\($0)" })
        #expect(subscriber.receivedMessages == 50)
        #expect(streamed.count == 0)
        await subscriber.disconnect()
        await publisher.disconnect()
    }

    @Test("retained messages reach a later subscriber, flagged as retained")
    func retained() async throws {
        let broker = try await MosquittoBroker()
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        try await publisher.publish(OutgoingMessage(topic: "r/status", payload: bytes("online"), retain: true))
        let late = MQTTClient(broker.client("late"))
        try await late.connect()
        let received = Collector(late.messages)
        try await late.subscribe([Subscription("r/#")])
        #expect(await received.waitFor(count: 1))
        #expect(received.elements.first.map(text) == "online")
        #expect(received.elements.first?.retain == true)
    }

    @Test("the Will is published when a client vanishes without DISCONNECT, and not after a clean one")
    func will() async throws {
        let broker = try await MosquittoBroker()
        let watcher = MQTTClient(broker.client("watcher"))
        try await watcher.connect()
        let received = Collector(watcher.messages)
        try await watcher.subscribe([Subscription("w/#")])
        let will = MQTTConfiguration.Will(topic: "w/gw-1", payload: bytes("offline"), retain: true)
        let gateway = MQTTClient(broker.client("gw-1", will: will))
        try await gateway.connect()
        gateway.dropConnectionWithoutDisconnect()
        #expect(await received.waitFor(count: 1))
        #expect(received.elements.first.map(text) == "offline")
        // It reconnects by itself; a clean disconnect then sends no Will.
        #expect(await eventually { gateway.isConnected })
        await gateway.disconnect()
        try await Task.sleep(for: .milliseconds(500))
        #expect(received.count == 1)
    }

    @Test("a persistent session keeps QoS 1 messages for a subscriber that was away")
    func persistentSession() async throws {
        let broker = try await MosquittoBroker()
        let first = MQTTClient(broker.client("agg-1", cleanStart: false, expiry: 3600))
        #expect(try await first.connect() == false)
        try await first.subscribe([Subscription("p/#")])
        await first.disconnect()
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        for index in 0..<20 { try await publisher.publish(OutgoingMessage(topic: "p/x", payload: bytes("\(index)"))) }
        let again = MQTTClient(broker.client("agg-1", cleanStart: false, expiry: 3600))
        let received = Collector(again.messages)
        #expect(try await again.connect() == true, "the broker should have kept the session")
        #expect(await received.waitFor(count: 20))
        #expect(received.elements.map(text) == (0..<20).map(String.init))
    }

    @Test("acknowledgeWhenSettled: reading stops at the window, and what was not settled comes back after a drop")
    func acknowledgeWhenSettled() async throws {
        let broker = try await MosquittoBroker()
        func committer() -> MQTTClient {
            var configuration = broker.client("committer", cleanStart: false, expiry: 3600)
            configuration.acknowledgeWhenSettled = 10
            return MQTTClient(configuration)
        }
        let first = committer()
        try await first.connect()
        try await first.subscribe([Subscription("w/#")])
        let received = Collector(first.messages)
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        for index in 0..<30 { try await publisher.publish(OutgoingMessage(topic: "w/x", payload: bytes("\(index)"))) }

        #expect(await received.waitFor(count: 10))
        try await Task.sleep(for: .milliseconds(400))
        #expect(received.count == 10, "reading pauses while the window of 10 is unsettled")
        #expect(received.elements.map(\.delivery.ordinal) == Array(1...10))

        // A crash before settling: nothing was acknowledged, so the broker sends all 10 again.
        first.dropConnectionWithoutDisconnect()
        #expect(await received.waitFor(count: 20))
        let again = received.elements[10..<20]
        #expect(again.map(text) == (0..<10).map(String.init), "the unsettled messages come back, in order")
        #expect(Set(again.map(\.delivery.connection)).count == 1 && again.first!.delivery.connection > received.elements[0].delivery.connection)
        // A late settle for the old connection changes nothing; settling the new one lets the rest in.
        first.settle(through: received.elements[9].delivery)
        try await Task.sleep(for: .milliseconds(200))
        #expect(received.count == 20)
        for window in 2...3 {
            first.settle(through: received.elements[window * 10 - 1].delivery)
            #expect(await received.waitFor(count: (window + 1) * 10))
        }
        first.settle(through: received.elements[39].delivery)
        #expect(received.elements[20..<40].map(text) == (10..<30).map(String.init))
        await first.disconnect()
        // (Connecting under the same id before the broker has read the PUBACKs and DISCONNECT
        // would take the session over and drop them unread.)
        #expect(await eventually { broker.log.contains("Client committer disconnected") })

        // Everything settled was acknowledged: the session holds nothing more.
        let later = committer()
        let leftovers = Collector(later.messages)
        #expect(try await later.connect() == true)
        try await Task.sleep(for: .milliseconds(500))
        #expect(leftovers.count == 0, "\(leftovers.elements.map(text))")
        await later.disconnect()
    }

    @Test("a queued backlog of small and large packets arrives whole and in order, however often the window pauses reading")
    func backlogThroughPauses() async throws {
        let broker = try await MosquittoBroker()
        func reader() -> MQTTClient {
            var configuration = broker.client("reader", cleanStart: false, expiry: 3600)
            configuration.acknowledgeWhenSettled = 7
            return MQTTClient(configuration)
        }
        let first = reader()
        try await first.connect()
        try await first.subscribe([Subscription("q/#")])
        await first.disconnect()
        #expect(await eventually { broker.log.contains("Client reader disconnected") })

        // Many packets to a read, and some (40 KiB) larger than one read takes.
        let payloads = (0..<600).map { index -> [UInt8] in
            let size = index % 50 == 0 ? 40_000 + index : 1 + (index * 37) % 300
            return (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) }
        }
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        for payload in payloads { try await publisher.publish(OutgoingMessage(topic: "q/x", payload: payload)) }

        // Read seven, settle them, read on: every pause can leave packets read from the socket
        // and not yet delivered, which epoll no longer reports.
        let again = reader()
        let received = Collector(again.messages)
        #expect(try await again.connect() == true)
        var settled = 0
        while settled < payloads.count {
            let next = min(settled + 7, payloads.count)
            guard await received.waitFor(count: next) else { break }
            again.settle(through: received.elements[next - 1].delivery)
            settled = next
        }
        #expect(settled == payloads.count, "reading stalled after \(received.count) of \(payloads.count)")
        let got = received.elements.map(\.payload)
        #expect(got.count == payloads.count)
        let firstWrong = zip(got, payloads).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(firstWrong == nil, "message \(firstWrong ?? 0) differs from the one published")
        await again.disconnect()
    }

    @Test("a shared subscription splits messages between two clients, none lost or doubled")
    func sharedSubscription() async throws {
        let broker = try await MosquittoBroker()
        let a = MQTTClient(broker.client("agg-a"))
        let b = MQTTClient(broker.client("agg-b"))
        try await a.connect()
        try await b.connect()
        let fromA = Collector(a.messages)
        let fromB = Collector(b.messages)
        try await a.subscribe([Subscription("$share/aggregators/s/#")])
        try await b.subscribe([Subscription("$share/aggregators/s/#")])
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        let total = 400
        for index in 0..<total { try await publisher.publish(OutgoingMessage(topic: "s/\(index % 7)", payload: bytes("\(index)"))) }
        #expect(await eventually { fromA.count + fromB.count >= total })
        try await Task.sleep(for: .milliseconds(300))
        let all = (fromA.elements + fromB.elements).map(text)
        #expect(all.count == total)
        #expect(Set(all) == Set((0..<total).map(String.init)))
        #expect(fromA.count > 0 && fromB.count > 0)
    }

    @Test("a slow consumer loses only what overflows its buffer, and the loss is counted")
    func boundedBuffer() async throws {
        let broker = try await MosquittoBroker()
        var configuration = broker.client("slow")
        configuration.receiveBufferCapacity = 10
        let slow = MQTTClient(configuration)
        try await slow.connect()
        try await slow.subscribe([Subscription("b/#")])
        let publisher = MQTTClient(broker.client("pub"))
        try await publisher.connect()
        for index in 0..<30 { try await publisher.publish(OutgoingMessage(topic: "b/x", payload: bytes("\(index)"))) }
        #expect(await eventually { slow.receivedMessages == 30 })
        #expect(slow.droppedMessages == 20)
        var kept: [String] = []
        for await message in slow.messages {
            kept.append(text(message))
            if kept.count == 10 { break }
        }
        #expect(kept == (0..<10).map(String.init))
    }

    @Test("publishing while not connected fails at once with notConnected")
    func notConnected() async throws {
        let client = MQTTClient(MQTTConfiguration(port: 1, clientID: "idle"))
        await #expect(throws: MQTTError.self) {
            try await client.publish(OutgoingMessage(topic: "x", payload: []))
        }
        do {
            try await client.publish(OutgoingMessage(topic: "x", payload: []))
        } catch let error as MQTTError {
            #expect(error.kind == .notConnected)
        }
    }
}

@Suite("Wills and protocol versions")
struct WillProcessTests {
    @Test("the Will of a client process killed with SIGKILL is published, retained")
    func willOnKill() async throws {
        let broker = try await MosquittoBroker()
        let holder = try ChildProcess(TestEnvironment.product("spectra-bench"), [
            "mqtt-hold", "--port", "\(broker.port)", "--client-id", "gw-7", "--will-topic", "spectra/v1/demo/gw/gw-7/status",
        ])
        #expect(await holder.waitForLine(timeout: 20) { $0 == "connected" } != nil)
        let watcher = MQTTClient(broker.client("watcher"))
        try await watcher.connect()
        let received = Collector(watcher.messages)
        try await watcher.subscribe([Subscription("spectra/v1/demo/gw/+/status")])
        try await Task.sleep(for: .milliseconds(200))
        #expect(received.count == 0)
        holder.send(SIGKILL)
        await holder.wait()
        #expect(await received.waitFor(count: 1))
        #expect(received.elements.first.map(text) == "offline")
        // Retained: a late subscriber sees it too.
        let late = MQTTClient(broker.client("late"))
        try await late.connect()
        let lateReceived = Collector(late.messages)
        try await late.subscribe([Subscription("spectra/v1/demo/gw/gw-7/status")])
        #expect(await lateReceived.waitFor(count: 1))
        #expect(lateReceived.elements.first?.retain == true)
    }

    @Test("MQTT 3.1.1 works too (without user properties)")
    func v311() async throws {
        let broker = try await MosquittoBroker()
        var configuration = broker.client("old")
        configuration.protocolVersion = .v311
        let client = MQTTClient(configuration)
        try await client.connect()
        let received = Collector(client.messages)
        try await client.subscribe([Subscription("v3/#")])
        try await client.publish(OutgoingMessage(topic: "v3/x", payload: bytes("hello"), userProperties: [UserProperty("a", "b")]))
        #expect(await received.waitFor(count: 1))
        #expect(received.elements.first.map(text) == "hello")
        #expect(received.elements.first?.userProperties.isEmpty == true)
    }
}
