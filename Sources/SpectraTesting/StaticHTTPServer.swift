import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers fixed routes by path, for download tests
/// (firmware images). Each connection is served on a thread of its own, so a stalled route
/// does not hold up the others. Stops listening when the value goes away.
public final class StaticHTTPServer: Sendable {
    /// What a path answers.
    public enum Route: Sendable {
        /// `200 OK` with a `Content-Length`.
        case body([UInt8])
        /// `200 OK` with chunked transfer encoding: the length is not announced.
        case chunked([UInt8])
        /// Sends the headers of a `200 OK` for `announcing` bytes and then nothing, for a while.
        case stall(announcing: Int)
        /// `302 Found` to another URL.
        case redirect(String)
        /// `503 Service Unavailable` for the first `failures` requests, then `200 OK` with the body
        /// (a server that is down for a while).
        case unavailable(failures: Int, then: [UInt8])
        /// The first request announces the whole body and drops the connection after `after`
        /// bytes; later ones honour `Range: bytes=N-` (`206 Partial Content`).
        case interrupted(after: Int, then: [UInt8])
    }

    /// The `Range` header of each request for `path`, in order (nil: none).
    public func ranges(_ path: String) -> [String?] { tally.ranges.withLock { $0[path, default: []] } }

    public let port: Int
    private let fd: Int32
    private let tally = BodyTally()

    /// Body bytes the server has handed to the kernel for `path` so far, over all requests:
    /// how far a client read before it hung up (plus what the socket buffers took).
    public func bodyBytesSent(_ path: String) -> Int { tally.bytes.withLock { $0[path, default: 0] } }

    /// When each request for `path` arrived so far, in order, as the server's threads saw it.
    public func arrivals(_ path: String) -> [ContinuousClock.Instant] { tally.arrivals.withLock { $0[path, default: []] } }

    /// Starts serving `files` (path -> bytes).
    public convenience init(files: [String: [UInt8]]) throws {
        try self.init(routes: files.mapValues { .body($0) })
    }

    /// Starts serving `routes`; any other path answers `404 Not Found`.
    public init(routes: [String: Route]) throws {
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
        guard bound == 0, listen(fd, 256) == 0 else { throw TestEnvironmentError("bind/listen failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        self.fd = fd
        let tally = self.tally
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                Thread.detachNewThread { Self.serve(client, routes: routes, tally: tally) }
            }
        }
    }

    deinit {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }

    /// The URL of `path` on this server.
    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    private static func serve(_ client: Int32, routes: [String: Route], tally: BodyTally) {
        defer { close(client) }
        var request = [UInt8](repeating: 0, count: 4096)
        let count = read(client, &request, request.count)
        let line = String(decoding: request.prefix(max(0, count)), as: UTF8.self).split(separator: "\r\n").first ?? ""
        let parts = line.split(separator: " ")
        let path = parts.count > 1 ? String(parts[1]) : ""
        let headers = String(decoding: request.prefix(max(0, count)), as: UTF8.self).split(separator: "\r\n")
        let range = headers.first { $0.lowercased().hasPrefix("range:") }.map { String($0.dropFirst("range:".count)).trimmingCharacters(in: .whitespaces) }
        tally.ranges.withLock { $0[path, default: []].append(range) }
        let arrival = tally.arrivals.withLock { arrivals in
            arrivals[path, default: []].append(.now)
            return arrivals[path, default: []].count
        }
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n"
        switch routes[path] {
        case .body(let body):
            guard send(client, Array("\(ok)Content-Length: \(body.count)\r\n\r\n".utf8)) else { return }
            sendBody(client, body, countedAs: path, in: tally, framing: { Array($0) })
        case .chunked(let body):
            guard send(client, Array("\(ok)Transfer-Encoding: chunked\r\n\r\n".utf8)) else { return }
            guard sendBody(client, body, countedAs: path, in: tally, framing: { piece in
                Array("\(String(piece.count, radix: 16))\r\n".utf8) + piece + Array("\r\n".utf8)
            }) else { return }
            send(client, Array("0\r\n\r\n".utf8))
        case .stall(let announced):
            send(client, Array("\(ok)Content-Length: \(announced)\r\n\r\n".utf8))
            sleep(30)
        case .unavailable(let failures, _) where arrival <= failures:
            send(client, Array("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
        case .unavailable(_, let body):
            guard send(client, Array("\(ok)Content-Length: \(body.count)\r\n\r\n".utf8)) else { return }
            sendBody(client, body, countedAs: path, in: tally, framing: { Array($0) })
        case .interrupted(let after, let body) where arrival == 1:
            guard send(client, Array("\(ok)Content-Length: \(body.count)\r\n\r\n".utf8)) else { return }
            sendBody(client, Array(body.prefix(after)), countedAs: path, in: tally, framing: { Array($0) })
        case .interrupted(_, let body):
            if let range, range.hasPrefix("bytes="), let start = Int(range.dropFirst("bytes=".count).split(separator: "-").first ?? ""),
               start < body.count {
                let rest = Array(body[start...])
                guard send(client, Array(("HTTP/1.1 206 Partial Content\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n"
                    + "Content-Range: bytes \(start)-\(body.count - 1)/\(body.count)\r\nContent-Length: \(rest.count)\r\n\r\n").utf8)) else { return }
                sendBody(client, rest, countedAs: path, in: tally, framing: { Array($0) })
            } else {
                guard send(client, Array("\(ok)Content-Length: \(body.count)\r\n\r\n".utf8)) else { return }
                sendBody(client, body, countedAs: path, in: tally, framing: { Array($0) })
            }
        case .redirect(let location):
            send(client, Array("HTTP/1.1 302 Found\r\nLocation: \(location)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
        case nil:
            send(client, Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
        }
    }

    /// Writes `body` in 16 KiB pieces, each as `framing` wraps it, and counts each piece under
    /// `path` once it is written; false when the peer went away.
    @discardableResult
    private static func sendBody(
        _ client: Int32, _ body: [UInt8], countedAs path: String, in tally: BodyTally, framing: (ArraySlice<UInt8>) -> [UInt8]
    ) -> Bool {
        var offset = 0
        while offset < body.count {
            let piece = body[offset..<min(body.count, offset + 16_384)]
            guard send(client, framing(piece)) else { return false }
            offset += piece.count
            tally.add(piece.count, for: path)
        }
        return true
    }

    /// Writes all of `bytes`; false when the peer went away.
    @discardableResult
    private static func send(_ client: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written <= 0 { return false }
            offset += written
        }
        return true
    }
}

/// Requests and body bytes sent per path, shared by the connection threads.
private final class BodyTally: Sendable {
    let bytes = Mutex<[String: Int]>([:])
    let arrivals = Mutex<[String: [ContinuousClock.Instant]]>([:])
    let ranges = Mutex<[String: [String?]]>([:])

    func add(_ count: Int, for path: String) { bytes.withLock { $0[path, default: 0] += count } }
}
