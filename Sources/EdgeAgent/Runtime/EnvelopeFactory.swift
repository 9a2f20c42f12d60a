import CSpectraSystem
import Foundation
import SpectraProtocol

#if canImport(Glibc)
import Glibc
#endif

/// Stamps messages with the gateway's identity and clocks: `boot` per agent start, `mono`
/// nanoseconds since then, the wall clock and whether NTP had it synchronised.
public struct EnvelopeFactory: Sendable {
    public let fleet: Identifier
    public let gateway: Identifier
    public let boot: UUID
    private let bootMono: UInt64
    /// Whether the wall clock counts as synchronised.
    public var clock: ClockTrust = .auto

    public init(fleet: Identifier, gateway: Identifier, boot: UUID = UUID()) {
        self.fleet = fleet
        self.gateway = gateway
        self.boot = boot
        self.bootMono = Self.monotonicNanos()
    }

    /// An envelope for `message` with the outbox's `seq` and `epoch`.
    /// - Parameter synced: whether the wall clock is trusted (default: asks the system).
    public func envelope(_ message: Message, seq: UInt64, epoch: UUID, now: Date = Date(), synced: Bool? = nil) -> Envelope {
        Envelope(
            fleet: fleet, gateway: gateway, epoch: epoch, seq: seq, boot: boot, monoNanos: Self.monotonicNanos() &- bootMono,
            timestamp: now, synced: synced ?? clock.isSynchronised, message: message)
    }

    static func monotonicNanos() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// Whether the wall clock is known to be synchronised: the kernel's NTP status says so
    /// (whatever keeps it: chrony, ntpd, systemd-timesyncd), or systemd-timesyncd marked it with
    /// `/run/systemd/timesync/synchronized`; false when unknown, so consumers never trust it blindly.
    public static func clockSynchronised() -> Bool {
        if spectra_clock_synchronised() != 0 { return true }
        return FileManager.default.fileExists(atPath: "/run/systemd/timesync/synchronized")
    }
}

/// Whether a gateway's wall clock counts as synchronised (`clock.synced`).
public enum ClockTrust: String, Sendable, CaseIterable {
    /// Ask the system (the kernel's NTP status, or systemd-timesyncd's mark).
    case auto
    /// Always: for a clock kept right by other means (GPS, a disciplined RTC) the system
    /// cannot see.
    case always
    /// Never: the clock is not to be trusted.
    case never

    public var isSynchronised: Bool {
        switch self {
        case .auto: EnvelopeFactory.clockSynchronised()
        case .always: true
        case .never: false
        }
    }
}
