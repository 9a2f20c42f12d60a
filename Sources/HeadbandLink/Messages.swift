import Waveform

/// Little-endian writing of a frame body.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { bytes += [UInt8(value & 0xFF), UInt8(value >> 8)] }
    mutating func u32(_ value: UInt32) { for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8((value >> UInt32(shift)) & 0xFF)) } }
    mutating func f32(_ value: Double) { u32(Float(value).bitPattern) }
    mutating func f64(_ value: Double) {
        let bits = value.bitPattern
        for shift in stride(from: 0, to: 64, by: 8) { bytes.append(UInt8((bits >> UInt64(shift)) & 0xFF)) }
    }
    /// A string of at most 255 UTF-8 bytes (longer ones are cut).
    mutating func string(_ text: String) {
        let utf8 = Array(text.utf8.prefix(255))
        u8(UInt8(utf8.count))
        bytes += utf8
    }
}

/// Bounds-checked little-endian reading of a frame body: every read past the end is nil.
struct ByteReader {
    let bytes: [UInt8]
    var index = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }
    mutating func u8() -> UInt8? {
        guard index < bytes.count else { return nil }
        defer { index += 1 }
        return bytes[index]
    }
    mutating func u16() -> UInt16? {
        guard let low = u8(), let high = u8() else { return nil }
        return UInt16(low) | UInt16(high) << 8
    }
    mutating func u32() -> UInt32? {
        var value: UInt32 = 0
        for shift in stride(from: 0, to: 32, by: 8) {
            guard let byte = u8() else { return nil }
            value |= UInt32(byte) << UInt32(shift)
        }
        return value
    }
    mutating func f32() -> Double? { u32().map { Double(Float(bitPattern: $0)) } }
    mutating func f64() -> Double? {
        var bits: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 8) {
            guard let byte = u8() else { return nil }
            bits |= UInt64(byte) << UInt64(shift)
        }
        return Double(bitPattern: bits)
    }
    mutating func string() -> String? {
        guard let count = u8(), index + Int(count) <= bytes.count else { return nil }
        defer { index += Int(count) }
        return String(decoding: bytes[index..<(index + Int(count))], as: UTF8.self)
    }
    mutating func raw(_ count: Int) -> [UInt8]? {
        guard count >= 0, index + count <= bytes.count else { return nil }
        defer { index += count }
        return Array(bytes[index..<(index + count)])
    }
}

/// What the headband says about itself in its `hello` reply.
public struct HeadbandInfo: Sendable, Hashable {
    public var protocolVersion: UInt8
    public var model: String
    public var hardware: String
    public var firmware: String
    public var channels: Int
    /// The device's own peak current limit, microamps (it refuses segments above it).
    public var maxMicroAmps: Int
    /// Most pulse pairs one segment may hold.
    public var maxPairsPerSegment: Int
    /// The device stops output when the gateway has been silent this long, milliseconds.
    public var watchdogMs: Int
    /// Segments the device can hold ahead (the gateway never has more unanswered).
    public var bufferSegments: Int

    public init(
        protocolVersion: UInt8 = LinkFraming.version, model: String, hardware: String, firmware: String, channels: Int,
        maxMicroAmps: Int, maxPairsPerSegment: Int, watchdogMs: Int, bufferSegments: Int
    ) {
        self.protocolVersion = protocolVersion
        self.model = model
        self.hardware = hardware
        self.firmware = firmware
        self.channels = channels
        self.maxMicroAmps = maxMicroAmps
        self.maxPairsPerSegment = maxPairsPerSegment
        self.watchdogMs = watchdogMs
        self.bufferSegments = bufferSegments
    }
}

/// Error codes of an `error` reply.
public enum LinkErrorCode: UInt8, Sendable {
    case badRequest = 1, unsupported = 2, watchdogStopped = 3, busy = 4, outOfRange = 5, firmwareRejected = 6, noSession = 7
}

/// The bodies of every message, encoded and decoded. Decoding returns nil for a body that is
/// short, long, or holds a value outside its range; it never traps.
public enum LinkMessages {
    // MARK: hello

    public static func hello() -> [UInt8] { [LinkFraming.version] }

    public static func encode(_ info: HeadbandInfo) -> [UInt8] {
        var writer = ByteWriter()
        writer.u8(info.protocolVersion)
        writer.string(info.model)
        writer.string(info.hardware)
        writer.string(info.firmware)
        writer.u8(UInt8(clamping: info.channels))
        writer.u16(UInt16(clamping: info.maxMicroAmps))
        writer.u16(UInt16(clamping: info.maxPairsPerSegment))
        writer.u16(UInt16(clamping: info.watchdogMs))
        writer.u8(UInt8(clamping: info.bufferSegments))
        return writer.bytes
    }

