import Foundation

/// Certificates for TLS tests, made with the openssl command in a folder of the test's own:
/// a CA, a broker certificate for `localhost`, a client certificate, and a client
/// certificate from another (untrusted) CA.
public struct TestPKI: Sendable {
    public let directory: URL
    public var caCert: String { path("ca.crt") }
    public var serverCert: String { path("server.crt") }
    public var serverKey: String { path("server.key") }
    public var clientCert: String { path("client.crt") }
    public var clientKey: String { path("client.key") }
    public var rogueCACert: String { path("rogue-ca.crt") }
    public var rogueClientCert: String { path("rogue-client.crt") }
    public var rogueClientKey: String { path("rogue-client.key") }

    private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Makes the certificates.
    /// - Parameter clientName: the client certificate's common name.
    public init(clientName: String = "gw-0001") async throws {
        directory = try TestEnvironment.temporaryDirectory("pki")
        guard let openssl = TestEnvironment.executable("openssl") else { throw TestEnvironmentError("openssl is not installed") }
        let dir = directory.path
        func run(_ arguments: [String]) async throws {
            let result = try await ChildProcess.run(openssl, arguments, currentDirectory: dir, timeout: 30)
            guard result.status == 0 else {
                throw TestEnvironmentError("openssl \(arguments.joined(separator: " ")) failed: \(result.stderr)")
            }
        }
        func ca(_ name: String, _ subject: String) async throws {
            try await run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", "\(name).key", "-out", "\(name).crt", "-days", "2", "-subj", subject])
        }
        func leaf(_ name: String, _ subject: String, ca: String, extensions: String) async throws {
            try await run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                           "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject])
            try extensions.write(toFile: "\(dir)/\(name).ext", atomically: true, encoding: .utf8)
            try await run(["x509", "-req", "-in", "\(name).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key",
                           "-CAcreateserial", "-out", "\(name).crt", "-days", "2", "-extfile", "\(name).ext"])
        }
        try await ca("ca", "/CN=Spectra Test CA")
        try await ca("rogue-ca", "/CN=Rogue CA")
        try await leaf("server", "/CN=localhost", ca: "ca", extensions: "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n")
        try await leaf("client", "/CN=\(clientName)", ca: "ca", extensions: "extendedKeyUsage=clientAuth\n")
        try await leaf("rogue-client", "/CN=\(clientName)", ca: "rogue-ca", extensions: "extendedKeyUsage=clientAuth\n")
    }

    /// Removes the folder.
    public func remove() { try? FileManager.default.removeItem(at: directory) }
}
