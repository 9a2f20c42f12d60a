import CMosquitto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The socket work of a connection (loop thread): readiness events, reading packets, corked
/// writes, keepalive and the epoll interest.
extension ClientCore {
    // MARK: Socket events (loop thread)

    func handle(readable: Bool, writable: Bool, hangup: Bool = false) {
        guard let handle else { return }
        // On most failures libmosquitto closes the socket and calls onDisconnect, which
        // unregisters it (token 0) and schedules connectionEnded. A TLS handshake failure closes
        // the socket without the callback: settle() catches that.
        // epoll reports a hang-up whether asked or not. While reading is paused the connection
        // simply ends here: reading on would deliver messages past the window that can never
        // be acknowledged (the broker sends them again on the next connection).
        if hangup && !mayRead {
            onDisconnect(rc: Int32(MOSQ_ERR_CONN_LOST.rawValue))
            return
        }
        func readAndWrite() {
            if readable || hangup {  // (a hang-up here means reading is allowed)
                lastInbound = MQTTEventLoop.now()
                readAvailable(handle)
            }
            guard token != 0 else { return }
            if writable && mayWrite { settle(handle, rc: mosquitto_loop_write(handle, 1)) }
            updateInterest()
        }
        // Each PUBACK read may release a publish that waited for room in flight; with several
        // in flight, they go out together. (A client with one message at a time, like each
        // of a fleet simulator's thousands, skips the two extra calls.)
        if publishes.count > 1 {
            corked(readAndWrite)
        } else {
            readAndWrite()
        }
        flushAcknowledgements()
    }

    /// Packets read per readiness event at most, so one busy connection does not hold the
    /// loop from the others.
    static let packetsPerWake = 256

    /// Reads packets until the socket has no more, the consumer's window is full, or
    /// ``packetsPerWake`` were read.
    ///
    /// `mosquitto_loop_read` reads at most one packet per call and returns success whether it
    /// read one or the socket had nothing (`EAGAIN`, or TLS wanting more bytes, which
    /// libmosquitto also reports as `EAGAIN`): `errno`, cleared before each call, tells them
    /// apart, so the loop goes on while packets come, without a trip through `epoll_wait` for
    /// each, and stops at the first read that finds nothing.
    /// A pass stopped by the limit goes on from the loop's queue: bytes TLS already decrypted
    /// are not covered by epoll's readiness. So does a TLS pass that read packets before it
    /// stopped: a callback's own system calls (a contended lock's futex) can leave `EAGAIN`
    /// too, and only a read that finds nothing tells for certain.
    func readAvailable(_ handle: OpaquePointer) {
        for pass in 0..<Self.packetsPerWake {
            // (A queued continuation may find the window full since.)
            guard mayRead else { return }
            errno = 0
            let rc = mosquitto_loop_read(handle, 1)
            let drained = errno == EAGAIN || errno == EWOULDBLOCK
            settle(handle, rc: rc)
            guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue), token != 0, self.handle == handle else { return }
            if drained {
                if pass > 0 && configuration.tls != nil { continueReading() }
                return
            }
        }
        continueReading()
    }

    /// Reads on from the loop's queue (a pass that stopped at the limit, or reading resumed
    /// after a full window): what TLS holds decrypted is not covered by epoll's readiness.
    func continueReading() {
        guard token != 0, !readScheduled else { return }
        readScheduled = true
        let socket = fd
        loop.execute { [self] in
            readScheduled = false
            guard fd == socket, token != 0 else { return }
            handle(readable: true, writable: false)
        }
    }

    /// Runs `body` with the socket corked, so the packets it writes leave in as few TCP
    /// segments as fit, when it returns.
    ///
    /// libmosquitto writes each packet with a `write` of its own as soon as it is queued: the
    /// publishes a batch of PUBACKs releases, a batch handed to ``MQTTClient/send(_:)``, or the
    /// PUBACKs of a settled batch would otherwise each go out as a segment of its own, and the
    /// broker wake and read once per segment. Corked, they go together. Nests: only the
    /// outermost call uncorks.
    func corked<Failure: Error>(_ body: () throws(Failure) -> Void) throws(Failure) {
        guard corkedFD < 0, token != 0 else {
            try body()
            return
        }
        let socket = fd
        corkedFD = socket
        setCork(socket, true)
        defer {
            corkedFD = -1
            // The connection may have ended inside `body`; its socket is then closed.
            if token != 0 && fd == socket { setCork(socket, false) }
        }
        try body()
    }

    func setCork(_ socket: Int32, _ on: Bool) {
        guard socket >= 0 else { return }
        var value: Int32 = on ? 1 : 0
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Hands the acknowledgements gathered so far to the consumer, in one batch.
    func flushAcknowledgements() {
        guard !acks.isEmpty else { return }
        outputs.acknowledge(acks)
        acks.removeAll(keepingCapacity: true)
    }

    /// Keepalive pings and silent-link detection.
    func housekeeping() {
        guard let handle, token != 0 else { return }
        // libmosquitto pings at the latest one keepalive after the last inbound packet, so a
        // live broker is heard from within 1.5 keepalives; silence past that is a dead link.
        // (libmosquitto alone would wait up to 2 keepalives.)
        // Time spent not reading (the consumer's window is full) is not the link's silence.
        if !mayRead { lastInbound = MQTTEventLoop.now() }
        let silence = Double(MQTTEventLoop.now() &- lastInbound) / 1e9
        if silence > 1.5 * Double(configuration.keepaliveSeconds) {
            var error = MQTTError.library(Int32(MOSQ_ERR_KEEPALIVE.rawValue), "no answer from \(configuration.host):\(configuration.port) for \(Int(silence)) s")
            if !connected && configuration.protocolVersion == .v5 { error.message += Self.v311Hint }
            lastError = error
            abortSocket()
        }
        settle(handle, rc: mosquitto_loop_misc(handle))
        updateInterest()
    }

    /// Ends the connection if libmosquitto closed the socket without telling us.
    func settle(_ handle: OpaquePointer, rc: Int32) {
        guard rc != 0, token != 0, self.handle == handle, mosquitto_socket(handle) < 0 else { return }
        onDisconnect(rc: rc)
    }

    func updateInterest() {
        guard let handle, token != 0 else { return }
        // Packets queued inside callbacks (a PUBACK releasing the next queued publish) are
        // written now rather than after another trip through epoll; only what the socket
        // cannot take yet waits for EPOLLOUT.
        if mosquitto_want_write(handle) && connected && mayWrite {
            corked { settle(handle, rc: mosquitto_loop_write(handle, 1)) }
            guard token != 0 else { return }
        }
        let wantWrite = mosquitto_want_write(handle) && mayWrite
        let wantRead = mayRead
        if wantWrite != watchingWrite || wantRead != watchingRead {
            if wantRead && !watchingRead { continueReading() }
            watchingWrite = wantWrite
            watchingRead = wantRead
            loop.update(fd: fd, token: token, wantRead: wantRead, wantWrite: wantWrite)
        }
    }
}
