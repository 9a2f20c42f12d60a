import Foundation
import SpectraConfig
import SpectraProtocol

/// Everything `spectra-aggregator` needs; `Config/aggregator.yaml` comments every key.
public struct AggregatorConfiguration: Sendable, Equatable {
    /// The fleets to collect; empty means every fleet on the broker.
    public var fleets: [Identifier]
    public var broker: BrokerConfiguration
    /// The MQTT client id of this instance (the persistent session's name).
    public var clientID: String
    /// The shared-subscription group that instances split the load in; empty (the default)
    /// subscribes directly: one instance, and on mosquitto 2.0 the only way the subscriptions
    /// survive a broker restart, which does not persist shared subscriptions.
    public var shareGroup: String
    /// The statistics database: a SQLite file (one running instance per file, see
    /// ``DatabaseLock``), or, when ``postgres`` is set, that database's URL without a password.
    public var databasePath: String
    /// A PostgreSQL database shared by several instances (`database: postgres://...`); nil: SQLite.
    public var postgres: PostgresDatabase? = nil
    /// HTTP listen address and port.
    public var httpHost: String
    public var httpPort: Int
    /// Host names the HTTP server answers to (`http.allowedHosts`); nil: the loopback names and
    /// `http.host`, or any name when bound to every address.
    public var allowedHosts: [String]? = nil
    /// The HTTPS certificate chain and private key (PEM files, read again on SIGHUP); both nil:
    /// plain HTTP (on loopback, or behind a reverse proxy that terminates TLS).
    public var tlsCertificatePath: String? = nil
    public var tlsKeyPath: String? = nil
    /// Whether the dashboard's session cookie is marked `Secure`; nil: when ``tlsCertificatePath``
    /// is set. Set it true behind a proxy that terminates TLS.
    public var secureCookies: Bool? = nil
    /// How often retained `stats/*` topics are republished, seconds.
    public var publishIntervalSeconds: Double
    /// How long raw events are kept, days.
    public var retentionDays: Int
    /// How long an online gateway may go unheard before the summary counts it as silent, seconds.
    public var silentAfterSeconds: Double
    /// Messages one gateway may have ingested per hour; the rest are refused (`rate_limited`).
    public var gatewayMessagesPerHour: Int
    /// New outbox epochs one gateway may start per UTC day; the rest are refused (`epoch_limit`).
    public var newEpochsPerGatewayPerDay: Int

    public init(
        fleets: [Identifier] = [], broker: BrokerConfiguration = BrokerConfiguration(),
        clientID: String = "spectra-aggregator-1", shareGroup: String = "",
        databasePath: String = "var/aggregator.sqlite", httpHost: String = "127.0.0.1", httpPort: Int = 8080,
        publishIntervalSeconds: Double = 10, retentionDays: Int = 90, silentAfterSeconds: Double = 600,
        gatewayMessagesPerHour: Int = 250_000, newEpochsPerGatewayPerDay: Int = 16
    ) {
        self.fleets = fleets
        self.broker = broker
        self.clientID = clientID
        self.shareGroup = shareGroup
        self.databasePath = databasePath
        self.httpHost = httpHost
        self.httpPort = httpPort
        self.publishIntervalSeconds = publishIntervalSeconds
        self.retentionDays = retentionDays
        self.silentAfterSeconds = silentAfterSeconds
        self.gatewayMessagesPerHour = gatewayMessagesPerHour
        self.newEpochsPerGatewayPerDay = newEpochsPerGatewayPerDay
    }

    /// Every key ``init(fields:)`` reads.
    public static let keys: Set<String> = BrokerConfiguration.keys.union([
        "fleets", "clientId", "shareGroup", "database", "databasePasswordFile", "http.host", "http.port", "http.allowedHosts", "http.tls.certificate",
        "http.tls.key", "http.secureCookies", "stats.publishIntervalS",
        "retention.days", "presence.silentAfterS", "limits.gatewayMessagesPerHour", "limits.newEpochsPerGatewayPerDay",
    ])

