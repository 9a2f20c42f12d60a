/// The body of a config document. Every key is optional: a layer sets what it names and
/// leaves the rest to the layer below (fleet < group < gateway).
///
/// Decoding checks shapes and ranges; the engine's hard limits (peak current, frequency,
/// session length) are checked by the waveform engine before anything is applied.
public struct ConfigBody: Sendable, Equatable, Codable {
    /// When higher levels unlock, in completed sessions.
    public struct LevelUnlock: Sendable, Equatable, Codable {
        public var level2AfterSessions: Int
        public var level3AfterSessions: Int

        public init(level2AfterSessions: Int, level3AfterSessions: Int) {
            self.level2AfterSessions = level2AfterSessions
            self.level3AfterSessions = level3AfterSessions
        }
    }

    /// One row of a level table, as in the calibration profile.
    public struct LevelEntry: Sendable, Equatable, Codable {
        public var level: Int
        public var peakMicroAmps: Double
        public var frequencyHz: Double?
        public var phaseWidthMicros: Double?
        public var rampUpS: Double?
        public var rampDownS: Double?
        public var dwellS: Double?

        public init(
            level: Int, peakMicroAmps: Double, frequencyHz: Double? = nil, phaseWidthMicros: Double? = nil,
            rampUpS: Double? = nil, rampDownS: Double? = nil, dwellS: Double? = nil
        ) {
            self.level = level
            self.peakMicroAmps = peakMicroAmps
            self.frequencyHz = frequencyHz
            self.phaseWidthMicros = phaseWidthMicros
            self.rampUpS = rampUpS
            self.rampDownS = rampDownS
            self.dwellS = dwellS
        }
    }

    /// Headband firmware settings.
    public struct Headband: Sendable, Equatable, Codable {
        /// The headband's own session watchdog, seconds (never above 900).
        public var sessionWatchdogS: Double?

        public init(sessionWatchdogS: Double? = nil) { self.sessionWatchdogS = sessionWatchdogS }
    }

    /// The highest level a wearer may use (1-3).
    public var maxLevel: Int?
    public var levelUnlock: LevelUnlock?
    /// Telemetry interval during a session, seconds.
    public var telemetryIntervalS: Double?
    /// Telemetry interval when idle, seconds.
    public var idleTelemetryIntervalS: Double?
    /// Level table overrides.
    public var levels: [LevelEntry]?
    public var headband: Headband?

    public init(
        maxLevel: Int? = nil, levelUnlock: LevelUnlock? = nil, telemetryIntervalS: Double? = nil,
        idleTelemetryIntervalS: Double? = nil, levels: [LevelEntry]? = nil, headband: Headband? = nil
    ) {
        self.maxLevel = maxLevel
        self.levelUnlock = levelUnlock
        self.telemetryIntervalS = telemetryIntervalS
        self.idleTelemetryIntervalS = idleTelemetryIntervalS
        self.levels = levels
        self.headband = headband
    }

    enum CodingKeys: String, CodingKey {
        case maxLevel, levelUnlock, telemetryIntervalS, idleTelemetryIntervalS, levels, headband
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        maxLevel = try c.contains(.maxLevel) ? c.decodeLevel(forKey: .maxLevel) : nil
        levelUnlock = try c.decodeIfPresent(LevelUnlock.self, forKey: .levelUnlock)
        if let unlock = levelUnlock, unlock.level2AfterSessions < 0 || unlock.level3AfterSessions < unlock.level2AfterSessions {
            throw ProtocolError(
                .invalidValue, path: "body.levelUnlock",
                "level3AfterSessions must be >= level2AfterSessions >= 0")
        }
        telemetryIntervalS = try c.decodeInterval(forKey: .telemetryIntervalS)
        idleTelemetryIntervalS = try c.decodeInterval(forKey: .idleTelemetryIntervalS)
        levels = try c.decodeIfPresent([LevelEntry].self, forKey: .levels)
        if let levels {
            for (index, entry) in levels.enumerated() where !(1...3).contains(entry.level) {
                throw ProtocolError(
                    .invalidValue, path: "body.levels[\(index)].level", "level \(entry.level) is not 1, 2 or 3")
            }
        }
        headband = try c.decodeIfPresent(Headband.self, forKey: .headband)
    }
}

