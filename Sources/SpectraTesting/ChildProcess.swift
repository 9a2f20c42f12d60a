import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A process a test starts and always stops: output captured line by line, signals on demand,
/// killed when the value goes away.
public final class ChildProcess: Sendable {
    /// The executable and arguments, for messages.
    public let commandLine: String
    private let process: Process
    private let buffer = OutputBuffer()

    /// Output collected from the child's pipes, shared with their readability handlers.
    private final class OutputBuffer: Sendable {
        let lines = Mutex<[String]>([])
        let partial = Mutex<Data>(Data())
        let errors = Mutex<Data>(Data())

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
    /// - Throws: when the executable cannot be started.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        currentDirectory: String? = nil
    ) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        process.standardInput = FileHandle.nullDevice
        self.process = process
        self.commandLine = ([executable] + arguments).joined(separator: " ")
        let buffer = self.buffer
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if !chunk.isEmpty { buffer.take(chunk) }
        }
        stderr.fileHandleForReading.readabilityHandler = { handle in
            let chunk = handle.availableData
            if !chunk.isEmpty { buffer.errors.withLock { $0.append(chunk) } }
        }
        // Children inherit the spawning thread's signal mask, and the concurrency runtime's
        // threads block SIGTERM and SIGINT: without this a child could never be stopped gracefully.
        var everything = sigset_t()
        var saved = sigset_t()
        sigfillset(&everything)
        pthread_sigmask(SIG_UNBLOCK, &everything, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()
        Self.reapWhenParentDies(pid: process.processIdentifier)
    }

    /// Starts a watchdog that kills `pid` if this (test) process dies first, so that a test run
    /// that is killed leaves no broker or agent behind.
    private static func reapWhenParentDies(pid: Int32) {
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = [
            "-c",
            "while kill -0 \(getpid()) 2>/dev/null && kill -0 \(pid) 2>/dev/null; do sleep 1; done; kill -CONT \(pid) 2>/dev/null; kill -9 \(pid) 2>/dev/null",
        ]
        watchdog.standardInput = FileHandle.nullDevice
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        try? watchdog.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// The process id.
    public var pid: Int32 { process.processIdentifier }

    /// Whether the process is still running.
    public var isRunning: Bool { process.isRunning }

    /// Complete lines written to standard output so far.
    public var lines: [String] { buffer.lines.withLock { $0 } }

    /// Everything written to standard error so far.
    public var standardError: String { buffer.errors.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Sends `signal` (SIGTERM, SIGKILL, SIGSTOP, SIGCONT, ...).
    public func send(_ signal: Int32) {
        if process.isRunning { kill(process.processIdentifier, signal) }
    }

    /// Waits for the process to end, up to `timeout` seconds; kills it if it does not.
    /// - Returns: the exit status, or nil when it had to be killed.
    @discardableResult
    public func wait(timeout: Double = 10) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return nil
        }
        process.waitUntilExit()
        // Let the readability handlers take the last bytes.
        try? await Task.sleep(for: .milliseconds(50))
        return process.terminationStatus
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
