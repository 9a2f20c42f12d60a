import CMosquitto
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One thread that drives the sockets of many MQTT clients with epoll, so a process can hold
/// thousands of connections without a thread each.
///
/// Every libmosquitto call for a connected client runs on this thread, so the library is never
/// entered concurrently for one handle. Work from other threads is queued with ``execute(_:)``
/// and a wake-up on an eventfd. The blocking part of a connect (name lookup, TCP and TLS
/// handshake) runs on a separate connector queue while the loop does not know the handle yet.
public final class MQTTEventLoop: @unchecked Sendable {
    /// A loop shared by every client that is not given one.
    public static let shared = MQTTEventLoop(name: "mqtt-loop")

    private let epollFD: Int32
    private let wakeFD: Int32
    private let queued = Mutex<[@Sendable () -> Void]>([])
    /// Blocking connects run here, a few at a time.
    let connector = DispatchQueue(label: "mqtt-connector", attributes: .concurrent)
    let connectorLimit = DispatchSemaphore(value: 8)

    // Loop-thread state.
    private var registered: [UInt64: ClientCore] = [:]
    private var nextToken: UInt64 = 1
    private var timers: [(deadline: UInt64, work: () -> Void)] = []
    private var lastHousekeeping: UInt64 = 0
    private static let wakeToken: UInt64 = 0

    /// Starts a loop thread.
    public init(name: String = "mqtt-loop") {
        _ = Self.libraryInitialised
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        precondition(epollFD >= 0 && wakeFD >= 0, "epoll/eventfd unavailable: errno \(errno)")
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.u64 = Self.wakeToken
        epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &event)
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    private static let libraryInitialised: Void = { _ = mosquitto_lib_init() }()

    /// Runs `work` on the loop thread, soon.
    public func execute(_ work: @escaping @Sendable () -> Void) {
        let first = queued.withLock { queue in
            queue.append(work)
            return queue.count == 1
        }
        if first {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    /// Nanoseconds of the monotonic clock.
    static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }

    // MARK: Loop-thread API (call only on the loop thread)

    /// Runs `work` on the loop thread after `seconds`.
    func schedule(after seconds: Double, _ work: @escaping () -> Void) {
        let deadline = Self.now() + UInt64(max(0, seconds) * 1e9)
        let index = timers.firstIndex { $0.deadline > deadline } ?? timers.endIndex
        timers.insert((deadline, work), at: index)
    }

    /// Watches `fd` for `core`; returns the registration token.
    func register(fd: Int32, core: ClientCore, wantWrite: Bool) -> UInt64 {
        let token = nextToken
        nextToken += 1
        registered[token] = core
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | (wantWrite ? EPOLLOUT.rawValue : 0)
        event.data.u64 = token
        epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event)
        return token
    }

    /// Changes whether `fd` is watched for reading and for writability.
    func update(fd: Int32, token: UInt64, wantRead: Bool = true, wantWrite: Bool) {
        var event = epoll_event()
        event.events = (wantRead ? EPOLLIN.rawValue : 0) | (wantWrite ? EPOLLOUT.rawValue : 0)
        event.data.u64 = token
        epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event)
    }

    /// Stops watching `fd`.
    func unregister(fd: Int32, token: UInt64) {
        registered[token] = nil
        var event = epoll_event()
        epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, &event)
    }

    // MARK: The loop

    private func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 512)
        while true {
            let timeout = nextTimeoutMilliseconds()
            let count = epoll_wait(epollFD, &events, Int32(events.count), timeout)
            if count > 0 {
                for index in 0..<Int(count) {
                    let token = events[index].data.u64
                    let flags = events[index].events
                    if token == Self.wakeToken {
                        var value: UInt64 = 0
                        _ = read(wakeFD, &value, 8)
                        continue
                    }
                    guard let core = registered[token] else { continue }
                    core.handle(readable: flags & EPOLLIN.rawValue != 0,
                                writable: flags & EPOLLOUT.rawValue != 0,
                                hangup: flags & (EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0)
                }
            }
            runQueued()
            runTimers()
            let now = Self.now()
            if now &- lastHousekeeping >= 250_000_000 {
                lastHousekeeping = now
                for core in registered.values { core.housekeeping() }
            }
        }
    }

    private func runQueued() {
        while true {
            let work = queued.withLock { queue -> [@Sendable () -> Void] in
                let taken = queue
                queue.removeAll(keepingCapacity: true)
                return taken
            }
            if work.isEmpty { return }
            for item in work { item() }
        }
    }

    private func runTimers() {
        let now = Self.now()
        while let first = timers.first, first.deadline <= now {
            timers.removeFirst()
            first.work()
        }
    }

    private func nextTimeoutMilliseconds() -> Int32 {
        let housekeeping: Int32 = 100
        guard let first = timers.first else { return housekeeping }
        let now = Self.now()
        if first.deadline <= now { return 0 }
        return min(housekeeping, Int32((first.deadline - now) / 1_000_000) + 1)
    }
}
