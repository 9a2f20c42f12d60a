import CMosquitto
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Creates libmosquitto handles on a thread of its own, on which `socketpair` fails (see
/// `spectra_refuse_socketpair_on_this_thread`), so that the handles come without the wake-up
/// socket pair only libmosquitto's own loop thread would read: no wasted `write` per packet,
/// two descriptors less per client. The thread does nothing else and starts no other thread
/// (a seccomp filter is inherited by the threads a thread creates).
///
/// Where the kernel refuses the filter (`refusing` false), handles are made there all the same,
/// with their pair: slower, not wrong.
final class HandleFactory: Sendable {
    static let shared = HandleFactory()

    /// Whether `socketpair` fails on the factory's thread, as intended.
    let refusing: Bool
    private let channel: Channel

    /// The request being served: the factory's thread runs `work`, then signals `done`. The
    /// semaphores order the accesses to `work`; `serial` lets one request in at a time.
    private final class Channel: @unchecked Sendable {
        var work: (() -> Void)?
        let requested = DispatchSemaphore(value: 0)
        let done = DispatchSemaphore(value: 0)
        let serial = Mutex<Void>(())
    }

    private init() {
        let channel = Channel()
        let started = DispatchSemaphore(value: 0)
        let outcome = Mutex<Bool>(false)
        let thread = Thread {
            outcome.withLock { $0 = spectra_refuse_socketpair_on_this_thread() == 0 }
            started.signal()
            while true {
                channel.requested.wait()
                channel.work?()
                channel.done.signal()
            }
        }
        thread.name = "mqtt-handles"
        thread.start()
        started.wait()
        self.channel = channel
        refusing = outcome.withLock { $0 }
    }

    /// `mosquitto_new(id, cleanStart, context)` on the factory's thread.
    func make(id: String, cleanStart: Bool, context: UnsafeMutableRawPointer) -> OpaquePointer? {
        channel.serial.withLock { _ in
            nonisolated(unsafe) var handle: OpaquePointer?
            nonisolated(unsafe) let context = context
            channel.work = { handle = mosquitto_new(id, cleanStart, context) }
            channel.requested.signal()
            channel.done.wait()
            channel.work = nil
            return handle
        }
    }
}
