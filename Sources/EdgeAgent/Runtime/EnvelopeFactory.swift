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
            timestamp: now, synced: synced ?? Self.clockSynchronised(), message: message)
    }

    static func monotonicNanos() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    /// Whether the wall clock is known to be synchronised: systemd-timesyncd marks it with
    /// `/run/systemd/timesync/synchronized`; false when unknown, so consumers never trust it blindly.
    public static func clockSynchronised() -> Bool {
        FileManager.default.fileExists(atPath: "/run/systemd/timesync/synchronized")
    }
}
