import Foundation
import GRDB
import Logging
import MQTT
import ServiceLifecycle

/// The outbox's dispatcher: sends the stored rows through a ``PublishTransport`` in `seq`
/// order within the window, live rows first with a share kept for the backlog, deletes on
/// acknowledgement, sets refusals aside and recycles a link whose drain stalls.
extension Outbox {
    // MARK: Dispatch

    /// A transport handed to ``attach(_:)``, with its connection updates taken at that moment
    /// (none is missed between the attach and ``run()`` following it).
    struct Attachment: Sendable {
        let transport: any PublishTransport
        let events: AsyncStream<ConnectionState>
    }

    /// Sends through `client` from now on (a transport attached before replaces it): ``run()``
    /// drains on every connect, deletes on every PUBACK, and recycles the connection when the
    /// drain stalls.
    public func attach(_ client: any PublishTransport) {
        guard !closed else { return }
        self.client = client
        attachmentSink.yield(Attachment(transport: client, events: client.connectionUpdates()))
        if client.isConnected { connectionChanged(client.state) }
    }

    /// The dispatcher: follows the attached transports' connections and acknowledgements,
    /// pumps rows into the window, and does the housekeeping (stall check, deletes, metrics),
    /// each a child task, until ``close()``, a graceful shutdown or cancellation; then closes
    /// the outbox. (The writer that commits enqueues is not part of it: the store works
    /// without a dispatcher, and a write burst ends when nothing waits.)
    func dispatch() async {
        guard !running, !closed else {
            logger.warning("the outbox's dispatcher runs once; this run() returns at once")
            return
        }
        running = true
        let attachments = self.attachments
        let pumpRequests = self.pumpRequests
        let sink = attachmentSink
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    await withDiscardingTaskGroup { followers in
                        for await attachment in attachments {
                            followers.addTask { await self.follow(attachment) }
                        }
                        // Closed: the transports are no longer followed.
                        followers.cancelAll()
                    }
                }
                group.addTask { for await _ in pumpRequests { await self.pump() } }
                group.addTask { await self.housekeep() }
                // The first to end (the attachments, at a close or a graceful shutdown) ends all.
                _ = await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            sink.finish()
        }
        await close()
    }

    /// One transport's connection changes and acknowledgements, until its streams end (the
    /// client stopped) or the dispatcher does. A replaced transport's connection changes no
    /// longer count; its late acknowledgements still do (each is a delivery).
    func follow(_ attachment: Attachment) async {
        let transport = attachment.transport
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await event in attachment.events { await self.connectionChanged(event, on: transport) }
            }
            group.addTask {
                for await batch in transport.acknowledgements { await self.acknowledged(batch) }
            }
        }
    }

    func connectionChanged(_ state: ConnectionState, on transport: any PublishTransport) {
        guard transport === client else { return }
        connectionChanged(state)
    }

    /// Checked a few times per stall period, not every second: a fleet simulator runs
    /// thousands of outboxes in one process.
    func housekeep() async {
        let period = min(5, max(0.05, configuration.stallSeconds / 4))
        while (try? await Task.sleep(for: .seconds(period))) != nil {
            checkStall()
            deleteAcknowledged()
            recordMetrics()
        }
    }

    func connectionChanged(_ state: ConnectionState) {
        if case .connected = state {
            connected = true
            inflight.removeAll()
            // The backlog is what is committed now; what commits later (a write under way, or
            // messages held in memory while the disk refused them) goes out live.
            boundary = committedNext - 1
            liveCursor = committedNext
            recent.removeAll()
            recentFrom = committedNext
            backlogCursor = 0
            hasBacklog = true
            requestPump()
        } else {
            connected = false
            inflight.removeAll()
        }
    }

    func acknowledged(_ batch: [PublishAcknowledgement]) {
        for ack in batch {
            let sent = inflight.removeValue(forKey: ack.token)
            let bytes = sent?.bytes ?? 0
            if !ack.isSuccess && ackedNotDeleted[ack.token] == nil {
                // (A recycle forgets what was in flight; the row still says where it went.)
                refused(seq: ack.token, reason: ack.reasonCode, topic: sent?.topic ?? storedTopic(seq: ack.token) ?? "?")
            }
            counters.acknowledged += 1
            // A repeated PUBACK (a resend acknowledged twice) is already waiting for its delete.
            guard ackedNotDeleted[ack.token] == nil else { continue }
            ackedNotDeleted[ack.token] = bytes
            ackedNotDeletedBytes += bytes
            pendingDeletes.append(ack.token)
        }
        if pendingDeletes.count >= Self.deleteBatch { startWriter() }
        // Room in the window matters only when something waits for it.
        if hasUnsent { requestPump() }
    }

    /// The topic of stored row `seq`, if it is there.
    func storedTopic(seq: UInt64) -> String? {
        try? queue.inDatabase { db in try String.fetchOne(db, sql: "SELECT topic FROM message WHERE seq = ?", arguments: [Int64(bitPattern: seq)]) }
    }

    /// A send failed while connected (a QoS or packet size the broker does not take): logged
    /// once per cause, then at a bounded rate; ``OutboxStats/sendError`` says it meanwhile.
    /// (A send that fails because the link dropped is the link's story, told elsewhere.)
    func sendFailed(_ reason: String) {
        guard connected else { return }
        let now = Date()
        if counters.sendError == reason, let last = sendErrorSaid, now.timeIntervalSince(last) < Self.refusalReminderSeconds { return }
        counters.sendError = reason
        sendErrorSaid = now
        logger.error("the outbox cannot send to the broker; its messages wait (retried at the next connection)", metadata: ["reason": "\(reason)"])
        // Not again and again on this connection: the next connect (or a stall recycle) retries.
        connected = false
    }

    /// The broker refused a message: it is set aside with the reason (not deleted as if
    /// delivered), counted, and logged once per reason and topic, then at a bounded rate.
    func refused(seq: UInt64, reason: Int32, topic: String) {
        pendingRefusals.append((seq, reason))
        counters.refused += 1
        let text = "\(MQTTError.reasonName(reason)) [reason \(reason)] on \(topic)"
        counters.lastRefusal = text
        let now = Date()
        if let last = refusalLog[text], now.timeIntervalSince(last.at) < Self.refusalReminderSeconds {
            refusalLog[text]?.since += 1
            return
        }
        let repeats = refusalLog[text]?.since ?? 0
        if refusalLog.count >= 64 { refusalLog.removeAll() }  // a bound, whatever the broker says
        refusalLog[text] = (now, 0)
        logger.error(
            "the broker refused a message; it is set aside and sent again at the next start (check the broker's ACL for this gateway's client id and topics, and its quotas)",
            metadata: ["seq": "\(seq)", "refusal": "\(text)", "refusedSinceLastSaid": "\(repeats)", "refusedInAll": "\(counters.refused)"])
    }

    func checkStall() {
        guard connected, let client, let oldest = inflight.values.map(\.sentAt).min() else { return }
        if Date().timeIntervalSince1970 - oldest > configuration.stallSeconds {
            logger.warning("outbox drain stalled; recycling the connection", metadata: ["oldestUnackedS": "\(Date().timeIntervalSince1970 - oldest)"])
            counters.stallRecycles += 1
            inflight.removeAll()
            client.reconnect()
        }
    }

    /// Whether committed rows wait to be sent: a backlog, or live rows the window held back.
    var hasUnsent: Bool { hasBacklog || liveCursor < committedNext }

    /// Asks the dispatcher's pump to fill the window (a request made while it pumps runs it
    /// once more afterwards).
    func requestPump() {
        guard connected else { return }
        pumpSink.yield()
    }

    func pump() async {
        while connected, let client {
            let capacity = configuration.window - inflight.count
            // Refill in batches, not one row per acknowledgement.
            guard capacity > 0, inflight.isEmpty || capacity >= max(1, configuration.window / 8) else { break }
            let reserve = hasBacklog ? max(1, Int(Double(configuration.window) * configuration.backlogShare)) : 0
            let backlogInFlight = inflight.values.reduce(0) { $0 + ($1.backlog ? 1 : 0) }
            let liveLimit = max(0, capacity - max(0, min(capacity, reserve - backlogInFlight)))
            let (live, backlog) = fetchBatch(liveLimit: liveLimit, capacity: capacity)
            if live.isEmpty && backlog.isEmpty { break }
            var outgoing: [(message: OutgoingMessage, token: UInt64)] = []
            let now = Date().timeIntervalSince1970
            let userProperties = client.carriesUserProperties
            for (row, historical) in live.map({ ($0, false) }) + backlog.map({ ($0, true) }) {
                inflight[row.seq] = (now, historical, row.payload.count, row.topic)
                if row.seq <= maxSentSeq { counters.resent += 1 }
                maxSentSeq = max(maxSentSeq, row.seq)
                // The historical mark: a user property under MQTT 5, a field of the envelope
                // under 3.1.1 (which has no properties).
                let mark = historical && userProperties ? [UserProperty("historical", "true")] : []
                let payload = historical && !userProperties && row.messageClass != .state
                    ? Self.markedHistorical(row.payload) : row.payload
                outgoing.append((OutgoingMessage(
                    topic: row.topic, payload: payload, qos: QoS(rawValue: row.qos) ?? .atLeastOnce, retain: row.retain,
                    userProperties: mark), row.seq))
            }
            counters.sent += outgoing.count
            do {
                try await client.send(outgoing)
                if counters.sendError != nil {
                    counters.sendError = nil
                    logger.notice("the broker takes the outbox's messages again")
                }
            } catch {
                for item in outgoing { inflight[item.token] = nil }
                connected = client.isConnected
                sendFailed("\(error)")
                break
            }
        }
    }

    /// A JSON object with `"historical":true` added before its closing brace (the envelope's
    /// MQTT 3.1.1 form of the historical mark); anything else is returned as it is.
    static func markedHistorical(_ payload: [UInt8]) -> [UInt8] {
        guard let close = payload.lastIndex(where: { $0 != 0x20 && $0 != 0x0A && $0 != 0x0D && $0 != 0x09 }),
              payload[close] == UInt8(ascii: "}"), payload.first == UInt8(ascii: "{") else { return payload }
        var marked = Array(payload[..<close])
        marked.append(contentsOf: Array(",\"historical\":true}".utf8))
        return marked
    }

    /// The next rows to send: live ones first, then the backlog. Rows in flight or acknowledged
    /// but not yet deleted are skipped.
    func fetchBatch(liveLimit: Int, capacity: Int) -> ([StoredMessage], [StoredMessage]) {
        func skipped(_ seq: UInt64) -> Bool { inflight[seq] != nil || ackedNotDeleted[seq] != nil }
        func ahead(of cursor: UInt64) -> Int {
            inflight.keys.reduce(0) { $0 + ($1 >= cursor ? 1 : 0) } + ackedNotDeleted.keys.reduce(0) { $0 + ($1 >= cursor ? 1 : 0) }
        }
        var live: [StoredMessage] = []
        var backlog: [StoredMessage] = []
        let liveCursor = self.liveCursor
        let backlogCursor = self.backlogCursor
        let boundary = self.boundary
        let hasBacklog = self.hasBacklog
        // Live rows come from memory when every committed one is there (the usual case).
        let liveFromMemory = liveLimit > 0 && liveCursor >= recentFrom
        if liveFromMemory {
            live = Array(recent.lazy.filter { $0.seq >= liveCursor && !skipped($0.seq) }.prefix(liveLimit))
        }
        let liveToRead = liveLimit > 0 && !liveFromMemory
        if liveToRead || hasBacklog {
            let liveExtra = liveToRead ? ahead(of: liveCursor) : 0
            let backlogExtra = hasBacklog ? ahead(of: backlogCursor) : 0
            do {
                let fetched = try queue.inDatabase { db -> ([StoredMessage], [StoredMessage]) in
                    let live = liveToRead
                        ? try OutboxStore.fetch(from: liveCursor, through: .max, limit: liveLimit + liveExtra, db: db) : []
                    let backlog = hasBacklog
                        ? try OutboxStore.fetch(from: backlogCursor, through: boundary, limit: capacity + backlogExtra, db: db) : []
                    return (live, backlog)
                }
                if liveToRead { live = Array(fetched.0.lazy.filter { !skipped($0.seq) }.prefix(liveLimit)) }
                backlog = Array(fetched.1.lazy.filter { !skipped($0.seq) }.prefix(capacity - live.count))
            } catch {
                logger.error("outbox read failed", metadata: ["error": "\(error)"])
                return ([], [])
            }
        }
        if let last = live.last {
            self.liveCursor = last.seq + 1
            recent.removeAll { $0.seq <= last.seq }
        }
        if let last = backlog.last {
            self.backlogCursor = last.seq + 1
        } else if capacity - live.count > 0 {
            self.hasBacklog = false
        }
        return (live, backlog)
    }
}

extension Outbox: Service {
    /// Runs the dispatcher (see ``attach(_:)``) until ``close()``, a graceful shutdown or
    /// cancellation, then closes the outbox: in a `ServiceGroup`, list the outbox before the
    /// service that drains through it, so that it closes after that service's drain.
    public func run() async {
        await dispatch()
    }
}
