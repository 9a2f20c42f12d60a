import Dispatch
import Foundation
import Logging
import Synchronization
import Waveform

/// A headband on the other end of a serial link (a USB dock, or a pseudo-terminal the
/// emulator serves), speaking docs/headband-protocol.md.
///
/// - One request at a time; each is retransmitted after `replyTimeoutS` (plus the segment's
///   duration) and the link is declared lost after ``attempts`` tries, so a silent device ends
///   a session as `headband_lost` within about a second.
/// - A closed device (unplugged, the emulator gone) is noticed by the reader at once.
/// - While the link is down, calls answer at once (`connected == false`), and every call tries
///   to open the port again, at most once a second; a new link begins with `hello`.
public final class LinkedHeadband: Headband, @unchecked Sendable {
    public let path: String
    /// Seconds to wait for a reply before sending the request again (250 ms by default: a BLE
    /// bridge may need more).
    public let replyTimeoutS: Double
    /// Tries per request before the link counts as lost.
    public static let attempts = 4

    /// What the link has done, for `spectra-agent status` and telemetry.
    public struct Statistics: Sendable, Equatable, Codable {
        public var state = "down"
        public var framesSent = 0
        public var framesReceived = 0
        public var bytesSent = 0
        public var bytesReceived = 0
        /// Frames dropped for damaged bytes (CRC or COBS), in both directions' evidence: what
        /// this side received damaged.
        public var corrupted = 0
        public var retransmits = 0
        public var linkLosses = 0
        public var lastError: String?
        public var model: String?
        public var firmware: String?
        /// Segment round trips (request sent to the headband's acknowledgement), milliseconds,
        /// over the last ``latencyWindow`` segments: median and 99th percentile.
        public var segmentLatencyMsP50: Double?
        public var segmentLatencyMsP99: Double?
    }

    /// Segments the latency figures cover.
    static let latencyWindow = 2000

    private struct State {
        var fd: Int32 = -1
        var info: HeadbandInfo?
        var decoder = LinkFrameDecoder()
        var waiters: [UInt16: (token: Int, continuation: CheckedContinuation<Answer, Never>)] = [:]
        var nextSeq: UInt16 = 0
        var nextToken = 0
        var lastAttempt = -Double.infinity
        var statistics = Statistics()
        var status = HeadbandStatus(timeS: 0, batteryPct: 0, vibrationRpm: 0, temperatureC: 0, contactImpedanceOhms: .nan, connected: false, firmware: "")
        var stimulatedS = 0.0
        var watchdogS = HardLimits.maxSessionSeconds
        var closing = false
        /// The status a segment's reply carried: the next status call for its channel takes it
        /// instead of asking again (once, and only while it is fresh).
        var carried: (channel: Int, status: HeadbandStatus, at: Double)?
        /// The latest segment round trips, seconds (a ring of ``latencyWindow``).
        var latencies: [Double] = []
        var latencyNext = 0
        /// Requests waiting their turn (one on the link at a time).
        var busy = false
        var queue: [CheckedContinuation<Void, Never>] = []
    }

    /// What a request's wait ends with.
    private enum Answer {
        case reply(LinkFrame)
        /// Nothing within the time, or the link closed.
        case none
        /// A damaged frame arrived: most likely the reply; ask again at once.
        case damaged
    }

    private let state = Mutex(State())
    private let logger: Logger

    /// Opens the link (when it can; otherwise later, by itself) and starts its reader.
    public init(path: String, replyTimeoutS: Double = 0.25, logger: Logger) {
        self.path = path
        self.replyTimeoutS = min(5, max(0.05, replyTimeoutS))
        self.logger = logger
        let thread = Thread { [weak self] in self?.readLoop() }
        thread.name = "headband-link"
        thread.start()
    }

    deinit {
        let fd = state.withLock { state -> Int32 in
            state.closing = true
            return state.fd
        }
        if fd >= 0 { close(fd) }
    }

    public var statistics: Statistics {
        state.withLock { state in
            var statistics = state.statistics
            let sorted = state.latencies.sorted()
            if !sorted.isEmpty {
                statistics.segmentLatencyMsP50 = (sorted[sorted.count / 2] * 1e6).rounded() / 1e3
                statistics.segmentLatencyMsP99 = (sorted[min(sorted.count - 1, sorted.count * 99 / 100)] * 1e6).rounded() / 1e3
            }
            return statistics
        }
    }
    public var info: HeadbandInfo? { state.withLock { $0.info } }

