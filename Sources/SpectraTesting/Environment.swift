import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where things are on the machine running the tests.
public enum TestEnvironment {
    /// Finds an executable on `PATH` or in the usual system folders (mosquitto lives in /usr/sbin).
    public static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let folders = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/sbin"]
        return folders.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// The folder holding this build's products (the test bundle sits beside the executables).
    public static var productsDirectory: URL {
        let argv0 = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var folder = argv0.deletingLastPathComponent()
        // `swift test` runs `.build/<triple>/debug/<package>PackageTests.xctest` (a file on Linux).
        while folder.path != "/" {
            if FileManager.default.isExecutableFile(atPath: folder.appendingPathComponent("spectra-agent").path) {
                return folder
            }
            folder = folder.deletingLastPathComponent()
        }
        return argv0.deletingLastPathComponent()
    }

    /// The path of one of the package's executables in this build.
    public static func product(_ name: String) -> String {
        productsDirectory.appendingPathComponent(name).path
    }

    /// The package's root folder (for `Config/` and fixtures).
    public static var packageRoot: URL {
        var folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        while folder.path != "/" {
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("Package.swift").path) { return folder }
            folder = folder.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
    }

    /// A new empty folder under the system's temporary folder; the caller removes it.
    public static func temporaryDirectory(_ label: String = "spectra") throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range
    /// (32768 and up) so that outgoing connections cannot take it before the server binds it.
    public static func freePort() throws -> Int {
        for _ in 0..<200 {
            let candidate = Int.random(in: 20_000..<32_768)
            if canBind(port: candidate) { return candidate }
        }
        return try kernelPickedPort()
    }

    /// Whether 127.0.0.1:`port` can be bound now.
    static func canBind(port: Int) -> Bool {
        withLoopbackSocket(port: port) { fd, address, length in bind(fd, address, length) == 0 }
    }

    /// Calls `body` with a new TCP socket and the address 127.0.0.1:`port`; closes the socket after.
    private static func withLoopbackSocket(port: Int, _ body: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Bool) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    /// A port the kernel picks (in the ephemeral range).
    static func kernelPickedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestEnvironmentError("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else { throw TestEnvironmentError("bind() failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    public static func isListening(port: Int) -> Bool {
        withLoopbackSocket(port: port) { fd, address, length in connect(fd, address, length) == 0 }
    }

    /// Whether process `pid` itself listens on TCP `port` (read from `/proc`). Two tests that
    /// picked the same free port at once start two servers; the one that lost the bind exits,
    /// and ``isListening(port:)`` alone would take the winner for it.
    public static func isListening(port: Int, process pid: Int32) -> Bool {
        // Read to the end: /proc files report no size, and the table runs to many pages while
        // a whole test suite runs.
        guard let file = FileHandle(forReadingAtPath: "/proc/net/tcp") else { return false }
        defer { try? file.close() }
        guard let bytes = try? file.readToEnd() else { return false }
        let table = String(decoding: bytes, as: UTF8.self)
        let localPort = ":" + String(port, radix: 16, uppercase: true).leftPadded(to: 4)
        // Columns: sl, local address, remote address, state (0A = LISTEN), ..., inode (10th).
        let listening = Set(table.split(separator: "\n").dropFirst().compactMap { line -> Substring? in
            let fields = line.split(separator: " ")
            guard fields.count > 9, fields[1].hasSuffix(localPort), fields[3] == "0A" else { return nil }
            return fields[9]
        })
        guard !listening.isEmpty, let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return false }
        return fds.contains { fd in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"),
                  target.hasPrefix("socket:[") else { return false }
            return listening.contains(target.dropFirst("socket:[".count).dropLast())
        }
    }
}

/// A failure of the test environment itself (no mosquitto installed, no free port, ...).
public struct TestEnvironmentError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
