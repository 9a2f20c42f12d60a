import Synchronization

/// One timer for a whole simulated fleet. Gateways wait on it for their next telemetry instead
/// of each arming a timer of its own: at thousands of gateways, a dispatch timer per message
/// kept the runtime's timer thread busy re-sorting its heap. It wakes once per `resolution`
/// while anyone waits, and resumes everyone due by then.
final class FleetTicker: Sendable {
    private struct State {
        /// Waiters by the tick they are due at.
        var buckets: [Int64: [UInt64]] = [:]
        var waiting: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var nextID: UInt64 = 0
        /// Every tick up to this one has been resumed.
        var doneTick: Int64 = 0
        var driving = false
    }

    let resolution: Duration
    private let origin = ContinuousClock.now
    private let state = Mutex(State())

    init(resolution: Duration = .milliseconds(10)) {
        self.resolution = resolution
    }

    /// Returns at `due` (up to one `resolution` late), or at once when the task is cancelled.
    func sleep(until due: ContinuousClock.Instant) async {
        let tick = Int64(max(0, (due - origin) / resolution)) + 1
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let startDriver = state.withLock { state -> Bool? in
                    // The cancellation flag is set before the handler runs: checked under the
                    // lock, a cancellation is never missed.
                    guard !Task.isCancelled, tick > state.doneTick else { return nil }
                    state.waiting[id] = continuation
                    state.buckets[tick, default: []].append(id)
                    defer { state.driving = true }
                    return !state.driving
                }
                switch startDriver {
                case nil: continuation.resume()
                case true?: Task { await self.drive() }
                case false?: break
                }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: id) }?.resume()
        }
    }

    /// Resumes the waiters tick by tick; ends when nobody waits (the next waiter starts it again).
    private func drive() async {
        while true {
            try? await Task.sleep(for: resolution)
            let now = Int64((ContinuousClock.now - origin) / resolution)
            let (due, idle) = state.withLock { state -> ([CheckedContinuation<Void, Never>], Bool) in
                var due: [CheckedContinuation<Void, Never>] = []
                while state.doneTick < now {
                    state.doneTick += 1
                    for id in state.buckets.removeValue(forKey: state.doneTick) ?? [] {
                        if let continuation = state.waiting.removeValue(forKey: id) { due.append(continuation) }
                    }
                }
                guard state.waiting.isEmpty else { return (due, false) }
                state.buckets.removeAll()
                state.driving = false
                return (due, true)
            }
            for continuation in due { continuation.resume() }
            if idle { return }
        }
    }
}
