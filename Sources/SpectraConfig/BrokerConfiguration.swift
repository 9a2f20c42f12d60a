/// Where and how to reach the MQTT broker; the same keys for every executable
/// (`mqtt.url`, `mqtt.username`, `mqtt.password`, `mqtt.tls.*`, `mqtt.keepaliveS`, `mqtt.protocol`).
/// The broker's certificate is checked against the URL's host name, so name the broker in
/// `mqtt.url` as its certificate does.
public struct BrokerConfiguration: Sendable, Equatable {
    /// Broker host name or address.
    public var host: String
    /// Broker TCP port.
    public var port: Int
    /// Whether to use TLS (`mqtts://`).
    public var tls: Bool
    /// PEM file of the CA that signed the broker's certificate.
    public var caFile: String?
    /// PEM client certificate, for brokers that require one.
    public var certFile: String?
    /// PEM private key of the client certificate.
    public var keyFile: String?
    public var username: String?
    public var password: String?
    /// MQTT keepalive, seconds; a silent link is noticed within about 1.5 keepalives.
    public var keepaliveSeconds: Int
    /// The MQTT version spoken: `5` (the default) or `3.1.1` for brokers without MQTT 5.
    public var protocolVersion: ProtocolVersion

    /// The MQTT versions a client can speak (`mqtt.protocol`).
    public enum ProtocolVersion: String, Sendable, Equatable, CaseIterable {
        case v5 = "5"
        case v311 = "3.1.1"
    }

    /// Creates a configuration; defaults reach a local broker without TLS.
    public init(
        host: String = "127.0.0.1", port: Int = 1883, tls: Bool = false, caFile: String? = nil,
        certFile: String? = nil, keyFile: String? = nil,
        username: String? = nil, password: String? = nil, keepaliveSeconds: Int = 30, protocolVersion: ProtocolVersion = .v5
    ) {
        self.host = host
        self.port = port
        self.tls = tls
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.username = username
        self.password = password
        self.keepaliveSeconds = keepaliveSeconds
        self.protocolVersion = protocolVersion
    }

    /// The keys read by ``init(fields:)``.
    public static let keys: Set<String> = [
        "mqtt.url", "mqtt.username", "mqtt.password", "mqtt.keepaliveS", "mqtt.protocol",
        "mqtt.tls.caFile", "mqtt.tls.certFile", "mqtt.tls.keyFile",
    ]

    /// Reads the `mqtt.*` keys.
    /// - Throws: ``ConfigurationError`` for a malformed URL or keepalive, or a client
    ///   certificate without its key.
    public init(fields: ConfigFields) throws(ConfigurationError) {
        let endpoint = try fields.parsed(
            "mqtt.url", default: (tls: false, host: "127.0.0.1", port: 1883),
            expected: "a broker URL such as mqtt://127.0.0.1:1883 or mqtts://broker.example:8883",
            Self.parseURL)
        self.init(
            host: endpoint.host, port: endpoint.port, tls: endpoint.tls,
            caFile: fields.optionalString("mqtt.tls.caFile"), certFile: fields.optionalString("mqtt.tls.certFile"),
            keyFile: fields.optionalString("mqtt.tls.keyFile"),
            username: fields.optionalString("mqtt.username"), password: fields.optionalString("mqtt.password"),
            keepaliveSeconds: try fields.int("mqtt.keepaliveS", default: 30, in: 5...3600),
            protocolVersion: try fields.parsed(
                "mqtt.protocol", default: .v5, expected: "5 or 3.1.1 (the MQTT version the broker speaks)",
                { ProtocolVersion(rawValue: $0 == "5.0" ? "5" : $0) }))
        if (certFile == nil) != (keyFile == nil) {
            throw ConfigurationError(
                file: fields.source, key: "mqtt.tls.keyFile", problem: "a client certificate needs both certFile and keyFile")
        }
    }

    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (default ports 1883 and 8883).
    public static func parseURL(_ text: String) -> (tls: Bool, host: String, port: Int)? {
        let tls: Bool
        let rest: Substring
        if text.hasPrefix("mqtt://") {
            tls = false
            rest = text.dropFirst("mqtt://".count)
        } else if text.hasPrefix("mqtts://") {
            tls = true
            rest = text.dropFirst("mqtts://".count)
        } else {
            return nil
        }
        let hostPort = rest.hasSuffix("/") ? rest.dropLast() : rest
        var host = String(hostPort)
        var port = tls ? 8883 : 1883
        if let colon = hostPort.lastIndex(of: ":"), !hostPort.hasSuffix("]") {
            host = String(hostPort[..<colon])
            guard let parsed = Int(hostPort[hostPort.index(after: colon)...]), (1...65535).contains(parsed) else {
                return nil
            }
            port = parsed
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains("/"), !host.contains(" ") else { return nil }
        return (tls, host, port)
    }

    /// The URL form, for logs and `config show`.
    public var url: String { "\(tls ? "mqtts" : "mqtt")://\(host.contains(":") ? "[\(host)]" : host):\(port)" }
}