    public static func decodeInfo(_ body: [UInt8]) -> HeadbandInfo? {
        var reader = ByteReader(body)
        guard let version = reader.u8(), let model = reader.string(), let hardware = reader.string(), let firmware = reader.string(),
              let channels = reader.u8(), let maxMicroAmps = reader.u16(), let maxPairs = reader.u16(), let watchdog = reader.u16(),
              let buffer = reader.u8(), reader.atEnd, (1...16).contains(channels), (1...HardLimits.maxPeakMicroAmps).contains(Double(maxMicroAmps)),
              maxPairs >= 1, (100...10_000).contains(watchdog), buffer >= 1
        else { return nil }
        return HeadbandInfo(
            protocolVersion: version, model: model, hardware: hardware, firmware: firmware, channels: Int(channels),
            maxMicroAmps: Int(maxMicroAmps), maxPairsPerSegment: Int(maxPairs), watchdogMs: Int(watchdog), bufferSegments: Int(buffer))
    }

    // MARK: segment

    public static func encode(_ segment: Segment) -> [UInt8] {
        var writer = ByteWriter()
        writer.u8(UInt8(clamping: segment.channelIndex))
        writer.u16(UInt16(clamping: segment.pairs))
        writer.f32(segment.frequencyHz)
        writer.f32(segment.phaseWidthMicros)
        writer.f32(segment.startMicroAmps)
        writer.f32(segment.stepMicroAmps)
        writer.u8(segment.leadingPositive ? 1 : 0)
        writer.f32(segment.vibrationRpm)
        writer.u8(UInt8(clamping: segment.level))
        return writer.bytes
    }

    /// A segment as the device reads it: every value finite and within the hard limits.
    public static func decodeSegment(_ body: [UInt8], channels: Int) -> Segment? {
        var reader = ByteReader(body)
        guard let channel = reader.u8(), let pairs = reader.u16(), let frequency = reader.f32(), let phase = reader.f32(),
              let start = reader.f32(), let step = reader.f32(), let flags = reader.u8(), let rpm = reader.f32(), let level = reader.u8(),
              reader.atEnd, Int(channel) < channels, pairs >= 1, flags <= 1, (1...3).contains(level),
              [frequency, phase, start, step, rpm].allSatisfy(\.isFinite), frequency > 0, frequency <= 1000, phase > 0,
              phase * 2 <= 1_000_000 / frequency, start >= 0, rpm >= 0, rpm <= 20_000,
              (start + step * Double(pairs - 1)) >= 0
        else { return nil }
        return Segment(
            channelIndex: Int(channel), channelID: "ch\(channel)", startS: 0, pairs: Int(pairs), frequencyHz: frequency,
            phaseWidthMicros: phase, startMicroAmps: start, stepMicroAmps: step, leadingPositive: flags == 1, vibrationRpm: rpm,
            level: Int(level))
    }

    /// One pulse record: 30 bytes.
    public static func encode(reports: [PulseReport]) -> [UInt8] {
        var writer = ByteWriter()
        writer.u16(UInt16(clamping: reports.count))
        for report in reports {
            writer.u8(UInt8(clamping: report.channelIndex))
            writer.f64(report.timeS)
            writer.f32(report.firstPhaseMicroAmps)
            writer.f32(report.secondPhaseMicroAmps)
            writer.f32(report.phaseS)
            writer.f32(report.periodS)
            writer.f32(report.peakVolts)
            writer.f32(report.impedanceOhms)
            writer.u8(report.atCompliance ? 1 : 0)
        }
        return writer.bytes
    }

    /// A segment's reply: the pulses delivered, then the status after them (for the channel of
    /// the segment), so a session needs one exchange per segment.
    public static func segmentReply(reports: [PulseReport], status: HeadbandStatus, stimulatedS: Double) -> [UInt8] {
        encode(reports: reports) + encode(status, stimulatedS: stimulatedS)
    }

    public static func decodeSegmentReply(
        _ body: [UInt8], channels: Int, maxPairs: Int
    ) -> (reports: [PulseReport], status: HeadbandStatus, stimulatedS: Double)? {
        var reader = ByteReader(body)
        guard let reports = decodeReports(&reader, channels: channels, maxPairs: maxPairs),
              let status = decodeStatus(Array(body[reader.index...]))
        else { return nil }
        return (reports, status.status, status.stimulatedS)
    }

    /// The pulses a device reports. Values may be NaN (a failed measurement, which the safety
    /// monitor trips on); counts and channels are checked.
    public static func decodeReports(_ body: [UInt8], channels: Int, maxPairs: Int) -> [PulseReport]? {
        var reader = ByteReader(body)
        guard let reports = decodeReports(&reader, channels: channels, maxPairs: maxPairs), reader.atEnd else { return nil }
        return reports
    }

