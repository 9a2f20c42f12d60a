import CMosquitto
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The loop-confined half of an ``MQTTClient``: the libmosquitto handle of the current
/// connection, what waits for the broker, and the reconnect schedule.
///
/// Every method but `init` runs on the event loop's thread; `@unchecked Sendable` only lets
/// closures carry it there.
final class ClientCore: @unchecked Sendable {
    enum Pending {
        case waiting(CheckedContinuation<Void, any Error>)
        case token(UInt64)
    }

    let configuration: MQTTConfiguration
    let loop: MQTTEventLoop
    let outputs: ClientOutputs

    private var handle: OpaquePointer?
    private var context: Unmanaged<CallbackContext>?
    private var fd: Int32 = -1
    private var token: UInt64 = 0
    private var watchingWrite = false
    /// The socket ``corked(_:)`` holds corked, or -1.
    private var corkedFD: Int32 = -1
    private var watchingRead = true
    /// Whether a read pass is queued (one stopped at ``packetsPerWake`` goes on from the queue).
    private var readScheduled = false
    private var connected = false
    /// Whether the connection that just ended had been established (CONNACK success).
    private var lostAfterConnect = false
    /// When the socket last had something to read (monotonic nanoseconds).
    private var lastInbound: UInt64 = 0
    private var stopped = true
    private var attempt = 0
    /// When the current connection's CONNACK came (monotonic nanoseconds).
    private var connectedAt: UInt64 = 0
    /// How long a connection must last to count as stable. The reconnect schedule starts over
    /// at every accepted connection; only the first retry after one that ended sooner waits a
    /// window one step wider each time: a broker that accepts and then drops every connection
    /// (a protocol error after CONNACK, a takeover loop) is retried on a growing schedule, not
    /// many times a second, while the retries of an outage that follows keep the usual one.
    static let stableSeconds: Double = 10
    /// Connections in a row that ended before ``stableSeconds``.
    private var unstable = 0
    /// The window step of the next retry only, after a quick drop.
    private var quickDropStep: Int?
    /// Added when a connection ends before any CONNACK: what a broker that speaks only MQTT
    /// 3.1.1 does with an MQTT 5 CONNECT (it drops it, at once or after a wait).
    static let v311Hint = "; the broker did not answer the MQTT 5 CONNECT: if it speaks only MQTT 3.1.1, set mqtt.protocol: 3.1.1"
    private var publishes: [Int32: Pending] = [:]
    private var subscribes: [Int32: CheckedContinuation<[Int32], any Error>] = [:]
    private var unsubscribes: [Int32: CheckedContinuation<Void, any Error>] = [:]
    private var subscriptions: [Subscription] = []
    private var firstConnect: CheckedContinuation<Bool, any Error>?
    private var lastError: MQTTError?
    private var disconnectWaiters: [CheckedContinuation<Void, Never>] = []
    private var random = SystemRandomNumberGenerator()
    /// Acknowledgements gathered during one pass of the loop, handed over together.
    private var acks: [PublishAcknowledgement] = []
    /// Numbers connections (from 1), so a settle from before a reconnect is recognised.
    private var connectionNumber: UInt64 = 0
    /// Numbers broker sessions: a connection the broker had no session for starts a new one.
    private var sessionNumber: UInt64 = 0
    /// Takes received messages on this thread instead of ``ClientOutputs/messages``.
    var messageHandler: (@Sendable (MQTTMessage) -> Void)?
    /// Messages delivered on this connection, and how many of them the consumer settled.
    private var delivered = 0
    private var settled = 0

    init(configuration: MQTTConfiguration, loop: MQTTEventLoop, outputs: ClientOutputs) {
        self.configuration = configuration
        self.loop = loop
        self.outputs = outputs
    }

    // MARK: Lifecycle

    /// Starts connecting; `continuation` (if any) learns the first attempt's outcome.
    func start(firstAttempt continuation: CheckedContinuation<Bool, any Error>?) {
        guard stopped else {
            continuation?.resume(throwing: MQTTError(.library, code: Int32(MOSQ_ERR_INVAL.rawValue), "already started"))
            return
        }
        stopped = false
        firstConnect = continuation
        connect()
    }

