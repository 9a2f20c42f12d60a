import CMosquitto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What libmosquitto reports (loop thread, called from its callbacks): connects, disconnects,
/// acknowledgements, messages.
extension ClientCore {
    // MARK: Callbacks (loop thread, inside libmosquitto)

    func onConnect(reason: Int32, flags: Int32, capabilities: BrokerCapabilities) {
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

    func onDisconnect(rc: Int32) {
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
    func connectionEnded(rc: Int32, systemError: Int32 = 0) {
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
            if case .waiting(let continuation, _) = pending { continuation.resume(throwing: lost) }
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
    func onLog(_ handle: OpaquePointer?, level: Int32, message: String) {
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

    func onPublish(mid: Int32, reason: Int32) {
        guard let pending = publishes.removeValue(forKey: mid) else { return }
        switch pending {
        case .waiting(let continuation, _):
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

    func onMessage(_ message: MQTTMessage) {
        var message = message
        delivered += 1
        message.delivery = Delivery(connection: connectionNumber, ordinal: delivered, session: sessionNumber)
        outputs.deliver(message, to: messageHandler)
    }

    func onSubscribe(mid: Int32, granted: [Int32]) {
        subscribes.removeValue(forKey: mid)?.resume(returning: granted)
    }

    func onUnsubscribe(mid: Int32) {
        unsubscribes.removeValue(forKey: mid)?.resume()
    }

    /// Shuts the socket down under libmosquitto (no DISCONNECT is sent).
    func abortSocket() {
        if fd >= 0 { shutdown(fd, Int32(SHUT_RDWR)) }
    }
}
