import ServiceLifecycle

extension MQTTClient: Service {
    /// Connects (retrying with backoff, as ``start()``) and keeps the client connected until a
    /// graceful shutdown or cancellation, then disconnects cleanly.
    ///
    /// Its consumers wire up before the group runs (``connectionUpdates()``,
    /// ``deliverMessages(to:)``, an outbox's `attach`), so none misses the first connection. In
    /// a `ServiceGroup`, list the client first: it is shut down last, after the services that
    /// drain through it. A client its owner started already is not started twice.
    public func run() async {
        start()
        try? await gracefulShutdown()
        await disconnect()
    }
}
