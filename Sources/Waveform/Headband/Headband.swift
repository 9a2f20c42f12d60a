/// Everything the session engine, its safety monitor and the agent need from a headband: the
/// in-process ``SimulatedHeadband``, or a real device over its link (`LinkedHeadband`).
///
/// Calls are made by one owner at a time (a session runner, or the agent between sessions);
/// a headband whose link is down answers at once: no reports, `connected == false`.
public protocol Headband: Sendable {
    /// What the headband says about itself; nil while it is not connected.
    var capabilities: HeadbandCapabilities? { get }
    /// The headband's clock, seconds.
    var timeS: Double { get }
    var batteryPct: Double { get }
    var vibrationRpm: Double { get }
    /// Stimulation delivered since the session began, seconds.
    var stimulatedS: Double { get }
    var firmware: String { get }
    /// Whether the link to the headband is up.
    var connected: Bool { get }
    /// The device-side session watchdog (rule 6): no pulse past this much stimulation.
    var watchdogS: Double { get set }

    /// Starts a session: the watchdog count restarts (and, on a device, its link watchdog arms).
    mutating func beginSession() async
    /// Ends the session on the device (output off, its link watchdog disarmed).
    mutating func endSession() async
    /// Executes a segment and reports each pulse pair delivered; fewer than `segment.pairs`
    /// when the watchdog or a lost link cut it short.
    mutating func execute(_ segment: Segment) async -> [PulseReport]
    /// Lets `seconds` pass without stimulation.
    mutating func idle(_ seconds: Double) async
    /// The status now (button presses are reported once).
    mutating func status(channel: Int) async -> HeadbandStatus
    /// Installs a firmware image; whether the new version runs (false: rolled back or not sent).
    mutating func installFirmware(_ image: [UInt8], version: String) async -> Bool
    /// Adds scripted faults (the simulated headband; a real device ignores them).
    mutating func script(_ faults: [HeadbandFault])
}

/// A headband's identity and capabilities, as it reports them.
public struct HeadbandCapabilities: Sendable, Hashable {
    public var model: String
    public var hardware: String
    public var firmware: String
    /// Electrode channels it can drive.
    public var channels: Int
    /// Its own peak current limit, microamps (at most rule 1's 1000).
    public var maxMicroAmps: Double
    /// How long it waits for the gateway before it stops output (a linked headband), ms.
    public var linkWatchdogMs: Int?

    public init(model: String, hardware: String, firmware: String, channels: Int, maxMicroAmps: Double, linkWatchdogMs: Int? = nil) {
        self.model = model
        self.hardware = hardware
        self.firmware = firmware
        self.channels = channels
        self.maxMicroAmps = maxMicroAmps
        self.linkWatchdogMs = linkWatchdogMs
    }
}

extension SimulatedHeadband: Headband {
    /// Nothing to disarm: the simulated headband has no link.
    public mutating func endSession() {}
}