    // MARK: Headband

    public var capabilities: HeadbandCapabilities? {
        state.withLock { state in
            guard state.fd >= 0, let info = state.info else { return nil }
            return HeadbandCapabilities(
                model: info.model, hardware: info.hardware, firmware: info.firmware, channels: info.channels,
                maxMicroAmps: Double(info.maxMicroAmps), linkWatchdogMs: info.watchdogMs)
        }
    }

    public var timeS: Double { state.withLock { $0.status.timeS } }
    public var batteryPct: Double { state.withLock { $0.status.batteryPct } }
    public var vibrationRpm: Double { state.withLock { $0.status.vibrationRpm } }
    public var stimulatedS: Double { state.withLock { $0.stimulatedS } }
    public var firmware: String { state.withLock { $0.info?.firmware ?? $0.status.firmware } }
    public var connected: Bool { state.withLock { $0.fd >= 0 && $0.info != nil } }
    public var watchdogS: Double {
        get { state.withLock { $0.watchdogS } }
        set { state.withLock { $0.watchdogS = newValue } }
    }

    public func beginSession() async {
        state.withLock { $0.stimulatedS = 0 }
        _ = await request(.beginSession, LinkMessages.encode(f32: watchdogS))
    }

    public func endSession() async {
        _ = await request(.endSession, [])
    }

    public func execute(_ segment: Segment) async -> [PulseReport] {
        guard let info = await linkInfo() else { return [] }
        var reports: [PulseReport] = []
        var done = 0
        // Split to what the device takes in one segment.
        while done < segment.pairs {
            var part = segment
            part.pairs = min(info.maxPairsPerSegment, segment.pairs - done)
            part.startMicroAmps = segment.amplitude(pair: done)
            part.leadingPositive = segment.leadsPositive(pair: done)
            let sent = ContinuousClock.now
            guard let reply = await request(.segment, LinkMessages.encode(part), extraWaitS: part.durationS) else { break }
            let elapsed = ContinuousClock.now - sent
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            state.withLock { state in
                if state.latencies.count < Self.latencyWindow {
                    state.latencies.append(seconds)
                } else {
                    state.latencies[state.latencyNext] = seconds
                }
                state.latencyNext = (state.latencyNext + 1) % Self.latencyWindow
            }
            guard reply.type == .segmentReply,
                  let decoded = LinkMessages.decodeSegmentReply(reply.body, channels: info.channels, maxPairs: part.pairs)
            else {
                refused(reply, doing: "a segment")
                break
            }
            let delivered = decoded.reports
            reports += delivered
            state.withLock { state in
                state.stimulatedS = decoded.stimulatedS
                state.status = decoded.status
                state.carried = (segment.channelIndex, decoded.status, ProcessInfo.processInfo.systemUptime)
            }
            done += part.pairs
            if delivered.count < part.pairs { break }
        }
        return reports
    }

    public func idle(_ seconds: Double) async {
        _ = await request(.idle, LinkMessages.encode(f32: min(60, max(0, seconds))))
    }

    public func status(channel: Int) async -> HeadbandStatus {
        let now = ProcessInfo.processInfo.systemUptime
        // The status the last segment's reply carried serves this call when it is fresh and for
        // this channel; otherwise ask, keeping the button presses it reported (each is sent once).
        let (carried, buttons) = state.withLock { state -> (HeadbandStatus?, [ButtonPress]) in
            defer { state.carried = nil }
            guard let carried = state.carried else { return (nil, []) }
            if carried.channel == channel && now - carried.at < 0.15 { return (carried.status, []) }
            return (nil, carried.status.buttons)
        }
        if let carried { return carried }
        if let reply = await request(.status, [UInt8(clamping: channel)]) {
            if reply.type == .statusReply, var decoded = LinkMessages.decodeStatus(reply.body) {
                decoded.status.buttons = buttons + decoded.status.buttons
                state.withLock { state in
                    state.status = decoded.status
                    state.stimulatedS = decoded.stimulatedS
                }
                return decoded.status
            }
            refused(reply, doing: "a status")
        }
        return state.withLock { state in
            var last = state.status
            last.buttons = buttons
            last.connected = state.fd >= 0 && state.info != nil
            return last
        }
    }

