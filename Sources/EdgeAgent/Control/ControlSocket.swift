import CSpectraSystem
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The local control socket: a Unix domain socket on the gateway. Each connection carries one
/// JSON request line and gets one JSON response line. Only the agent's own user (and root) can
/// use it: the socket file is 0600, and each connection's peer credentials are checked (a
/// connection made before the mode was set, or through a descriptor passed on, is refused as
/// well). Nothing on the broker can start a session.
public final class ControlSocketServer: Sendable {
    /// Who is on the other end of a connection (from the kernel: SO_PEERCRED).
    public struct Peer: Sendable, Equatable {
        public var uid: UInt32
        public var pid: Int32
        /// How events record it: `local:uid=N`.
        public var requester: String { "local:uid=\(uid)" }
    }

    /// Answers one request: a JSON object in, a JSON object out (as bytes).
    public typealias Handler = @Sendable (Data, Peer) async -> Data

    public let path: String
    private let fd: Int32
    private let handler: Handler
    private let closed = Mutex(false)
    private let stopped = Mutex(false)

    /// Binds and listens on `path` (a stale socket file is replaced).
    /// - Throws: ``ControlSocketError`` when the socket cannot be created.
    public init(path: String, handler: @escaping Handler) throws {
        self.path = path
        self.handler = handler
        unlink(path)
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError("cannot create the control socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(fd)
            throw ControlSocketError("control socket path is too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let error = errno
            close(fd)
            throw ControlSocketError("cannot listen on \(path): \(String(cString: strerror(error)))")
        }
        chmod(path, 0o600)
    }

    /// Whether `peer` may use the socket: the agent's own user, or root.
    static func allowed(_ peer: Peer) -> Bool { peer.uid == geteuid() || peer.uid == 0 }

    /// The kernel's record of who connected, nil when it cannot be read.
    static func peer(of client: Int32) -> Peer? {
        var uid: UInt32 = 0
        var pid: Int32 = 0
        guard spectra_peer_credentials(client, &uid, &pid) == 0 else { return nil }
        return Peer(uid: uid, pid: pid)
    }

    /// A request line read off its connection by the connection's own thread.
    private struct Request: Sendable {
        let client: Int32
        let peer: Peer
        let line: String
    }

    /// Accepts connections until ``stop()`` or cancellation. Accepting, and each connection's
    /// wait for its request line, happen on threads of their own, off Swift's task threads: a
    /// client that connects and says nothing, or task threads kept busy elsewhere, hold up no
    /// other client. Only a complete request reaches the handler, in a child task of this call.
    public func run() async {
        let fd = self.fd
        let (requests, arrived) = AsyncStream.makeStream(of: Request.self)
        await withTaskCancellationHandler {
            async let accepting: Void = onThreadOfItsOwn { Self.accept(on: fd, into: arrived) }
            await withTaskGroup(of: Void.self) { group in
                for await request in requests {
                    group.addTask { await self.answer(request) }
                }
            }
            // Ended by `stop()` (the accepting thread finished the stream) or by cancellation.
            stop()
            await accepting
        } onCancel: {
            stop()
        }
        // Closed here, once no `accept` can still be waiting on the descriptor: closed in
        // `stop()`, its number could be reused (by a database file or the MQTT socket) before
        // the accepting thread's next call.
        closeListener()
    }

    /// Stops accepting and removes the socket file (once, however often it is called).
    public func stop() {
        guard stopped.withLock({ stopped in defer { stopped = true }; return !stopped }) else { return }
        // Wakes a waiting `accept` with an error, which ends `run()`.
        shutdown(fd, Int32(SHUT_RDWR))
        unlink(path)
    }

    private func answer(_ request: Request) async {
        defer { close(request.client) }
        Self.write(bytes: await handler(Data(request.line.utf8), request.peer), to: request.client)
    }

    /// The accepting thread: a thread per connection until the listener is shut down.
    private static func accept(on fd: Int32, into requests: AsyncStream<Request>.Continuation) {
        defer { requests.finish() }
        while true {
            let client = Glibc.accept(fd, nil, nil)
            if client < 0 {
                switch errno {
                case EINTR, ECONNABORTED:
                    continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory for now: the connection waits in the backlog.
                    usleep(100_000)
                    continue
                default:
                    return  // shut down by `stop()`
                }
            }
            Thread.detachNewThread { readRequest(client, into: requests) }
        }
    }

    /// A connection's thread: checks who it is and reads its request line, for at most
    /// ``clientTimeoutSeconds``.
    private static func readRequest(_ client: Int32, into requests: AsyncStream<Request>.Continuation) {
        let peer = Self.peer(of: client)
        guard let peer, allowed(peer) else {
            let who = peer.map { "uid \($0.uid)" } ?? "an unknown user"
            write(bytes: Data("{\"ok\":false,\"error\":\"not allowed: \(who) is not the agent's user\"}".utf8), to: client)
            close(client)
            return
        }
        setTimeout(client, SO_RCVTIMEO, seconds: clientTimeoutSeconds)
        setTimeout(client, SO_SNDTIMEO, seconds: clientTimeoutSeconds)
        guard let line = readLine(client).line else {
            close(client)
            return
        }
        if case .terminated = requests.yield(Request(client: client, peer: peer, line: line)) { close(client) }
    }

    deinit { closeListener() }

    private func closeListener() {
        let first = closed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        if first { close(fd) }
    }

    /// How long a client may take to send its request line, or to take the answer.
    static let clientTimeoutSeconds = 5

    static func setTimeout(_ fd: Int32, _ option: Int32, seconds: Int) {
        var limit = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Reads up to a newline (or end of file); `timedOut` when the socket's receive timeout
    /// ran out first.
    static func readLine(_ fd: Int32, limit: Int = 64 * 1024) -> (line: String?, timedOut: Bool) {
        var buffer: [UInt8] = []
        var byte: UInt8 = 0
        while buffer.count < limit {
            let count = read(fd, &byte, 1)
            if count < 0 && errno == EINTR { continue }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) { return (nil, true) }
            if count <= 0 { break }
            if byte == 0x0A { break }
            buffer.append(byte)
        }
        return (buffer.isEmpty ? nil : String(decoding: buffer, as: UTF8.self), false)
    }

    static func write(_ object: [String: Any], to fd: Int32) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        write(bytes: data, to: fd)
    }

    static func write(bytes: Data, to fd: Int32) {
        var data = bytes
        data.append(0x0A)
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                // No SIGPIPE when the client has gone (a command interrupted while the agent
                // worked on it): a signal would end the agent, a session with it.
                let written = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written <= 0 { return }
                offset += written
            }
        }
    }
}

/// Sends one request to a running agent's control socket.
public enum ControlSocketClient {
    /// - Throws: ``ControlSocketError`` when the agent is not running or does not answer.
    /// - Parameter timeoutSeconds: how long to wait for the answer.
    public static func send(_ request: [String: Any], path: String, timeoutSeconds: Int = 30) throws -> [String: Any] {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError("cannot create a socket: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw ControlSocketError("socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw ControlSocketError("no agent answers on \(path): is `spectra-agent run` running with this data folder?")
        }
        ControlSocketServer.setTimeout(fd, SO_RCVTIMEO, seconds: timeoutSeconds)
        ControlSocketServer.write(request, to: fd)
        let (line, timedOut) = ControlSocketServer.readLine(fd)
        if timedOut { throw ControlSocketError("the agent did not answer within \(timeoutSeconds) s: see its log") }
        guard let line, let response = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        else { throw ControlSocketError("the agent closed the connection without an answer") }
        return response
    }
}

/// A control-socket failure, with what to do.
public struct ControlSocketError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
