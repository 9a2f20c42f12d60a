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
        /// A caller awaiting the PUBACK; `serial` tells this wait from a later one that reuses
        /// its message id (for ``abandon(mid:serial:)``).
        case waiting(CheckedContinuation<Void, any Error>, serial: UInt64 = 0)
        case token(UInt64)
    }

    let configuration: MQTTConfiguration
    let loop: MQTTEventLoop
    let outputs: ClientOutputs

    var handle: OpaquePointer?
    var context: Unmanaged<CallbackContext>?
    var fd: Int32 = -1
    var token: UInt64 = 0
    var watchingWrite = false
    /// The socket ``corked(_:)`` holds corked, or -1.
    var corkedFD: Int32 = -1
    var watchingRead = true
    /// Whether a read pass is queued (one stopped at ``packetsPerWake`` goes on from the queue).
    var readScheduled = false
    var connected = false
    /// Whether the connection that just ended had been established (CONNACK success).
    var lostAfterConnect = false
    /// When the socket last had something to read (monotonic nanoseconds).
    var lastInbound: UInt64 = 0
    var stopped = true
    var attempt = 0
    /// When the current connection's CONNACK came (monotonic nanoseconds).
    var connectedAt: UInt64 = 0
    /// How long a connection must last to count as stable. The reconnect schedule starts over
    /// at every accepted connection; only the first retry after one that ended sooner waits a
    /// window one step wider each time: a broker that accepts and then drops every connection
    /// (a protocol error after CONNACK, a takeover loop) is retried on a growing schedule, not
    /// many times a second, while the retries of an outage that follows keep the usual one.
    static let stableSeconds: Double = 10
    /// Connections in a row that ended before ``stableSeconds``.
    var unstable = 0
    /// The window step of the next retry only, after a quick drop.
    var quickDropStep: Int?
    /// Added when a connection ends before any CONNACK: what a broker that speaks only MQTT
    /// 3.1.1 does with an MQTT 5 CONNECT (it drops it, at once or after a wait).
    static let v311Hint = "; the broker did not answer the MQTT 5 CONNECT: if it speaks only MQTT 3.1.1, set mqtt.protocol: 3.1.1"
    var publishes: [Int32: Pending] = [:]
    var subscribes: [Int32: CheckedContinuation<[Int32], any Error>] = [:]
    var unsubscribes: [Int32: CheckedContinuation<Void, any Error>] = [:]
    var subscriptions: [Subscription] = []
    var firstConnect: CheckedContinuation<Bool, any Error>?
    var lastError: MQTTError?
    var disconnectWaiters: [CheckedContinuation<Void, Never>] = []
    /// Numbers the waits with a deadline.
    var waitSerial: UInt64 = 0
    var random = SystemRandomNumberGenerator()
    /// Acknowledgements gathered during one pass of the loop, handed over together.
    var acks: [PublishAcknowledgement] = []
    /// Numbers connections (from 1), so a settle from before a reconnect is recognised.
    var connectionNumber: UInt64 = 0
    /// Numbers broker sessions: a connection the broker had no session for starts a new one.
    var sessionNumber: UInt64 = 0
    /// Takes received messages on this thread instead of ``ClientOutputs/messages``.
    var messageHandler: (@Sendable (MQTTMessage) -> Void)?
    /// Messages delivered on this connection, and how many of them the consumer settled.
    var delivered = 0
    var settled = 0

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

    func finishStop() {
        // The state first: whoever awaited the disconnect finds the client disconnected.
        outputs.set(.disconnected(reason: "stopped"))
        outputs.finish()
        for waiter in disconnectWaiters { waiter.resume() }
        disconnectWaiters.removeAll()
        if let waiter = firstConnect {
            firstConnect = nil
            waiter.resume(throwing: MQTTError(.closed, "the client was stopped"))
        }
    }

    func connect() {
        guard !stopped else { return }
        // The reason of this attempt's failure, when it fails, is found anew.
        lastError = nil
        outputs.set(.connecting)
        connectionNumber += 1
        delivered = 0
        settled = 0
        let context = Unmanaged.passRetained(CallbackContext(core: self))
        // Made where it comes without libmosquitto's unused wake-up socket pair (HandleFactory).
        guard let handle = HandleFactory.shared.make(id: configuration.clientID, cleanStart: configuration.cleanStart, context: context.toOpaque()) else {
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

    func configure(_ handle: OpaquePointer) -> MQTTError? {
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

    func connectReturned(handle: OpaquePointer, rc: Int32, errno savedErrno: Int32) {
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
    func fail(_ error: MQTTError) {
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

    func scheduleReconnect() {
        guard !stopped else { return }
        let delay = configuration.backoff.delay(attempt: quickDropStep ?? attempt, using: &random)
        quickDropStep = nil
        attempt += 1
        loop.schedule(after: delay) { [self] in
            if self.handle == nil && !self.stopped { self.connect() }
        }
    }

    /// Releases the current handle (never from inside a libmosquitto callback).
    func teardown() {
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

    // MARK: Requests (loop thread)

    func requireConnected() throws(MQTTError) -> OpaquePointer {
        guard connected, let handle else {
            throw MQTTError(.notConnected, "not connected to the broker at \(configuration.host):\(configuration.port)")
        }
        return handle
    }

    /// - Returns: the message id it waits under (nil: nothing waits, as at QoS 0).
    @discardableResult
    func publish(_ message: OutgoingMessage, _ pending: Pending) throws(MQTTError) -> Int32? {
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
            return nil
        }
        guard rc == 0 else { throw MQTTError.library(rc, "publishing to \(message.topic)") }
        if message.qos == .atMostOnce {
            // No PUBACK at QoS 0: handed to the socket is as far as it goes.
            switch pending {
            case .waiting(let continuation, _): continuation.resume()
            case .token(let token): acks.append(PublishAcknowledgement(token: token, reasonCode: 0))
            }
            updateInterest()
            return nil
        }
        publishes[mid] = pending
        updateInterest()
        return mid
    }

    /// Gives up waiting for the PUBACK of `mid` (when it is still the wait `serial`): the
    /// caller hears ``MQTTError/Kind/timedOut``; the message may still reach the broker.
    func abandon(mid: Int32, serial: UInt64, after seconds: Double) {
        loop.schedule(after: seconds) { [self] in
            guard case .waiting(let continuation, let waiting)? = publishes[mid], waiting == serial else { return }
            publishes[mid] = nil
            continuation.resume(throwing: MQTTError(
                .timedOut, "the broker did not acknowledge the publish within \(seconds) s (it may still arrive)"))
        }
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
func withCStrings<T>(_ strings: [String], _ body: (UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>) -> T) -> T {
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