    public func installFirmware(_ image: [UInt8], version: String) async -> Bool {
        guard !image.isEmpty else { return false }
        guard let begun = await request(.firmwareBegin, LinkMessages.firmwareBegin(size: image.count, version: version, crc: LinkFraming.crc32(image))),
              begun.type == .firmwareBeginReply, var offset = LinkMessages.decodeU32(begun.body).map(Int.init), offset <= image.count
        else { return false }
        if offset > 0 { logger.info("resuming the headband's firmware transfer", metadata: ["version": "\(version)", "offset": "\(offset)"]) }
        while offset < image.count {
            let chunk = image[offset..<min(image.count, offset + 512)]
            guard let reply = await request(.firmwareChunk, LinkMessages.firmwareChunk(offset: offset, data: chunk)),
                  reply.type == .firmwareChunkReply, let next = LinkMessages.decodeU32(reply.body).map(Int.init), next <= image.count
            else { return false }
            offset = next
        }
        guard let committed = await request(.firmwareCommit, [], extraWaitS: 10), committed.type == .firmwareCommitReply,
              let outcome = LinkMessages.decodeFirmwareCommitted(committed.body)
        else { return false }
        state.withLock { $0.info?.firmware = outcome.firmware }
        return outcome.ok
    }

    public func script(_ faults: [HeadbandFault]) {}

    // MARK: The link

    /// The device's description, connecting first when the link is down.
    private func linkInfo() async -> HeadbandInfo? {
        if let info = state.withLock({ $0.fd >= 0 ? $0.info : nil }) { return info }
        await connect()
        return state.withLock { $0.fd >= 0 ? $0.info : nil }
    }

    /// Opens the port and greets the device, at most once a second.
    private func connect() async {
        let now = ProcessInfo.processInfo.systemUptime
        let go = state.withLock { state -> Bool in
            guard state.fd < 0, now - state.lastAttempt >= 1 else { return false }
            state.lastAttempt = now
            return true
        }
        guard go else { return }
        switch SerialPort.open(path) {
        case .failure(let error):
            note(error: error.description)
            return
        case .success(let fd):
            state.withLock { state in
                state.fd = fd
                state.decoder = LinkFrameDecoder()
            }
        }
        guard let reply = await send(.hello, LinkMessages.hello(), extraWaitS: 0), reply.type == .helloReply,
              let info = LinkMessages.decodeInfo(reply.body)
        else {
            lose("the device did not answer hello with a valid description (another protocol, or not a headband)")
            return
        }
        state.withLock { state in
            state.info = info
            state.statistics.state = "up"
            state.statistics.lastError = nil
            state.statistics.model = info.model
            state.statistics.firmware = info.firmware
        }
        logger.notice(
            "headband connected",
            metadata: [
                "port": "\(path)", "model": "\(info.model)", "hardware": "\(info.hardware)", "firmware": "\(info.firmware)",
                "channels": "\(info.channels)", "watchdogMs": "\(info.watchdogMs)",
            ])
    }

    /// One request and its reply, or nil when the link is (or goes) down.
    private func request(_ type: LinkMessageType, _ body: [UInt8], extraWaitS: Double = 0) async -> LinkFrame? {
        guard await linkInfo() != nil else { return nil }
        return await send(type, body, extraWaitS: extraWaitS)
    }

    private func send(_ type: LinkMessageType, _ body: [UInt8], extraWaitS: Double) async -> LinkFrame? {
        await acquire()
        defer { release() }
        guard let (fd, seq) = state.withLock({ state -> (Int32, UInt16)? in
            guard state.fd >= 0 else { return nil }
            state.nextSeq &+= 1
            return (state.fd, state.nextSeq)
        }) else { return nil }
        let bytes = LinkFraming.encode(LinkFrame(type: type, seq: seq, body: body))
        for attempt in 0..<Self.attempts {
            if attempt > 0 { state.withLock { $0.statistics.retransmits += 1 } }
            let answer = await withCheckedContinuation { (continuation: CheckedContinuation<Answer, Never>) in
                let token = state.withLock { state -> Int in
                    state.nextToken += 1
                    state.waiters[seq] = (state.nextToken, continuation)
                    state.statistics.framesSent += 1
                    state.statistics.bytesSent += bytes.count
                    return state.nextToken
                }
                guard SerialPort.writeAll(fd, bytes) else {
                    resolve(seq, token: token, with: .none)
                    return
                }
                DispatchQueue.global().asyncAfter(deadline: .now() + replyTimeoutS + extraWaitS) { [weak self] in
                    self?.resolve(seq, token: token, with: .none)
                }
            }
            if case .reply(let reply) = answer { return reply }
            if state.withLock({ $0.fd != fd }) { return nil }  // lost while waiting
        }
        lose("no answer to \(type) after \(Self.attempts) tries (\(Int(replyTimeoutS * 1000)) ms each): the headband went silent")
        return nil
    }

