import Foundation

/// Runs `work`, which blocks (a socket read, a transfer), on a thread of its own and waits for
/// its result without holding a thread.
///
/// Swift's tasks run on a pool as wide as the machine has cores; a blocking call made on it,
/// or on a dispatch queue (the pool's own threads), holds one of them, and a few such calls
/// stop every task of the agent, the session controller's included.
/// - Parameter stackSize: the thread's stack in bytes; the system's default when nil.
func onThreadOfItsOwn<T: Sendable>(stackSize: Int? = nil, _ work: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread { continuation.resume(returning: work()) }
        if let stackSize { thread.stackSize = stackSize }
        thread.start()
    }
}