    /// Sends DISCONNECT (no Will), stops reconnecting, releases the handle and finishes the
    /// output streams.
    func stop(_ continuation: CheckedContinuation<Void, Never>) {
        stopped = true
        disconnectWaiters.append(continuation)
        guard let handle else {
            finishStop()
            return
        }
        if connected {
            mosquitto_disconnect_v5(handle, 0, nil)
            updateInterest()
            // The broker closes its side after DISCONNECT; don't wait forever for it. With
            // acknowledgements held for the consumer, DISCONNECT waits behind them.
            loop.schedule(after: configuration.acknowledgeWhenSettled == nil ? 2 : 15) { [self] in
                if self.handle == handle { self.connectionEnded(rc: Int32(MOSQ_ERR_SUCCESS.rawValue)) }
            }
        } else if token == 0 {
            // A connect is in flight on the connector queue; connectReturned finishes the stop.
        } else {
            teardown()
            finishStop()
        }
    }

    private func finishStop() {
        for waiter in disconnectWaiters { waiter.resume() }
        disconnectWaiters.removeAll()
        if let waiter = firstConnect {
            firstConnect = nil
            waiter.resume(throwing: MQTTError(.closed, "the client was stopped"))
        }
        outputs.set(.disconnected(reason: "stopped"))
        outputs.finish()
    }

