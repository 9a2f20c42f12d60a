import Foundation
import Synchronization

/// Caps the messages one gateway may have ingested per fixed window (an hour by default), so a
/// hostile or broken gateway cannot take the aggregator's capacity from the others. The default
/// is far above what a real gateway sends, even draining a full outbox after an outage.
final class GatewayRateLimiter: Sendable {
    let limit: Int
    let windowSeconds: Double
    private let windows = Mutex<Windows>(Windows())

    struct Windows {
        var byGateway: [GatewayKey: (start: Double, count: Int)] = [:]
        var admitted = 0
    }

    /// - Parameters:
    ///   - limit: messages per gateway per window.
    ///   - windowSeconds: the window's length.
    init(limit: Int, windowSeconds: Double = 3_600) {
        self.limit = limit
        self.windowSeconds = windowSeconds
    }

    /// Whether `gateway` may have one more message ingested at `time`.
    func admit(_ gateway: GatewayKey, at time: Date) -> Bool {
        let now = time.timeIntervalSince1970
        return windows.withLock { windows in
            windows.admitted &+= 1
            // Forget finished windows now and then, so gateways that went quiet cost nothing.
            if windows.admitted % 65_536 == 0 {
                windows.byGateway = windows.byGateway.filter { now - $0.value.start < windowSeconds }
            }
            var window = windows.byGateway[gateway] ?? (now, 0)
            if now - window.start >= windowSeconds || now < window.start { window = (now, 0) }
            guard window.count < limit else {
                windows.byGateway[gateway] = window
                return false
            }
            window.count += 1
            windows.byGateway[gateway] = window
            return true
        }
    }
}
