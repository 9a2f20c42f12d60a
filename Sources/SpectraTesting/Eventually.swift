import Foundation
import Synchronization

/// Polls `condition` every 20 ms until it holds or `timeout` seconds pass.
/// - Returns: whether it held.
public func eventually(timeout: Double = 10, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Collects the elements of an async sequence in the background, for assertions.
public final class Collector<Element: Sendable>: Sendable {
    private let items = Mutex<[Element]>([])
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Starts draining `sequence`.
    public init<S: AsyncSequence & Sendable>(_ sequence: S) where S.Element == Element {
        let box = self
        task.withLock {
            $0 = Task {
                do {
                    for try await element in sequence { box.items.withLock { $0.append(element) } }
                } catch {}
            }
        }
    }

    deinit { task.withLock { $0?.cancel() } }

    /// What arrived so far.
    public var elements: [Element] { items.withLock { $0 } }

    /// How many arrived so far.
    public var count: Int { items.withLock { $0.count } }

    /// Waits until at least `count` elements arrived.
    /// - Returns: whether they did within `timeout` seconds.
    public func waitFor(count: Int, timeout: Double = 10) async -> Bool {
        await eventually(timeout: timeout) { self.count >= count }
    }
}