    /// Reads the aggregator's keys.
    /// - Throws: ``ConfigurationError`` naming the key and the problem.
    public init(fields: ConfigFields, environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) {
        var fleets: [Identifier] = []
        for text in fields.stringList("fleets", default: []) {
            do {
                fleets.append(try Identifier(text, field: "fleets"))
            } catch {
                throw ConfigurationError(file: fields.source, key: "fleets", problem: error.reason)
            }
        }
        let clientID = try fields.string("clientId", default: "spectra-aggregator-1")
        guard Identifier.isValid(clientID) else {
            throw ConfigurationError(file: fields.source, key: "clientId", problem: "'\(clientID)' must be 1-64 of A-Z a-z 0-9 _ -")
        }
        let shareGroup = try fields.string("shareGroup", default: "", allowEmpty: true)
        guard shareGroup.isEmpty || Identifier.isValid(shareGroup) else {
            throw ConfigurationError(
                file: fields.source, key: "shareGroup", problem: "'\(shareGroup)' must be empty or 1-64 of A-Z a-z 0-9 _ -")
        }
        self.init(
            fleets: fleets,
            broker: try BrokerConfiguration(fields: fields),
            clientID: clientID,
            shareGroup: shareGroup,
            databasePath: try Self.databasePath(try fields.string("database", default: "var/aggregator.sqlite"), source: fields.source),
            httpHost: try fields.string("http.host", default: "127.0.0.1"),
            httpPort: try fields.int("http.port", default: 8080, in: 0...65535),
            publishIntervalSeconds: try fields.double("stats.publishIntervalS", default: 10, in: 1...3600),
            retentionDays: try fields.int("retention.days", default: 90, in: 1...3650),
            silentAfterSeconds: try fields.double("presence.silentAfterS", default: 600, in: 10...604_800),
            gatewayMessagesPerHour: try fields.int("limits.gatewayMessagesPerHour", default: 250_000, in: 100...100_000_000),
            newEpochsPerGatewayPerDay: try fields.int("limits.newEpochsPerGatewayPerDay", default: 16, in: 1...10_000))
        postgres = try Self.postgres(fields, environment: environment)
        if let postgres { databasePath = postgres.description }
        tlsCertificatePath = fields.optionalString("http.tls.certificate")
        tlsKeyPath = fields.optionalString("http.tls.key")
        guard (tlsCertificatePath == nil) == (tlsKeyPath == nil) else {
            throw ConfigurationError(
                file: fields.source, key: tlsCertificatePath == nil ? "http.tls.certificate" : "http.tls.key",
                problem: "HTTPS needs both http.tls.certificate and http.tls.key (PEM files); set both or neither")
        }
        if fields.raw("http.secureCookies") != nil {
            secureCookies = try fields.bool("http.secureCookies", default: false)
        }
        if fields.raw("http.allowedHosts") != nil {
            allowedHosts = fields.stringList("http.allowedHosts", default: []).map { $0.lowercased() }
        }
    }

    /// `database` as a PostgreSQL database, when it is a `postgres://` URL; the password from
    /// `SPECTRA_DATABASE_PASSWORD` or the file `databasePasswordFile` names.
    static func postgres(_ fields: ConfigFields, environment: [String: String]) throws(ConfigurationError) -> PostgresDatabase? {
        let value = try fields.string("database", default: "var/aggregator.sqlite")
        guard PostgresDatabase.isURL(value) else { return nil }
        var password = environment["SPECTRA_DATABASE_PASSWORD"]
        if let file = fields.optionalString("databasePasswordFile") {
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw ConfigurationError(
                    file: fields.source, key: "databasePasswordFile", problem: "cannot read \(file); make it readable by the aggregator's user")
            }
            password = text.trimmingCharacters(in: .newlines)
        }
        do {
            return try PostgresDatabase(url: value, password: password)
        } catch {
            throw ConfigurationError(file: fields.source, key: "database", problem: "the PostgreSQL URL \(error.description)")
        }
    }

    /// `database` as a SQLite file path. A PostgreSQL URL is left to ``postgres(_:environment:)``;
    /// a URL of any other scheme is refused with what to set instead, so that `mysql://host/db`
    /// does not become a folder named `mysql:`. The URL is not repeated in the error: it may
    /// carry a password.
    static func databasePath(_ value: String, source: String) throws(ConfigurationError) -> String {
        if PostgresDatabase.isURL(value) { return value }
        if let separator = value.range(of: "://") {
            let scheme = value[..<separator.lowerBound]
            let isScheme = scheme.first?.isLetter == true
                && scheme.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) }
            if isScheme {
                throw ConfigurationError(
                    file: source, key: "database",
                    problem: "a \(scheme):// URL is not a database this version can use: set database to a SQLite file's path (for example var/aggregator.sqlite) or a postgres:// URL")
            }
        }
        return value
    }
}