/// The body of a firmware document: where the headband image is and how to check it.
public struct FirmwareManifest: Sendable, Equatable, Codable {
    public var version: String
    /// HTTP(S) address of the image.
    public var url: String
    /// Lower-case hex SHA-256 of the image.
    public var sha256: String
    public var sizeBytes: Int
    /// The headband hardware revision the image is for.
    public var hardware: String
    /// A signed downgrade: the image may be older than (or the same as) the one installed.
    /// Without it, a manifest for a version not newer than the installed one is refused.
    public var allowDowngrade: Bool

    public init(version: String, url: String, sha256: String, sizeBytes: Int, hardware: String, allowDowngrade: Bool = false) {
        self.allowDowngrade = allowDowngrade
        self.version = version
        self.url = url
        self.sha256 = sha256
        self.sizeBytes = sizeBytes
        self.hardware = hardware
    }

    enum CodingKeys: String, CodingKey { case version, url, sha256, sizeBytes, hardware, allowDowngrade }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(version, forKey: .version)
        try c.encode(url, forKey: .url)
        try c.encode(sha256, forKey: .sha256)
        try c.encode(sizeBytes, forKey: .sizeBytes)
        try c.encode(hardware, forKey: .hardware)
        if allowDowngrade { try c.encode(true, forKey: .allowDowngrade) }
    }

    /// Whether firmware version `a` is older than `b`: dot-separated parts compared as numbers
    /// where both are numbers (`2.10.0` > `2.9.1`), as text otherwise.
    public static func isOlder(_ a: String, than b: String) -> Bool {
        let left = a.split(separator: ".", omittingEmptySubsequences: false)
        let right = b.split(separator: ".", omittingEmptySubsequences: false)
        for index in 0..<max(left.count, right.count) {
            let x = index < left.count ? left[index] : "0"
            let y = index < right.count ? right[index] : "0"
            if x == y { continue }
            if let m = UInt64(x), let n = UInt64(y) { return m < n }
            return x < y
        }
        return false
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(String.self, forKey: .version)
        guard !version.isEmpty, version.utf8.count <= 64 else {
            throw ProtocolError(.invalidValue, path: "body.version", "firmware version must be 1-64 characters")
        }
        url = try c.decode(String.self, forKey: .url)
        guard url.hasPrefix("http://") || url.hasPrefix("https://"), url.utf8.count <= 2048 else {
            throw ProtocolError(.invalidValue, path: "body.url", "firmware url must be http:// or https://")
        }
        sha256 = try c.decode(String.self, forKey: .sha256)
        guard sha256.utf8.count == 64, sha256.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else {
            throw ProtocolError(.invalidValue, path: "body.sha256", "sha256 must be 64 lower-case hex digits")
        }
        sizeBytes = try c.decode(Int.self, forKey: .sizeBytes)
        guard sizeBytes > 0 else {
            throw ProtocolError(.invalidValue, path: "body.sizeBytes", "sizeBytes must be positive")
        }
        hardware = try c.decode(String.self, forKey: .hardware)
        allowDowngrade = try c.decodeIfPresent(Bool.self, forKey: .allowDowngrade) ?? false
    }
}

extension KeyedDecodingContainer {
    func decodeInterval(forKey key: Key) throws -> Double? {
        guard let value = try decodeIfPresent(Double.self, forKey: key) else { return nil }
        guard value.isFinite, value > 0, value <= 86_400 else {
            throw ProtocolError(
                .invalidValue, path: (codingPath + [key]).dottedPath, "interval \(value) s must be in (0, 86400]")
        }
        return value
    }
}