    private func resolve(_ seq: UInt16, token: Int?, with answer: Answer) {
        let continuation = state.withLock { state -> CheckedContinuation<Answer, Never>? in
            guard let waiter = state.waiters[seq], token == nil || waiter.token == token else { return nil }
            state.waiters[seq] = nil
            return waiter.continuation
        }
        continuation?.resume(returning: answer)
    }

    private func acquire() async {
        let ready = state.withLock { state -> Bool in
            guard state.busy else {
                state.busy = true
                return true
            }
            return false
        }
        if ready { return }
        await withCheckedContinuation { continuation in
            let now = state.withLock { state -> Bool in
                if !state.busy {
                    state.busy = true
                    return true
                }
                state.queue.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.queue.isEmpty else {
                state.busy = false
                return nil
            }
            return state.queue.removeFirst()  // stays busy: handed over
        }
        next?.resume()
    }

    /// The link is lost: close it, fail what waits, say why once.
    private func lose(_ reason: String) {
        let (fd, waiters, wasUp) = state.withLock { state -> (Int32, [CheckedContinuation<Answer, Never>], Bool) in
            let fd = state.fd
            let wasUp = state.info != nil
            state.fd = -1
            state.info = nil
            state.status.connected = false
            state.statistics.state = "down"
            state.statistics.lastError = reason
            if wasUp { state.statistics.linkLosses += 1 }
            let waiting = state.waiters.values.map(\.continuation)
            state.waiters.removeAll()
            return (fd, waiting, wasUp)
        }
        if fd >= 0 { close(fd) }
        for waiter in waiters { waiter.resume(returning: .none) }
        if wasUp {
            logger.error("headband link lost; reconnecting", metadata: ["port": "\(path)", "reason": "\(reason)"])
        } else {
            note(error: reason)
        }
    }

    /// A failure to connect: logged when the reason changes, not at every retry.
    private func note(error: String) {
        let changed = state.withLock { state -> Bool in
            defer { state.statistics.lastError = error }
            return state.statistics.lastError != error
        }
        if changed { logger.warning("cannot reach the headband; retrying every second", metadata: ["port": "\(path)", "reason": "\(error)"]) }
    }

    private func refused(_ reply: LinkFrame, doing what: String) {
        if reply.type == .error, let (code, message) = LinkMessages.decodeError(reply.body) {
            if code == .watchdogStopped {
                lose("the headband's watchdog stopped output (it heard nothing from this gateway): \(message)")
            } else {
                logger.error("the headband refused \(what)", metadata: ["code": "\(code.map { "\($0)" } ?? "unknown")", "reason": "\(message)"])
            }
        } else {
            logger.error("the headband answered \(what) with a malformed \(reply.type)", metadata: ["port": "\(path)"])
        }
    }

    /// Reads whatever the device sends and hands each reply to its request.
    private func readLoop() {
        while true {
            let (fd, closing) = state.withLock { ($0.fd, $0.closing) }
            if closing { return }
            guard fd >= 0 else {
                usleep(50_000)
                continue
            }
            switch SerialPort.read(fd, timeoutMilliseconds: 100) {
            case .timeout:
                continue
            case .closed(let reason):
                if state.withLock({ $0.fd == fd }) { lose("the headband's port closed (\(reason)): unplugged, or the device reset") }
            case .bytes(let bytes):
                let (frames, damaged) = state.withLock { state -> ([LinkFrame], [UInt16]) in
                    guard state.fd == fd else { return ([], []) }
                    let before = state.decoder.corrupted + state.decoder.refused
                    let frames = state.decoder.feed(bytes)
                    let dropped = state.decoder.corrupted + state.decoder.refused - before
                    state.statistics.corrupted += dropped
                    state.statistics.framesReceived += frames.count
                    state.statistics.bytesReceived += bytes.count
                    // A damaged frame cannot say whose reply it was: whoever waits asks again
                    // now rather than at the timeout (the headband answers a repeat from its cache).
                    let answered = Set(frames.map(\.seq))
                    return (frames, dropped > 0 ? state.waiters.keys.filter { !answered.contains($0) } : [])
                }
                for frame in frames { resolve(frame.seq, token: nil, with: .reply(frame)) }
                for seq in damaged { resolve(seq, token: nil, with: .damaged) }
            }
        }
    }
}
