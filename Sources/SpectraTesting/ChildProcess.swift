import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A process a test starts and always stops: output captured line by line, signals on demand,
/// killed when the value goes away.
///
/// Started with `posix_spawn` (not Foundation's `Process`, which crashed here when many tests
/// launched processes at once), with every signal unblocked and at its default in the child,
/// so SIGTERM and SIGINT reach it whatever the spawning thread blocks.
public final class ChildProcess: Sendable {
    /// The executable and arguments, for messages.
    public let commandLine: String
    /// The process id.
    public let pid: Int32
    private let buffer = OutputBuffer()
    private let exit = Mutex<Int32?>(nil)

    /// Output collected from the child's pipes by reader threads.
    private final class OutputBuffer: Sendable {
        let lines = Mutex<[String]>([])
        let partial = Mutex<Data>(Data())
        let errors = Mutex<Data>(Data())
        let open = Mutex<Int>(2)

        func take(_ chunk: Data) {
            let complete: [String] = partial.withLock { buffer in
                buffer.append(chunk)
                var complete: [String] = []
                while let newline = buffer.firstIndex(of: 0x0A) {
                    complete.append(String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self))
                    buffer.removeSubrange(buffer.startIndex...newline)
                }
                return complete
            }
            if !complete.isEmpty { lines.withLock { $0.append(contentsOf: complete) } }
        }
    }

    /// Starts `executable` with `arguments`.
    /// - Parameters:
    ///   - environment: extra variables on top of this process's environment.
    ///   - currentDirectory: the working directory (default: this process's).
    /// - Throws: ``TestEnvironmentError`` when the executable cannot be started.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        currentDirectory: String? = nil
    ) throws {
        commandLine = ([executable] + arguments).joined(separator: " ")
        var out: [Int32] = [0, 0]
        var err: [Int32] = [0, 0]
        guard pipe(&out) == 0, pipe(&err) == 0 else { throw TestEnvironmentError("pipe() failed: errno \(errno)") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        // Nothing else of this process's: not the pipes of children started at the same time
        // (their readers would wait for this child's end to see theirs), nor its sockets
        // (a client closed here would stay open in the child, its broker none the wiser).
        if !Self.closeFrom3(&actions) {
            for fd in out + err { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        // A working directory: run through /bin/sh's `cd` so posix_spawn needs no chdir action.
        var program = executable
        var argv = [executable] + arguments
        if let currentDirectory {
            program = "/bin/sh"
            argv = ["/bin/sh", "-c", "cd \"$0\" && exec \"$@\"", currentDirectory, executable] + arguments
        }
        let merged = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        let cArguments = argv.map { strdup($0) } + [nil]
        let cEnvironment = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            cArguments.forEach { free($0) }
            cEnvironment.forEach { free($0) }
        }
        var child: pid_t = 0
        let rc = posix_spawn(&child, program, &actions, &attributes, cArguments, cEnvironment)
        close(out[1])
        close(err[1])
        guard rc == 0 else {
            close(out[0])
            close(err[0])
            throw TestEnvironmentError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        pid = child
        let buffer = self.buffer
        Self.drain(out[0]) { buffer.take($0) } done: { buffer.open.withLock { $0 -= 1 } }
        Self.drain(err[0]) { chunk in buffer.errors.withLock { $0.append(chunk) } } done: { buffer.open.withLock { $0 -= 1 } }
        Self.reapWhenParentDies(pid: child)
    }

    /// Reads `fd` on a thread of its own until end of file.
    private static func drain(_ fd: Int32, _ take: @escaping @Sendable (Data) -> Void, done: @escaping @Sendable () -> Void) {
        Thread.detachNewThread {
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = read(fd, &chunk, chunk.count)
                if count > 0 {
                    take(Data(chunk[0..<count]))
                } else if count < 0 && errno == EINTR {
                    continue
                } else {
                    break
                }
            }
            close(fd)
            done()
        }
    }

    deinit {
        if reap(block: false) == nil {
            kill(pid, SIGCONT)
            kill(pid, SIGKILL)
            _ = reap(block: true)
        }
    }

    /// Adds glibc's "close every descriptor from 3 on" action (2.34 and later), looked up at run
    /// time: Swift's Glibc module does not declare it.
    /// - Returns: false on an older glibc, whose children inherit what is not close-on-exec.
    @discardableResult
    private static func closeFrom3(_ actions: inout posix_spawn_file_actions_t) -> Bool {
        typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return false }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)(&actions, 3) == 0
    }

    /// Starts a watchdog that kills `pid` if this (test) process dies first, so that a test run
    /// that is killed leaves no broker or agent behind.
    private static func reapWhenParentDies(pid: Int32) {
        let script = "while kill -0 \(getpid()) 2>/dev/null && kill -0 \(pid) 2>/dev/null; do sleep 1; done; kill -CONT \(pid) 2>/dev/null; kill -9 \(pid) 2>/dev/null"
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup(script), nil]
        defer { argv.forEach { free($0) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_RDWR, 0) }
        Self.closeFrom3(&actions)
        var watchdog: pid_t = 0
        let empty: [UnsafeMutablePointer<CChar>?] = [nil]
        if posix_spawn(&watchdog, "/bin/sh", &actions, nil, argv, empty) == 0 {
            // Reap it when it ends, so it never lingers as a zombie.
            let watchdog = watchdog
            Thread.detachNewThread {
                var status: Int32 = 0
                waitpid(watchdog, &status, 0)
            }
        }
    }

    /// The exit status once the child ended (reaping it), else nil.
    @discardableResult
    private func reap(block: Bool) -> Int32? {
        exit.withLock { stored in
            if let stored { return stored }
            var status: Int32 = 0
            let result = waitpid(pid, &status, block ? 0 : WNOHANG)
            guard result == pid else { return nil }
            // Exited normally: the status; killed by a signal: 128 + signal, as a shell reports it.
            let code = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
            stored = code
            return code
        }
    }

    /// Whether the process is still running (a stopped one counts as running).
    public var isRunning: Bool { reap(block: false) == nil }

    /// Complete lines written to standard output so far.
    public var lines: [String] { buffer.lines.withLock { $0 } }

    /// Everything written to standard error so far.
    public var standardError: String { buffer.errors.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Sends `signal` (SIGTERM, SIGKILL, SIGSTOP, SIGCONT, ...).
    public func send(_ signal: Int32) {
        if isRunning { kill(pid, signal) }
    }

    /// Waits for the process to end, up to `timeout` seconds; kills it if it does not.
    /// - Returns: the exit status, or nil when it had to be killed.
    @discardableResult
    public func wait(timeout: Double = 10) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if isRunning {
            kill(pid, SIGCONT)
            kill(pid, SIGKILL)
            _ = reap(block: true)
            return nil
        }
        // Let the reader threads take the last bytes.
        let drained = Date().addingTimeInterval(2)
        while buffer.open.withLock({ $0 }) > 0 && Date() < drained {
            try? await Task.sleep(for: .milliseconds(5))
        }
        return reap(block: false)
    }

    /// Waits until some output line satisfies `predicate`, up to `timeout` seconds.
    /// - Returns: the first matching line, or nil on timeout.
    public func waitForLine(timeout: Double = 10, where predicate: (String) -> Bool) async -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let line = lines.first(where: predicate) { return line }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return lines.first(where: predicate)
    }

    /// Runs a command to completion and returns its status and output.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        currentDirectory: String? = nil, timeout: Double = 60
    ) async throws -> (status: Int32?, stdout: String, stderr: String) {
        let child = try ChildProcess(executable, arguments, environment: environment, currentDirectory: currentDirectory)
        let status = await child.wait(timeout: timeout)
        let out = child.lines.joined(separator: "\n") + child.buffer.partial.withLock { String(decoding: $0, as: UTF8.self) }
        return (status, out, child.standardError)
    }
}
