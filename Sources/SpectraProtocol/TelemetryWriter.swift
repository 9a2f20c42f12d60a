import Foundation

/// Writes a telemetry envelope's wire JSON straight into bytes: the same bytes
/// ``WireFormat/encode(_:)`` gives (sorted keys, no escaped slashes, integral numbers without
/// `.0`), at a fraction of `JSONEncoder`'s cost. Every gateway sends one every second in a
/// session, and a fleet simulator sends thousands.
///
/// It handles what telemetry normally holds and gives up (nil) at anything else: a string
/// that needs escaping, a reading that is not a finite number. The caller then uses
/// `JSONEncoder`, so the output is the same either way; the tests hold the two byte for byte.
struct TelemetryWriter {
    private var out: [UInt8] = []

    static func write(_ envelope: Envelope, _ telemetry: Telemetry) -> [UInt8]? {
        var writer = TelemetryWriter()
        writer.out.reserveCapacity(256 + telemetry.channels.count * 160)
        guard writer.envelope(envelope, telemetry) else { return nil }
        return writer.out
    }

    // Keys in the order `.sortedKeys` writes them (byte order).
    private mutating func envelope(_ envelope: Envelope, _ body: Telemetry) -> Bool {
        raw("{\"body\":")
        guard telemetry(body) else { return false }
        raw(",\"boot\":\"")
        raw(envelope.boot.wireString)
        raw("\",\"epoch\":\"")
        raw(envelope.epoch.wireString)
        raw("\",\"fleet\":")
        guard string(envelope.fleet.rawValue) else { return false }
        raw(",\"gw\":")
        guard string(envelope.gateway.rawValue) else { return false }
        raw(",\"kind\":\"telemetry\",\"mono\":")
        integer(envelope.monoNanos)
        raw(",\"seq\":")
        integer(envelope.seq)
        raw(",\"synced\":")
        raw(envelope.synced ? "true" : "false")
        raw(",\"ts\":\"")
        raw(Timestamp.format(envelope.timestamp))
        raw("\",\"v\":")
        integer(Envelope.currentVersion)
        raw("}")
        return true
    }

    private mutating func telemetry(_ body: Telemetry) -> Bool {
        let agent = body.agent
        raw("{\"agent\":{\"oldestUnackedS\":")
        guard number(agent.oldestUnackedS) else { return false }
        raw(",\"outboxBytes\":")
        integer(agent.outboxBytes)
        raw(",\"outboxDepth\":")
        integer(agent.outboxDepth)
        if let refused = agent.outboxRefused {
            raw(",\"outboxRefused\":")
            integer(refused)
        }
        raw(",\"reconnects\":")
        integer(agent.reconnects)
        raw(",\"rssKiB\":")
        integer(agent.rssKiB)
        raw("},\"batteryPct\":")
        guard number(body.batteryPct) else { return false }
        raw(",\"channels\":[")
        for (index, channel) in body.channels.enumerated() {
            if index > 0 { raw(",") }
            raw("{\"complianceVolts\":")
            guard number(channel.complianceVolts) else { return false }
            raw(",\"contact\":")
            raw(channel.contact ? "true" : "false")
            raw(",\"id\":")
            guard string(channel.id) else { return false }
            raw(",\"impedanceOhms\":")
            guard number(channel.impedanceOhms) else { return false }
            raw(",\"peakMicroAmps\":")
            guard number(channel.peakMicroAmps) else { return false }
            raw(",\"rmsMicroAmps\":")
            guard number(channel.rmsMicroAmps) else { return false }
            raw("}")
        }
        raw("]")
        if let elapsed = body.elapsedS {
            raw(",\"elapsedS\":")
            guard number(elapsed) else { return false }
        }
        raw(",\"headbandTempC\":")
        guard number(body.headbandTempC) else { return false }
        if let level = body.level {
            raw(",\"level\":")
            integer(level)
        }
        if let session = body.sessionId {
            raw(",\"sessionId\":")
            guard string(session.rawValue) else { return false }
        }
        if let rpm = body.vibrationRpm {
            raw(",\"vibrationRpm\":")
            guard number(rpm) else { return false }
        }
        raw("}")
        return true
    }

    // MARK: Values

    private mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { out.append(contentsOf: $0) }
    }

    private mutating func raw(_ text: String) {
        out.append(contentsOf: text.utf8)
    }

    /// A string that needs no escaping; false for one that does.
    private mutating func string(_ text: String) -> Bool {
        for byte in text.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            return false
        }
        out.append(UInt8(ascii: "\""))
        out.append(contentsOf: text.utf8)
        out.append(UInt8(ascii: "\""))
        return true
    }

    private mutating func integer(_ value: some BinaryInteger) {
        out.append(contentsOf: String(value).utf8)
    }

    /// A finite number as `JSONEncoder` writes it: Swift's shortest round-trip form, without a
    /// trailing `.0`. False for NaN and infinities (the encoder writes those as strings).
    private mutating func number(_ value: Double) -> Bool {
        guard value.isFinite else { return false }
        var text = value.description
        if text.hasSuffix(".0") { text.removeLast(2) }
        out.append(contentsOf: text.utf8)
        return true
    }
}
