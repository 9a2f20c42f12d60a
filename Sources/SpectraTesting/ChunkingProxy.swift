import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A TCP proxy on 127.0.0.1 that hands each connection's bytes from the server to the client
/// in small pieces (1 to `largestPiece` bytes, with a pause now and then), so that the client
/// finds its packets, and TLS records, cut at every place: a header byte alone, half a length,
/// a payload across many reads, `EAGAIN` in the middle of each. Bytes towards the server pass
/// unchanged.
public final class ChunkingProxy: Sendable {
    public let port: Int
    private let listener: Int32
    private let targetPort: Int
    private let largestPiece: Int
    /// Every socket the proxy opened, closed by ``stop()``.
    private let sockets = Mutex<Set<Int32>>([])
    private let stopped = Atomic<Bool>(false)

    public init(targetPort: Int, largestPiece: Int = 7) throws {
        self.targetPort = targetPort
        self.largestPiece = max(1, largestPiece)
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw ProxyError("socket: errno \(errno)") }
        var address = Self.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 16) == 0 else {
            close(listener)
            throw ProxyError("bind/listen: errno \(errno)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        self.listener = listener
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    /// Closes the listener and every connection.
    public func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for socket in sockets.withLock({ $0 }) { shutdown(socket, Int32(SHUT_RDWR)) }
    }

    deinit { stop() }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let client = accept(listener, nil, nil)
            guard client >= 0 else {
                if errno == EINTR { continue }
                return
            }
            let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(port: targetPort)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(server, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard server >= 0, connected == 0 else {
                close(client)
                if server >= 0 { close(server) }
                continue
            }
            var noDelay: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
            sockets.withLock { $0.formUnion([client, server]) }
            let pumps = PumpCount()
            // Both sockets are closed once both directions ended (not before: the other
            // direction may still be writing to one of them).
            let finished: @Sendable () -> Void = { [self] in
                guard pumps.count.add(1, ordering: .acquiringAndReleasing).newValue == 2 else { return }
                sockets.withLock { $0.subtract([client, server]) }
                close(client)
                close(server)
            }
            Thread.detachNewThread { [self] in
                pump(from: client, to: server, chunked: false)
                finished()
            }
            Thread.detachNewThread { [self] in
                pump(from: server, to: client, chunked: true)
                finished()
            }
        }
    }

    private func pump(from source: Int32, to destination: Int32, chunked: Bool) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        var random = SystemRandomNumberGenerator()
        var pieces = 0
        loop: while true {
            let got = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if got < 0 && errno == EINTR { continue }
            guard got > 0 else { break }
            var offset = 0
            while offset < got {
                let piece = chunked ? min(got - offset, Int.random(in: 1...largestPiece, using: &random)) : got - offset
                let sent = buffer.withUnsafeBytes { bytes in
                    bytes.baseAddress.map { send(destination, $0 + offset, piece, Int32(MSG_NOSIGNAL)) } ?? -1
                }
                if sent < 0 && errno == EINTR { continue }
                guard sent > 0 else { break loop }
                offset += sent
                pieces += 1
                // Now and then a pause, so the client's read finds nothing more (EAGAIN).
                if chunked && pieces % 16 == 0 { usleep(200) }
            }
        }
        // One side ended: end both.
        shutdown(source, Int32(SHUT_RDWR))
        shutdown(destination, Int32(SHUT_RDWR))
    }
}

private final class PumpCount: Sendable {
    let count = Atomic<Int>(0)
}

public struct ProxyError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
