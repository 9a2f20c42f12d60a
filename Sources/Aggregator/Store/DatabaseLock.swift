import Foundation
import Synchronization

/// One ingesting instance per SQLite statistics file.
///
/// Exactly-once counting on SQLite relies on one process holding a gateway stream's
/// watermarks: two aggregators on one file would each take a message the other had taken and
/// count it again. `run`, `retire` and `forget` therefore hold an exclusive `flock` on
/// `DATABASE.lock` beside the database while they write; a second one is refused with one
/// clear error. The read-only and administrative commands (`tokens`, `users`, `config`) take
/// no lock. The lock is the kernel's: it goes with the process, however it ends, so a crash
/// leaves nothing to clean up (the file itself stays, empty but for the holder's pid).
public final class DatabaseLock: Sendable {
    /// The lock file.
    public let path: String
    private let descriptor: Int32

    /// The database is in use by another instance.
    public struct InUse: Error, CustomStringConvertible {
        public let database: String
        /// The holder's pid as it wrote it, when readable.
        public let holder: Int32?
        public var description: String {
            let who = holder.map { "spectra-aggregator (pid \($0))" } ?? "spectra-aggregator"
            return "\(database) is in use by another \(who): one instance ingests into one SQLite file (two would count what each other took); stop it, or give this instance its own database"
        }
    }

    /// The lock file cannot be made or locked (permissions, a read-only or full disk).
    public struct Unusable: Error, CustomStringConvertible {
        public let path: String
        public let code: Int32
        public var description: String { "cannot lock \(path): \(String(cString: strerror(code)))" }
    }

    /// Takes the lock for `databasePath`, or throws ``InUse`` at once (it does not wait).
    /// An in-memory database (`:memory:`) is private to its process and needs none.
    public static func acquire(databasePath: String) throws -> DatabaseLock? {
        guard databasePath != ":memory:", !databasePath.isEmpty else { return nil }
        return try DatabaseLock(databasePath: databasePath)
    }

    private init(databasePath: String) throws {
        path = databasePath + ".lock"
        let directory = (databasePath as NSString).deletingLastPathComponent
        if !directory.isEmpty {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw Unusable(path: path, code: errno) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let error = errno
            let holder = Self.holder(fd)
            close(fd)
            if error == EWOULDBLOCK { throw InUse(database: databasePath, holder: holder) }
            throw Unusable(path: path, code: error)
        }
        descriptor = fd
        // The holder's pid, for the next instance's error (advice only: the lock is the flock).
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
    }

    private let released = Mutex(false)

    /// Gives the lock up (the instance has stopped); also done when the lock is freed.
    public func release() {
        // Closing the descriptor releases the lock; once only, as the number may be reused.
        let first = released.withLock { released in
            defer { released = true }
            return !released
        }
        if first { close(descriptor) }
    }

    deinit { release() }

    private static func holder(_ fd: Int32) -> Int32? {
        var bytes = [UInt8](repeating: 0, count: 16)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: bytes.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let pid = Int32(text), pid > 0 else { return nil }
        return pid
    }
}
