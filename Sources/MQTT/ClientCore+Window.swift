import CMosquitto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Flow control for ``MQTTConfiguration/acknowledgeWhenSettled``: reading stops while the
/// consumer's window is full, and PUBACKs wait until what they acknowledge is settled.
extension ClientCore {
    // MARK: Acknowledging settled messages (acknowledgeWhenSettled)

    /// Whether to read more: not while the consumer's window is full, nor once stopping.
    var mayRead: Bool {
        guard let window = configuration.acknowledgeWhenSettled else { return true }
        return !stopped && delivered - settled < window
    }

    /// Whether queued packets may go out: only once every delivered message is settled, since
    /// their PUBACKs are in the queue, in order, among everything else.
    var mayWrite: Bool {
        configuration.acknowledgeWhenSettled == nil || settled >= delivered
    }

    /// The consumer settled every message up to `delivery`.
    func settle(through delivery: Delivery) {
        guard configuration.acknowledgeWhenSettled != nil, delivery.connection == connectionNumber, delivery.ordinal > settled else { return }
        settled = min(delivery.ordinal, delivered)
        updateInterest()
    }
}