    static func decodeReports(_ reader: inout ByteReader, channels: Int, maxPairs: Int) -> [PulseReport]? {
        guard let count = reader.u16(), Int(count) <= maxPairs else { return nil }
        var reports: [PulseReport] = []
        reports.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let channel = reader.u8(), Int(channel) < channels, let time = reader.f64(), let first = reader.f32(),
                  let second = reader.f32(), let phase = reader.f32(), let period = reader.f32(), let volts = reader.f32(),
                  let impedance = reader.f32(), let limited = reader.u8(), limited <= 1
            else { return nil }
            reports.append(PulseReport(
                channelIndex: Int(channel), timeS: time, firstPhaseMicroAmps: first, secondPhaseMicroAmps: second, phaseS: phase,
                periodS: period, peakVolts: volts, impedanceOhms: impedance, atCompliance: limited == 1))
        }
        return reports
    }

    // MARK: status

    public static func encode(_ status: HeadbandStatus, stimulatedS: Double) -> [UInt8] {
        var writer = ByteWriter()
        writer.f64(status.timeS)
        writer.f32(status.batteryPct)
        writer.f32(status.vibrationRpm)
        writer.f32(status.temperatureC)
        writer.f32(status.contactImpedanceOhms)
        writer.f32(stimulatedS)
        writer.u8(UInt8(clamping: status.buttons.count))
        for button in status.buttons.prefix(255) { writer.u8(button == .short ? 1 : 2) }
        writer.string(status.firmware)
        return writer.bytes
    }

    public static func decodeStatus(_ body: [UInt8]) -> (status: HeadbandStatus, stimulatedS: Double)? {
        var reader = ByteReader(body)
        guard let time = reader.f64(), let battery = reader.f32(), let rpm = reader.f32(), let temperature = reader.f32(),
              let contact = reader.f32(), let stimulated = reader.f32(), let count = reader.u8() else { return nil }
        var buttons: [ButtonPress] = []
        for _ in 0..<count {
            guard let code = reader.u8(), code == 1 || code == 2 else { return nil }
            buttons.append(code == 1 ? .short : .long)
        }
        guard let firmware = reader.string(), reader.atEnd, time.isFinite, stimulated.isFinite else { return nil }
        return (HeadbandStatus(
            timeS: time, batteryPct: battery, vibrationRpm: rpm, temperatureC: temperature, contactImpedanceOhms: contact,
            buttons: buttons, connected: true, firmware: firmware), stimulated)
    }

    // MARK: error

    public static func error(_ code: LinkErrorCode, _ message: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.u8(code.rawValue)
        writer.string(message)
        return writer.bytes
    }

    public static func decodeError(_ body: [UInt8]) -> (code: LinkErrorCode?, message: String)? {
        var reader = ByteReader(body)
        guard let code = reader.u8(), let message = reader.string() else { return nil }
        return (LinkErrorCode(rawValue: code), message)
    }

    // MARK: simple values

    public static func encode(f32 value: Double) -> [UInt8] {
        var writer = ByteWriter()
        writer.f32(value)
        return writer.bytes
    }

    public static func decodeF32(_ body: [UInt8]) -> Double? {
        var reader = ByteReader(body)
        guard let value = reader.f32(), reader.atEnd, value.isFinite else { return nil }
        return value
    }

    public static func encode(u32 value: UInt32) -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(value)
        return writer.bytes
    }

    public static func decodeU32(_ body: [UInt8]) -> UInt32? {
        var reader = ByteReader(body)
        guard let value = reader.u32(), reader.atEnd else { return nil }
        return value
    }

    // MARK: firmware

    /// The image's size, version and CRC-32 (transfer integrity: the gateway has checked the
    /// signed manifest's SHA-256 before it starts).
    public static func firmwareBegin(size: Int, version: String, crc: UInt32) -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(UInt32(clamping: size))
        writer.string(version)
        writer.u32(crc)
        return writer.bytes
    }

    public static func decodeFirmwareBegin(_ body: [UInt8]) -> (size: Int, version: String, crc: UInt32)? {
        var reader = ByteReader(body)
        guard let size = reader.u32(), size > 0, size <= 16 << 20, let version = reader.string(), !version.isEmpty,
              let crc = reader.u32(), reader.atEnd
        else { return nil }
        return (Int(size), version, crc)
    }

    public static func firmwareChunk(offset: Int, data: ArraySlice<UInt8>) -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(UInt32(clamping: offset))
        writer.u16(UInt16(clamping: data.count))
        writer.bytes += data
        writer.u32(LinkFraming.crc32(data))
        return writer.bytes
    }

    public static func decodeFirmwareChunk(_ body: [UInt8]) -> (offset: Int, data: [UInt8])? {
        var reader = ByteReader(body)
        guard let offset = reader.u32(), let count = reader.u16(), count <= 1024, let data = reader.raw(Int(count)), let crc = reader.u32(),
              reader.atEnd, LinkFraming.crc32(data) == crc
        else { return nil }
        return (Int(offset), data)
    }

    public static func firmwareCommitted(ok: Bool, firmware: String) -> [UInt8] {
        var writer = ByteWriter()
        writer.u8(ok ? 1 : 0)
        writer.string(firmware)
        return writer.bytes
    }

    public static func decodeFirmwareCommitted(_ body: [UInt8]) -> (ok: Bool, firmware: String)? {
        var reader = ByteReader(body)
        guard let ok = reader.u8(), ok <= 1, let firmware = reader.string(), reader.atEnd else { return nil }
        return (ok == 1, firmware)
    }
}
