import ArgumentParser
import Foundation
import MQTT
import Outbox

/// Enqueue rate with group commit: many concurrent producers into one outbox.
struct OutboxEnqueueBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox-enqueue", abstract: "Enqueue messages into an outbox as fast as concurrent producers can.")

    @Option(help: "Database file.") var path: String
    @Option(help: "Messages.") var count = 200_000
    @Option(help: "Payload bytes.") var bytes = 300
    @Option(help: "Concurrent producers.") var producers = 64
    @Option(help: "normal or full.") var durability = "normal"
    @Flag(name: .customLong("report"), help: "Print 'returned N' as enqueues return (for crash tests).") var reportProgress = false

    func run() async throws {
        let outbox = try Outbox(OutboxConfiguration(
            path: path, durability: durability == "full" ? .full : .normal, maxBytes: 1 << 40, minFreeBytes: 0))
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: bytes)
        let start = monotonicSeconds()
        let perProducer = count / producers
        let reportEvery = reportProgress
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<producers {
                group.addTask {
                    for _ in 0..<perProducer {
                        let seq = await outbox.enqueue { seq, _ in
                            // The payload starts with its seq, so a witness can tell messages apart.
                            var body = Array("\(seq).".utf8)
                            body += payload.prefix(max(0, payload.count - body.count))
                            return OutboxMessage(messageClass: .telemetry, topic: "spectra/v1/demo/gw/gw-1/telemetry", payload: body)
                        }
                        if reportEvery && seq % 1000 == 0 {
                            FileHandle.standardOutput.write(Data("returned \(seq)\n".utf8))
                        }
                    }
                }
            }
        }
        let seconds = monotonicSeconds() - start
        report(["bench": "outbox-enqueue", "messages": perProducer * producers, "bytes": bytes, "seconds": seconds,
                "perSecond": Double(perProducer * producers) / seconds, "durability": durability])
    }
}

/// Drains a prepared backlog into a broker.
struct OutboxDrainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox-drain", abstract: "Fill an outbox offline, then time its drain into a broker.")

    @Option(help: "Database file (created).") var path: String
    @Option(help: "Broker port on 127.0.0.1.") var port: Int
    @Option(help: "Messages.") var count = 500_000
    @Option(help: "Payload bytes.") var bytes = 466
    @Option(help: "In-flight window.") var window = 2000

    func run() async throws {
        let outbox = try Outbox(OutboxConfiguration(path: path, maxBytes: 1 << 40, minFreeBytes: 0, window: window))
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: bytes)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<32 {
                group.addTask {
                    for _ in 0..<(count / 32) {
                        await outbox.enqueue { _, _ in
                            OutboxMessage(messageClass: .telemetry, topic: "spectra/v1/demo/gw/gw-1/telemetry", payload: payload)
                        }
                    }
                }
            }
        }
        let queued = await outbox.stats().depth
        let client = MQTTClient(MQTTConfiguration(port: port, clientID: "drain-\(getpid())"))
        let start = monotonicSeconds()
        let seconds = try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await outbox.run() }
            await outbox.attach(client)
            try await client.connect()
            while await outbox.stats().depth > 0 { try await Task.sleep(for: .milliseconds(20)) }
            let seconds = monotonicSeconds() - start
            await client.disconnect()
            await outbox.close()
            return seconds
        }
        report(["bench": "outbox-drain", "messages": queued, "bytes": bytes, "seconds": seconds, "perSecond": Double(queued) / seconds])
    }
}

/// A disk that fills up, for the fault tests: this process's file-size limit (RLIMIT_FSIZE)
/// is lowered until the outbox's writes fail, and raised again.
///
/// Prints one JSON line when the writes fail (`"phase":"full"`) and one when everything has
/// reached the disk again (`"phase":"healed"`), each with the outbox's counters and the seqs
/// enqueue returned.
struct OutboxDiskFull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox-disk-full", abstract: "Fill the outbox's disk with a file-size limit, then lift it (fault tests).")

    @Option(help: "Database file (created).") var path: String
    @Option(help: "File-size limit while the disk is full, bytes.") var limitBytes = 256 * 1024
    @Option(help: "Messages enqueued after the first refused write.") var afterFull = 50

    func run() async throws {
        let outbox = try Outbox(OutboxConfiguration(path: path, maxBytes: 1 << 30, minFreeBytes: 0))
        let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 300)
        func enqueue() async -> UInt64 {
            await outbox.enqueue { _, _ in OutboxMessage(messageClass: .event, topic: "spectra/v1/demo/gw/gw-1/event", payload: payload) }
        }
        var seqs: [UInt64] = []
        for _ in 0..<100 { seqs.append(await enqueue()) }
        await outbox.flush()

        // A write past the limit fails with EFBIG instead of raising SIGXFSZ.
        signal(SIGXFSZ, SIG_IGN)
        let resource = __rlimit_resource_t(RLIMIT_FSIZE.rawValue)
        var original = rlimit()
        getrlimit(resource, &original)
        var full = original
        full.rlim_cur = rlim_t(limitBytes)
        guard setrlimit(resource, &full) == 0 else { throw ValidationError("setrlimit failed: errno \(errno)") }

        var refused = 0
        while refused < afterFull {
            seqs.append(await enqueue())
            if await outbox.stats().storageErrors > 0 { refused += 1 }
            if seqs.count > 1_000_000 { throw ValidationError("no write failed under a \(limitBytes)-byte file-size limit") }
        }
        report(["phase": "full", "stats": Self.fields(await outbox.stats()), "seqs": seqs.map(Int.init)])

        guard setrlimit(resource, &original) == 0 else { throw ValidationError("setrlimit failed: errno \(errno)") }
        let deadline = monotonicSeconds() + 60
        while await outbox.stats().memoryBuffered > 0 && monotonicSeconds() < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        await outbox.flush()
        report(["phase": "healed", "stats": Self.fields(await outbox.stats()), "seqs": seqs.map(Int.init)])
        await outbox.close()
    }

    static func fields(_ stats: OutboxStats) -> [String: Int] {
        ["depth": stats.depth, "memoryBuffered": stats.memoryBuffered, "storageErrors": stats.storageErrors]
    }
}
