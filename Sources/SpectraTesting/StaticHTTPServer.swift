import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A tiny HTTP/1.1 server on 127.0.0.1 that serves fixed bytes by path, for download tests
/// (firmware images). Stops when the value goes away.
public final class StaticHTTPServer: Sendable {
    public let port: Int
    private let fd: Int32

    /// Starts serving `files` (path -> bytes).
    public init(files: [String: [UInt8]]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestEnvironmentError("socket() failed") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else { throw TestEnvironmentError("bind/listen failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        self.fd = fd
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                var request = [UInt8](repeating: 0, count: 4096)
                let count = read(client, &request, request.count)
                let line = String(decoding: request.prefix(max(0, count)), as: UTF8.self).split(separator: "\r\n").first ?? ""
                let parts = line.split(separator: " ")
                let path = parts.count > 1 ? String(parts[1]) : ""
                var response: [UInt8]
                if let body = files[path] {
                    response = Array("HTTP/1.1 200 OK\r\nContent-Length: \(body.count)\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n".utf8) + body
                } else {
                    response = Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8)
                }
                var offset = 0
                while offset < response.count {
                    let written = response[offset...].withUnsafeBytes { write(client, $0.baseAddress, $0.count) }
                    if written <= 0 { break }
                    offset += written
                }
                close(client)
            }
        }
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    /// The URL of `path` on this server.
    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }
}