    private func connect() {
        guard !stopped else { return }
        // The reason of this attempt's failure, when it fails, is found anew.
        lastError = nil
        outputs.set(.connecting)
        connectionNumber += 1
        delivered = 0
        settled = 0
        let context = Unmanaged.passRetained(CallbackContext(core: self))
        guard let handle = mosquitto_new(configuration.clientID, configuration.cleanStart, context.toOpaque()) else {
            context.release()
            fail(MQTTError.library(Int32(MOSQ_ERR_NOMEM.rawValue), "creating the client"))
            return
        }
        self.handle = handle
        self.context = context
        if let error = configure(handle) {
            teardown()
            fail(error)
            return
        }
        var properties: OpaquePointer?
        if configuration.protocolVersion == .v5 && configuration.sessionExpirySeconds > 0 {
            mosquitto_property_add_int32(
                &properties, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), configuration.sessionExpirySeconds)
        }
        let host = configuration.host
        let port = Int32(configuration.port)
        let keepalive = Int32(configuration.keepaliveSeconds)
        let request = ConnectRequest(handle: handle, properties: properties)
        loop.connector.async { [loop] in
            loop.connectorLimit.wait()
            let rc = mosquitto_connect_bind_v5(request.handle, host, port, keepalive, nil, request.properties)
            let savedErrno = errno
            loop.connectorLimit.signal()
            var properties = request.properties
            mosquitto_property_free_all(&properties)
            loop.execute { self.connectReturned(handle: request.handle, rc: rc, errno: savedErrno) }
        }
    }

    private func configure(_ handle: OpaquePointer) -> MQTTError? {
        let version = configuration.protocolVersion == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311
        mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, Int32(version))
        if configuration.acknowledgeWhenSettled != nil {
            // "Threaded" makes libmosquitto queue every packet it sends, PUBACKs included,
            // until mosquitto_loop_write: this loop then decides when they go (mayWrite).
            mosquitto_threaded_set(handle, true)
            mosquitto_int_option(handle, MOSQ_OPT_RECEIVE_MAXIMUM, 65_535)
        }
        mosquitto_connect_v5_callback_set(handle, onConnectCallback)
        mosquitto_disconnect_v5_callback_set(handle, onDisconnectCallback)
        mosquitto_publish_v5_callback_set(handle, onPublishCallback)
        mosquitto_message_v5_callback_set(handle, onMessageCallback)
        mosquitto_subscribe_v5_callback_set(handle, onSubscribeCallback)
        mosquitto_unsubscribe_v5_callback_set(handle, onUnsubscribeCallback)
        if configuration.username != nil || configuration.password != nil {
            let rc = mosquitto_username_pw_set(handle, configuration.username, configuration.password)
            if rc != 0 { return MQTTError.library(rc, "setting credentials") }
        }
        if let will = configuration.will {
            let rc = will.payload.withUnsafeBytes { bytes in
                mosquitto_will_set_v5(
                    handle, will.topic, Int32(bytes.count), bytes.baseAddress, will.qos.rawValue, will.retain, nil)
            }
            if rc != 0 { return MQTTError.library(rc, "setting the Will on \(will.topic)") }
        }
        if let tls = configuration.tls {
            let rc = mosquitto_tls_set(handle, tls.caFile, nil, tls.certFile, tls.keyFile, nil)
            if rc != 0 {
                return MQTTError(
                    .library, code: rc,
                    "TLS files rejected: check that \(tls.caFile)\(tls.certFile.map { ", \($0)" } ?? "")\(tls.keyFile.map { ", \($0)" } ?? "") exist and are PEM [\(String(cString: mosquitto_strerror(rc)))]")
            }
            mosquitto_tls_opts_set(handle, 1, nil, nil)  // SSL_VERIFY_PEER
            mosquitto_tls_insecure_set(handle, false)  // check the server name
            // libmosquitto says why a handshake failed only through its log: listened to until
            // the CONNACK (a log callback makes it format every packet's debug line).
            mosquitto_log_callback_set(handle, onLogCallback)
        }
        return nil
    }

    private func connectReturned(handle: OpaquePointer, rc: Int32, errno savedErrno: Int32) {
        guard self.handle == handle else {
            // Stopped while connecting: the handle is ours to release.
            return
        }
        if stopped {
            teardown()
            finishStop()
            return
        }
        guard rc == Int32(MOSQ_ERR_SUCCESS.rawValue) else {
            errno = savedErrno
            // A TLS failure during the connect was described by the log (queued before this).
            let error = lastError ?? MQTTError.library(rc, "connecting to \(configuration.host):\(configuration.port)")
            teardown()
            fail(error)
            return
        }
        fd = mosquitto_socket(handle)
        watchingWrite = mosquitto_want_write(handle)
        watchingRead = true
        token = loop.register(fd: fd, core: self, wantWrite: watchingWrite)
        lastInbound = MQTTEventLoop.now()
    }

    /// A connection attempt failed before CONNACK: tell the first waiter, then retry later.
    private func fail(_ error: MQTTError) {
        lastError = error
        outputs.set(.disconnected(reason: error.message))
        if let waiter = firstConnect {
            firstConnect = nil
            stopped = true
            waiter.resume(throwing: error)
            return
        }
        scheduleReconnect()
    }

    private func scheduleReconnect() {
        guard !stopped else { return }
        let delay = configuration.backoff.delay(attempt: quickDropStep ?? attempt, using: &random)
        quickDropStep = nil
        attempt += 1
        loop.schedule(after: delay) { [self] in
            if self.handle == nil && !self.stopped { self.connect() }
        }
    }

    /// Releases the current handle (never from inside a libmosquitto callback).
    private func teardown() {
        if token != 0 {
            loop.unregister(fd: fd, token: token)
            token = 0
        }
        if let handle {
            mosquitto_destroy(handle)
            self.handle = nil
        }
        context?.release()
        context = nil
        fd = -1
        connected = false
    }

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
    private func readAvailable(_ handle: OpaquePointer) {
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
    private func continueReading() {
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

    private func setCork(_ socket: Int32, _ on: Bool) {
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
    private func settle(_ handle: OpaquePointer, rc: Int32) {
        guard rc != 0, token != 0, self.handle == handle, mosquitto_socket(handle) < 0 else { return }
        onDisconnect(rc: rc)
    }

    private func updateInterest() {
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

    // MARK: Acknowledging settled messages (acknowledgeWhenSettled)

    /// Whether to read more: not while the consumer's window is full, nor once stopping.
    private var mayRead: Bool {
        guard let window = configuration.acknowledgeWhenSettled else { return true }
        return !stopped && delivered - settled < window
    }

    /// Whether queued packets may go out: only once every delivered message is settled, since
    /// their PUBACKs are in the queue, in order, among everything else.
    private var mayWrite: Bool {
        configuration.acknowledgeWhenSettled == nil || settled >= delivered
    }

    /// The consumer settled every message up to `delivery`.
    func settle(through delivery: Delivery) {
        guard configuration.acknowledgeWhenSettled != nil, delivery.connection == connectionNumber, delivery.ordinal > settled else { return }
        settled = min(delivery.ordinal, delivered)
        updateInterest()
    }

    // MARK: Callbacks (loop thread, inside libmosquitto)

    fileprivate func onConnect(reason: Int32, flags: Int32, capabilities: BrokerCapabilities) {
        guard reason == 0 else {
            lastError = MQTTError.connack(reason)
            return  // libmosquitto closes the connection; onDisconnect follows.
        }
        connected = true
        attempt = 0
        connectedAt = MQTTEventLoop.now()
        if configuration.tls != nil, let handle { mosquitto_log_callback_set(handle, nil) }
        lastError = nil
        outputs.capabilities.withLock { $0 = capabilities }
        let sessionPresent = flags & 1 == 1
        if !sessionPresent { sessionNumber += 1 }
        outputs.connected(sessionPresent: sessionPresent)
        if !sessionPresent, let handle {
            for subscription in subscriptions {
                var mid: Int32 = 0
                mosquitto_subscribe_v5(handle, &mid, subscription.filter, subscription.qos.rawValue, 0, nil)
            }
        }
        if let waiter = firstConnect {
            firstConnect = nil
            waiter.resume(returning: sessionPresent)
        }
    }

    fileprivate func onDisconnect(rc: Int32) {
        // The reason of a MOSQ_ERR_ERRNO, before unregistering the closed socket (EBADF) or
        // anything else overwrites it.
        let systemError = errno
        // Inside libmosquitto: release the handle after this callback returns.
        let ended = handle.map { UInt(bitPattern: $0) }
        loop.execute { [self] in
            if let ended, self.handle.map({ UInt(bitPattern: $0) }) == ended { self.connectionEnded(rc: rc, systemError: systemError) }
        }
        if token != 0 {
            loop.unregister(fd: fd, token: token)
            token = 0
        }
        lostAfterConnect = connected
        connected = false
    }

    /// The connection is over: fail what waited on it, release the handle, reconnect.
    private func connectionEnded(rc: Int32, systemError: Int32 = 0) {
        let wasConnected = lostAfterConnect || connected
        lostAfterConnect = false
        var error = lastError ?? (rc == 0
            ? MQTTError(.closed, "disconnected")
            : MQTTError.library(rc, "connection to \(configuration.host):\(configuration.port) lost", systemError: systemError))
        if !wasConnected && lastError == nil && configuration.protocolVersion == .v5
            && [MOSQ_ERR_CONN_LOST, MOSQ_ERR_PROTOCOL, MOSQ_ERR_KEEPALIVE].contains(where: { rc == Int32($0.rawValue) }) {
            // Dropped before any CONNACK: what a broker that does not speak MQTT 5 does.
            error.message += Self.v311Hint
        }
        teardown()
        let lost = MQTTError(.connectionLost, code: rc, "the connection dropped before the broker acknowledged: \(error.message)")
        for (_, pending) in publishes {
            if case .waiting(let continuation) = pending { continuation.resume(throwing: lost) }
        }
        publishes.removeAll()
        for (_, waiter) in subscribes { waiter.resume(throwing: lost) }
        subscribes.removeAll()
        for (_, waiter) in unsubscribes { waiter.resume(throwing: lost) }
        unsubscribes.removeAll()
        if stopped {
            finishStop()
            return
        }
        if let waiter = firstConnect {
            firstConnect = nil
            stopped = true
            outputs.set(.disconnected(reason: error.message))
            waiter.resume(throwing: error)
            return
        }
        outputs.set(.disconnected(reason: error.message))
        if wasConnected {
            outputs.countReconnect()
            unstable = Double(MQTTEventLoop.now() &- connectedAt) / 1e9 >= Self.stableSeconds ? 0 : unstable + 1
            quickDropStep = unstable > 0 ? unstable : nil
        }
        lastError = nil
        scheduleReconnect()
    }

    /// libmosquitto logged an error during the handshake: a TLS failure becomes the reason the
    /// connection ends, with OpenSSL's certificate verification result when there is one.
    ///
    /// Called on whichever thread runs libmosquitto at the time (the connector's, during a
    /// blocking connect): the verification result is read here, while the TLS session exists,
    /// and the rest is done on the loop, before the connect's or the disconnect's outcome,
    /// which are queued after it.
    fileprivate func onLog(_ handle: OpaquePointer?, level: Int32, message: String) {
        guard level == Int32(MOSQ_LOG_ERR), message.hasPrefix("OpenSSL Error") else { return }
        let detail = TLSVerification.result(handle, host: configuration.host) ?? message
        let failed = handle.map { UInt(bitPattern: $0) }
        loop.execute { [self] in
            guard lastError == nil, self.handle.map({ UInt(bitPattern: $0) }) == failed else { return }
            lastError = MQTTError(
                .library, code: Int32(MOSQ_ERR_TLS.rawValue),
                "TLS with \(configuration.host):\(configuration.port) failed: \(detail): check mqtt.tls.caFile (the CA that signed the broker's certificate), that the certificate names \(configuration.host), and the client certificate and key")
        }
    }

    fileprivate func onPublish(mid: Int32, reason: Int32) {
        guard let pending = publishes.removeValue(forKey: mid) else { return }
        switch pending {
        case .waiting(let continuation):
            if reason >= 0x80 {
                continuation.resume(throwing: MQTTError(
                    .rejected, code: reason,
                    "the broker refused the publish: \(String(cString: mosquitto_reason_string(reason))) (check the topic ACL)"))
            } else {
                continuation.resume()
            }
        case .token(let token):
            acks.append(PublishAcknowledgement(token: token, reasonCode: reason))
        }
    }

    fileprivate func onMessage(_ message: MQTTMessage) {
        var message = message
        delivered += 1
        message.delivery = Delivery(connection: connectionNumber, ordinal: delivered, session: sessionNumber)
        outputs.deliver(message, to: messageHandler)
    }

    fileprivate func onSubscribe(mid: Int32, granted: [Int32]) {
        subscribes.removeValue(forKey: mid)?.resume(returning: granted)
    }

    fileprivate func onUnsubscribe(mid: Int32) {
        unsubscribes.removeValue(forKey: mid)?.resume()
    }

    /// Shuts the socket down under libmosquitto (no DISCONNECT is sent).
    func abortSocket() {
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    // MARK: Requests (loop thread)

    private func requireConnected() throws(MQTTError) -> OpaquePointer {
        guard connected, let handle else {
            throw MQTTError(.notConnected, "not connected to the broker at \(configuration.host):\(configuration.port)")
        }
        return handle
    }

    func publish(_ message: OutgoingMessage, _ pending: Pending) throws(MQTTError) {
        let handle = try requireConnected()
        var properties: OpaquePointer?
        if configuration.protocolVersion == .v5 {
            for property in message.userProperties {
                mosquitto_property_add_string_pair(
                    &properties, Int32(MQTT_PROP_USER_PROPERTY.rawValue), property.name, property.value)
            }
        }
        defer { mosquitto_property_free_all(&properties) }
        var mid: Int32 = 0
        let rc = message.payload.withUnsafeBytes { bytes in
            mosquitto_publish_v5(
                handle, &mid, message.topic, Int32(bytes.count), bytes.baseAddress, message.qos.rawValue,
                message.retain, properties)
        }
        if case .token(let token) = pending,
           rc == Int32(MOSQ_ERR_OVERSIZE_PACKET.rawValue) || rc == Int32(MOSQ_ERR_PAYLOAD_SIZE.rawValue) {
            // This message, not the link: answered as the broker would have ("Packet too
            // large"), so the sender can set it aside and go on with the others.
            acks.append(PublishAcknowledgement(token: token, reasonCode: 0x95))
            return
        }
        guard rc == 0 else { throw MQTTError.library(rc, "publishing to \(message.topic)") }
        if message.qos == .atMostOnce {
            // No PUBACK at QoS 0: handed to the socket is as far as it goes.
            switch pending {
            case .waiting(let continuation): continuation.resume()
            case .token(let token): acks.append(PublishAcknowledgement(token: token, reasonCode: 0))
            }
        } else {
            publishes[mid] = pending
        }
        updateInterest()
    }

    func subscribe(_ list: [Subscription], _ continuation: CheckedContinuation<[Int32], any Error>) {
        guard !list.isEmpty else {
            continuation.resume(returning: [])
            return
        }
        for subscription in list where !subscriptions.contains(subscription) { subscriptions.append(subscription) }
        let handle: OpaquePointer
        do {
            handle = try requireConnected()
        } catch {
            continuation.resume(throwing: error)
            return
        }
        var mid: Int32 = 0
        // One SUBSCRIBE for the list, at the highest QoS asked for.
        let qos = list.map(\.qos.rawValue).max() ?? 1
        let rc = withCStrings(list.map(\.filter)) { mosquitto_subscribe_multiple(handle, &mid, Int32(list.count), $0, qos, 0, nil) }
        guard rc == 0 else {
            continuation.resume(throwing: MQTTError.library(rc, "subscribing to \(list.map(\.filter))"))
            return
        }
        subscribes[mid] = continuation
        updateInterest()
    }

    func unsubscribe(_ filters: [String], _ continuation: CheckedContinuation<Void, any Error>) {
        guard !filters.isEmpty else {
            continuation.resume()
            return
        }
        subscriptions.removeAll { filters.contains($0.filter) }
        let handle: OpaquePointer
        do {
            handle = try requireConnected()
        } catch {
            continuation.resume(throwing: error)
            return
        }
        var mid: Int32 = 0
        let rc = withCStrings(filters) { mosquitto_unsubscribe_multiple(handle, &mid, Int32(filters.count), $0, nil) }
        guard rc == 0 else {
            continuation.resume(throwing: MQTTError.library(rc, "unsubscribing from \(filters)"))
            return
        }
        unsubscribes[mid] = continuation
        updateInterest()
    }
}

/// Calls `body` with a C array of C strings (`char *const *`) that lives for the call.
private func withCStrings<T>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
}

/// A connect request's handle and properties, carried to the connector queue.
private struct ConnectRequest: @unchecked Sendable {
    let handle: OpaquePointer
    let properties: OpaquePointer?
}

/// The immutable box whose pointer libmosquitto hands back to every callback.
final class CallbackContext {
    let core: ClientCore
    init(core: ClientCore) { self.core = core }

    static func core(_ pointer: UnsafeMutableRawPointer?) -> ClientCore? {
        guard let pointer else { return nil }
        return Unmanaged<CallbackContext>.fromOpaque(pointer).takeUnretainedValue().core
    }
}

// MARK: C callbacks: copy data out, hand it to the core.

private func onConnectCallback(
    _: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ reason: Int32, _ flags: Int32, _ properties: OpaquePointer?
) {
    CallbackContext.core(context)?.onConnect(reason: reason, flags: flags, capabilities: capabilities(properties))
}

/// Reads what a CONNACK's properties say the broker lacks (absent means available).
private func capabilities(_ properties: OpaquePointer?) -> BrokerCapabilities {
    var result = BrokerCapabilities()
    guard properties != nil else { return result }
    result.announced = true
    func byte(_ identifier: mqtt5_property) -> UInt8? {
        var value: UInt8 = 0
        return mosquitto_property_read_byte(properties, Int32(identifier.rawValue), &value, false) == nil ? nil : value
    }
    if let value = byte(MQTT_PROP_SHARED_SUB_AVAILABLE) { result.sharedSubscriptions = value != 0 }
    if let value = byte(MQTT_PROP_WILDCARD_SUB_AVAILABLE) { result.wildcardSubscriptions = value != 0 }
    if let value = byte(MQTT_PROP_RETAIN_AVAILABLE) { result.retain = value != 0 }
    if let value = byte(MQTT_PROP_MAXIMUM_QOS) { result.maximumQoS = QoS(rawValue: Int32(min(value, 2))) ?? .exactlyOnce }
    var size: UInt32 = 0
    if mosquitto_property_read_int32(properties, Int32(MQTT_PROP_MAXIMUM_PACKET_SIZE.rawValue), &size, false) != nil {
        result.maximumPacketSize = Int(size)
    }
    return result
}

private func onDisconnectCallback(_: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ rc: Int32, _: OpaquePointer?) {
    CallbackContext.core(context)?.onDisconnect(rc: rc)
}

private func onLogCallback(_ handle: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ level: Int32, _ message: UnsafePointer<CChar>?) {
    guard level == Int32(MOSQ_LOG_ERR), let message else { return }
    CallbackContext.core(context)?.onLog(handle, level: level, message: String(cString: message))
}

/// OpenSSL's verdict on the broker's certificate ("certificate has expired", "hostname
/// mismatch", "unable to get local issuer certificate"), read from the library libmosquitto
/// already loaded (looked up at run time: no build-time dependency on OpenSSL's headers).
enum TLSVerification {
    private typealias VerifyResult = @convention(c) (UnsafeMutableRawPointer?) -> Int
    private typealias ErrorString = @convention(c) (Int) -> UnsafePointer<CChar>?
    private static let functions: (VerifyResult, ErrorString)? = {
        guard let verify = dlsym(nil, "SSL_get_verify_result"), let text = dlsym(nil, "X509_verify_cert_error_string") else { return nil }
        return (unsafeBitCast(verify, to: VerifyResult.self), unsafeBitCast(text, to: ErrorString.self))
    }()

    /// The verification failure of `handle`'s TLS session, nil when it verified (or is gone).
    static func result(_ handle: OpaquePointer?, host: String) -> String? {
        guard let handle, let (verify, text) = functions, let ssl = mosquitto_ssl_get(handle) else { return nil }
        let code = verify(ssl)
        guard code != 0 else { return nil }
        // libmosquitto checks the name itself and fails the check without a code of its own
        // (X509_V_ERR_UNSPECIFIED): the certificate does not name the host.
        if code == 1 { return "the broker's certificate was not accepted (it does not name \(host))" }
        guard let reason = text(code) else { return nil }
        return "the broker's certificate was not accepted (\(String(cString: reason)))"
    }
}

private func onPublishCallback(_: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ mid: Int32, _ reason: Int32, _: OpaquePointer?) {
    CallbackContext.core(context)?.onPublish(mid: mid, reason: reason)
}

private func onMessageCallback(
    _: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ message: UnsafePointer<mosquitto_message>?, _ properties: OpaquePointer?
) {
    guard let core = CallbackContext.core(context), let message else { return }
    let raw = message.pointee
    let topic = raw.topic.map { String(cString: $0) } ?? ""
    var payload: [UInt8] = []
    if let bytes = raw.payload, raw.payloadlen > 0 {
        payload = Array(UnsafeRawBufferPointer(start: bytes, count: Int(raw.payloadlen)))
    }
    var userProperties: [UserProperty] = []
    var name: UnsafeMutablePointer<CChar>?
    var value: UnsafeMutablePointer<CChar>?
    var cursor = mosquitto_property_read_string_pair(properties, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &value, false)
    while cursor != nil {
        if let name, let value { userProperties.append(UserProperty(String(cString: name), String(cString: value))) }
        free(name)
        free(value)
        name = nil
        value = nil
        cursor = mosquitto_property_read_string_pair(cursor, Int32(MQTT_PROP_USER_PROPERTY.rawValue), &name, &value, true)
    }
    core.onMessage(MQTTMessage(
        topic: topic, payload: payload, qos: QoS(rawValue: raw.qos) ?? .atMostOnce, retain: raw.retain,
        userProperties: userProperties))
}

private func onSubscribeCallback(
    _: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ mid: Int32, _ count: Int32, _ granted: UnsafePointer<Int32>?, _: OpaquePointer?
) {
    let list = granted.map { Array(UnsafeBufferPointer(start: $0, count: Int(count))) } ?? []
    CallbackContext.core(context)?.onSubscribe(mid: mid, granted: list)
}

private func onUnsubscribeCallback(_: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ mid: Int32, _: OpaquePointer?) {
    CallbackContext.core(context)?.onUnsubscribe(mid: mid)
}
