import Foundation
import NIOSSL
import PostgresNIO

/// Where a PostgreSQL statistics database is and how to reach it, from a `database:` URL:
/// `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=MODE&sslrootcert=FILE]`.
///
/// The password never comes from the URL (a configuration file is shown by `config show` and
/// copied around): it comes from `SPECTRA_DATABASE_PASSWORD` or the file `databasePasswordFile`
/// names. `sslmode` is libpq's: `disable`, `prefer` (the default: TLS when the server offers
/// it), `require` (TLS, any certificate), `verify-full` (TLS, the certificate checked against
/// `sslrootcert` or the system's trust store, and the host name).
public struct PostgresDatabase: Sendable, Equatable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var user: String
    public var database: String
    public var password: String?
    public var tls: TLSMode
    public var rootCertificatePath: String?

    public init(
        host: String, port: Int = 5432, user: String, database: String, password: String? = nil, tls: TLSMode = .prefer,
        rootCertificatePath: String? = nil
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.database = database
        self.password = password
        self.tls = tls
        self.rootCertificatePath = rootCertificatePath
    }

    /// Whether `value` is a PostgreSQL URL (`postgres://` or `postgresql://`).
    public static func isURL(_ value: String) -> Bool {
        let lower = value.lowercased()
        return lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://")
    }

    /// Parses a `postgres://` URL; the error says what to fix and never repeats the URL.
    public init(url text: String, password: String?) throws(Problem) {
        guard Self.isURL(text), let components = URLComponents(string: text) else {
            throw Problem("is not a PostgreSQL URL of the form postgres://USER@HOST:PORT/DATABASE")
        }
        guard components.password == nil else {
            throw Problem(
                "carries a password: keep it out of the configuration and put it in SPECTRA_DATABASE_PASSWORD or in the file databasePasswordFile names")
        }
        guard let host = components.host, !host.isEmpty else { throw Problem("names no host: postgres://USER@HOST:PORT/DATABASE") }
        guard let user = components.user, !user.isEmpty else { throw Problem("names no user: postgres://USER@HOST:PORT/DATABASE") }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        guard !path.isEmpty, !path.contains("/") else { throw Problem("names no database: postgres://USER@HOST:PORT/DATABASE") }
        let port = components.port ?? 5432
        guard (1...65535).contains(port) else { throw Problem("has port \(port); a port is 1-65535") }
        var tls = TLSMode.prefer
        var rootCertificate: String?
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                    throw Problem("has sslmode=\(item.value ?? ""); use one of \(TLSMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                tls = mode
            case "sslrootcert":
                rootCertificate = item.value
            default:
                throw Problem("has the parameter \(item.name), which this version does not read (sslmode and sslrootcert are read)")
            }
        }
        self.init(host: host, port: port, user: user, database: path, password: password, tls: tls, rootCertificatePath: rootCertificate)
    }

    /// Why a URL was refused.
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// The URL without a password, for messages.
    public var description: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    var clientConfiguration: PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: clientTLS)
        configuration.options.maximumConnections = 8
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }

    /// The TLS settings `sslmode` asks for; nil: no TLS.
    private var tlsContext: TLSConfiguration? {
        var context = TLSConfiguration.makeClientConfiguration()
        switch tls {
        case .disable:
            return nil
        case .prefer, .require:
            // As libpq: encrypted, but the certificate is not checked unless asked for.
            context.certificateVerification = .none
        case .verifyFull:
            if let rootCertificatePath { context.trustRoots = .file(rootCertificatePath) }
            context.certificateVerification = .fullVerification
        }
        return context
    }

    private var clientTLS: PostgresClient.Configuration.TLS {
        guard let context = tlsContext else { return .disable }
        return tls == .prefer ? .prefer(context) : .require(context)
    }

    /// The settings of a single connection (the publisher's lease holds one of its own).
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        if let context = tlsContext {
            let ssl = try NIOSSLContext(configuration: context)
            tls = self.tls == .prefer ? .prefer(ssl) : .require(ssl)
        } else {
            tls = .disable
        }
        var configuration = PostgresConnection.Configuration(
            host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .seconds(10)
        return configuration
    }
}
