import Waveform

/// The headband's side of the link, over the simulated headband's physics: what the emulator
/// runs, and what a firmware team implements (docs/headband-protocol.md).
///
/// - Each request is answered once; a retransmission (the same seq and type as the last
///   request) gets the same reply again without acting twice.
/// - The device watchdog: once a session has begun, a gateway silent for ``watchdogMs`` stops
///   output; segments are then refused (`watchdogStopped`) until the next `beginSession`.
/// - The device's own limits: a segment above ``info``'s `maxMicroAmps`, with more pairs than
///   it takes, or with a value out of range is refused (`outOfRange`), never executed.
public struct HeadbandDevice: Sendable {
    public private(set) var band: SimulatedHeadband
    public private(set) var info: HeadbandInfo
    /// When the last frame from the gateway arrived, seconds (the caller's clock).
    private var lastHeardAt: Double?
    private var sessionActive = false
    public private(set) var watchdogStopped = false
    private var lastRequest: (seq: UInt16, type: LinkMessageType)?
    private var lastReply: [LinkFrame] = []
    /// Stimulation seconds of a session after which the device stops answering (a fault to test
    /// the gateway's silence detection); nil: never.
    public var silentAfterStimulatedS: Double?
    private var firmwareImage: [UInt8] = []
    private var firmwareTarget: (size: Int, version: String, crc: UInt32)?

    public init(band: SimulatedHeadband, channels: Int, watchdogMs: Int = 1000) {
        self.band = band
        info = HeadbandInfo(
            model: "Spectra Sculpt (emulated)", hardware: "sculpt-hb-rev3", firmware: band.firmware, channels: channels,
            maxMicroAmps: Int(HardLimits.maxPeakMicroAmps), maxPairsPerSegment: 64, watchdogMs: watchdogMs, bufferSegments: 4)
    }

    /// Whether the device answers at all now (see ``silentAfterStimulatedS``).
    public var answering: Bool {
        guard let limit = silentAfterStimulatedS, sessionActive else { return true }
        return band.stimulatedS < limit
    }

    /// Checks the watchdog at `now`; returns a line to log when it has just stopped output.
    public mutating func tick(now: Double) -> String? {
        guard sessionActive, !watchdogStopped, let lastHeardAt, (now - lastHeardAt) * 1000 > Double(info.watchdogMs) else { return nil }
        watchdogStopped = true
        sessionActive = false
        return "watchdog: nothing from the gateway for \(Int((now - lastHeardAt) * 1000)) ms (limit \(info.watchdogMs) ms); output stopped"
    }

    /// Answers one request received at `now`.
    public mutating func handle(_ frame: LinkFrame, now: Double) -> [LinkFrame] {
        guard answering else { return [] }
        lastHeardAt = now
        if let last = lastRequest, last.seq == frame.seq, last.type == frame.type { return lastReply }
        let reply = answer(frame)
        lastRequest = (frame.seq, frame.type)
        lastReply = reply
        return reply
    }

    private mutating func answer(_ frame: LinkFrame) -> [LinkFrame] {
        func reply(_ body: [UInt8] = []) -> [LinkFrame] {
            guard let type = frame.type.reply else { return error(.badRequest, "not a request") }
            return [LinkFrame(type: type, seq: frame.seq, body: body)]
        }
        func error(_ code: LinkErrorCode, _ message: String) -> [LinkFrame] {
            [LinkFrame(type: .error, seq: frame.seq, body: LinkMessages.error(code, message))]
        }
        switch frame.type {
        case .hello:
            guard frame.body.first == LinkFraming.version else { return error(.unsupported, "protocol version \(LinkFraming.version) only") }
            info.firmware = band.firmware
            return reply(LinkMessages.encode(info))
        case .beginSession:
            guard let watchdog = LinkMessages.decodeF32(frame.body), watchdog > 0 else { return error(.badRequest, "a session watchdog in seconds") }
            band.watchdogS = min(watchdog, HardLimits.maxSessionSeconds)
            band.beginSession()
            sessionActive = true
            watchdogStopped = false
            return reply()
        case .segment:
            if watchdogStopped { return error(.watchdogStopped, "output was stopped by the watchdog; begin a new session") }
            guard sessionActive else { return error(.noSession, "no session has begun") }
            guard let segment = LinkMessages.decodeSegment(frame.body, channels: info.channels),
                  segment.pairs <= info.maxPairsPerSegment, segment.peakMicroAmps <= Double(info.maxMicroAmps)
            else { return error(.outOfRange, "the segment is malformed or past this device's limits") }
            let reports = band.execute(segment)
            return reply(LinkMessages.segmentReply(
                reports: reports, status: band.status(channel: segment.channelIndex), stimulatedS: band.stimulatedS))
        case .idle:
            guard let seconds = LinkMessages.decodeF32(frame.body), seconds >= 0, seconds <= 60 else { return error(.badRequest, "idle 0-60 s") }
            band.idle(seconds)
            return reply()
        case .status:
            guard let channel = frame.body.first, Int(channel) < info.channels, frame.body.count == 1 else { return error(.badRequest, "a channel index") }
            let status = band.status(channel: Int(channel))
            return reply(LinkMessages.encode(status, stimulatedS: band.stimulatedS))
        case .firmwareBegin:
            guard !sessionActive else { return error(.busy, "a session runs") }
            guard let target = LinkMessages.decodeFirmwareBegin(frame.body) else { return error(.badRequest, "size, version, crc") }
            if let current = firmwareTarget, current == target {
                return reply(LinkMessages.encode(u32: UInt32(firmwareImage.count)))  // resume
            }
            firmwareTarget = target
            firmwareImage = []
            return reply(LinkMessages.encode(u32: 0))
        case .firmwareChunk:
            guard let target = firmwareTarget else { return error(.badRequest, "no transfer has begun") }
            guard let chunk = LinkMessages.decodeFirmwareChunk(frame.body) else { return error(.badRequest, "a damaged chunk") }
            if chunk.offset == firmwareImage.count && firmwareImage.count + chunk.data.count <= target.size {
                firmwareImage += chunk.data
            }
            return reply(LinkMessages.encode(u32: UInt32(firmwareImage.count)))
        case .firmwareCommit:
            guard let target = firmwareTarget, firmwareImage.count == target.size else { return error(.badRequest, "the image is incomplete") }
            defer {
                firmwareTarget = nil
                firmwareImage = []
            }
            guard LinkFraming.crc32(firmwareImage) == target.crc else { return error(.firmwareRejected, "the image's CRC does not match") }
            let ok = band.installFirmware(firmwareImage, version: target.version)
            info.firmware = band.firmware
            return reply(LinkMessages.firmwareCommitted(ok: ok, firmware: band.firmware))
        case .endSession:
            sessionActive = false
            return reply()
        case .helloReply, .beginSessionReply, .segmentReply, .idleReply, .statusReply, .firmwareBeginReply, .firmwareChunkReply,
             .firmwareCommitReply, .endSessionReply, .error:
            return error(.badRequest, "a reply is not a request")
        }
    }

    /// Adds faults to the simulated headband's script.
    public mutating func script(_ faults: [HeadbandFault]) { band.script(faults) }
}
