import Dispatch
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The aggregator put together: the store, ingest, the stats publisher, store maintenance and
/// the HTTP server, as one Hummingbird application whose service group runs them in that
/// order and stops them in the reverse one: the server first, ingest last, so pending
/// messages are written (and acknowledged to the broker) before the process exits.
public struct AggregatorServer: Sendable {
    public let configuration: AggregatorConfiguration
    public let store: any StatsStore
    public let ingest: IngestService
    public let metrics: IngestMetrics
    /// Accounts, API tokens and dashboard sessions.
    public let access: AccessStore
    /// Held from `init` until `run` returns: one ingesting instance per SQLite file.
    private let lock: DatabaseLock?
    /// The PostgreSQL store's connections, closed when `run` returns.
    private let postgres: PostgresStatsStore?
    /// The retained stats publisher's lease (several instances on PostgreSQL), given up when
    /// `run` returns.
    private let lease: PostgresStatsStore.PublisherLease?
    /// The HTTPS certificate (nil: plain HTTP), read again on SIGHUP.
    public let certificates: TLSCertificateSource?
    private let application: Application<RouterResponder<AggregatorRequestContext>>
    private let portBox: PortBox

    final class PortBox: Sendable {
        let port = Mutex<Int?>(nil)
        let group = Mutex<ServiceGroup?>(nil)
    }

    /// Opens the store and builds the services: SQLite, or PostgreSQL when the configuration
    /// names one (``AggregatorConfiguration/postgres``).
    /// - Parameter now: the clock statistics are computed against (tests inject one).
    /// - Throws: when the database cannot be opened, is in use by another instance
    ///   (``DatabaseLock/InUse``, SQLite), or does not answer (``StoreFailure``, PostgreSQL), or
    ///   the HTTPS certificate or key cannot be read.
    public static func open(
        configuration: AggregatorConfiguration, logger: Logger, now: @escaping @Sendable () -> Date = Date.init
    ) async throws -> AggregatorServer {
        guard let database = configuration.postgres else { return try AggregatorServer(configuration: configuration, logger: logger, now: now) }
        let store = try await PostgresStatsStore(
            database, silentAfterSeconds: configuration.silentAfterSeconds,
            newEpochsPerGatewayPerDay: configuration.newEpochsPerGatewayPerDay, logger: logger)
        return try AggregatorServer(
            configuration: configuration, logger: logger, now: now, store: store, access: AccessStore(store),
            lease: PostgresStatsStore.PublisherLease(database, logger: logger), lock: nil, postgres: store)
    }

    /// Opens the SQLite store and builds the services (``open(configuration:logger:now:)``
    /// opens either store).
    /// - Throws: when the database cannot be opened or is in use by another instance
    ///   (``DatabaseLock/InUse``), or the HTTPS certificate or key cannot be read.
    public init(configuration: AggregatorConfiguration, logger: Logger, now: @escaping @Sendable () -> Date = Date.init) throws {
        guard configuration.postgres == nil else { throw StoreFailure(.refused, "a PostgreSQL store is opened with AggregatorServer.open") }
        let lock = try DatabaseLock.acquire(databasePath: configuration.databasePath)
        let store = try SQLiteStatsStore(
            path: configuration.databasePath, silentAfterSeconds: configuration.silentAfterSeconds,
            newEpochsPerGatewayPerDay: configuration.newEpochsPerGatewayPerDay)
        try self.init(
            configuration: configuration, logger: logger, now: now, store: store, access: AccessStore(records: SQLiteAccessRecords(pool: store.pool)),
            lease: nil, lock: lock, postgres: nil)
    }

    private init(
        configuration: AggregatorConfiguration, logger: Logger, now: @escaping @Sendable () -> Date, store: any StatsStore,
        access: AccessStore, lease: PostgresStatsStore.PublisherLease?, lock: DatabaseLock?, postgres: PostgresStatsStore?
    ) throws {
        self.lease = lease
        self.configuration = configuration
        self.lock = lock
        self.postgres = postgres
        let metrics = IngestMetrics()
        let ingest = IngestService(configuration: configuration, store: store, metrics: metrics, logger: logger, now: now)
        self.store = store
        self.metrics = metrics
        self.ingest = ingest
        let portBox = PortBox()
        self.portBox = portBox
        let allowedHosts = configuration.allowedHosts.map(Set.init)
            ?? BrowserHardening<BasicRequestContext>.defaultAllowedHosts(boundTo: configuration.httpHost)
        if allowedHosts.isEmpty {
            logger.warning(
                "the HTTP server answers to any host name (it is bound to every address): set http.allowedHosts to the names operators use, so a DNS-rebinding page cannot read it",
                metadata: ["http.host": "\(configuration.httpHost)"])
        }
        self.access = access
        let certificates = try configuration.tlsCertificatePath.flatMap { certificate in
            try configuration.tlsKeyPath.map { try TLSCertificateSource(certificatePath: certificate, keyPath: $0) }
        }
        self.certificates = certificates
        let router = APIRouter.make(
            store: store, metrics: metrics, health: { ingest.health.report(brokerConnected: ingest.client.isConnected) },
            access: access, secureCookies: configuration.secureCookies ?? (certificates != nil),
            allowedHosts: allowedHosts, logger: logger, now: now)
        let server: HTTPServerBuilder = certificates.map { certificates in
            HTTPServerBuilder { responder in
                ReloadingTLSChannel(base: HTTP1Channel(responder: responder), certificates: certificates)
            }
        } ?? .http1()
        let scheme = certificates == nil ? "http" : "https"
        application = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(configuration.httpHost, port: configuration.httpPort), serverName: "spectra-aggregator"),
            services: [
                ingest,
                StatsPublisher(
                    ingest: ingest, configuration: configuration, store: store, metrics: metrics, logger: logger, now: now, lease: lease),
                StoreMaintenance(store: store, retentionDays: configuration.retentionDays, logger: logger, now: now),
            ],
            onServerRunning: { channel in
                portBox.port.withLock { $0 = channel.localAddress?.port }
                logger.info("dashboard at \(scheme)://\(configuration.httpHost):\(channel.localAddress?.port ?? configuration.httpPort)/")
                if (try? await access.hasCredentials()) == false {
                    logger.warning("\(AccessControl.firstRunMessage); until then everything but /healthz answers 401")
                }
            },
            logger: logger)
    }

    /// The HTTP port once the server listens (useful with `http.port: 0`).
    public var httpPort: Int? { portBox.port.withLock { $0 } }

    /// Runs until SIGTERM/SIGINT (when `handleSignals`), ``shutdown()`` or cancellation.
    public func run(handleSignals: Bool = true) async throws {
        // The instance has stopped once this returns: the next one may open the file.
        defer {
            lock?.release()
            postgres?.shutdown()
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [application], gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: application.logger))
        portBox.group.withLock { $0 = group }
        // SIGHUP: read the HTTPS certificate and key again (a renewed certificate).
        var hangup: (any DispatchSourceSignal)?
        if handleSignals, let certificates {
            signal(SIGHUP, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
            let logger = application.logger
            source.setEventHandler { certificates.reload(logger: logger) }
            source.resume()
            hangup = source
        }
        defer { hangup?.cancel() }
        do {
            try await group.run()
        } catch {
            await lease?.release()
            throw error
        }
        await lease?.release()
    }

    /// Stops the way SIGTERM does: the HTTP server closes, ingest writes what it received.
    public func shutdown() async {
        await portBox.group.withLock { $0 }?.triggerGracefulShutdown()
    }
}
