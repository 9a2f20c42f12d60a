import Foundation
import MQTT
import SpectraProtocol
import SpectraTesting
import Testing

/// Who may read the aggregator: accounts, tokens, roles, sign-in and HTTPS, through the real
/// binary as an operator sets it up.
@Suite("spectra-aggregator access control")
struct AccessTests {
    /// One raw HTTP(S) exchange (no redirects followed, no cookies kept), made with Python's
    /// standard library so the Host, Origin and Cookie headers are the test's to choose.
    struct Exchange: Decodable {
        var status: Int
        var headers: [String: String]
        var body: String
    }

    static func request(
        port: Int, method: String = "GET", _ path: String, headers: [String: String] = [:], body: String = "",
        caFile: String? = nil
    ) async throws -> Exchange {
        // 30 s: a sign-in checks a bcrypt hash (cost 12), which in the debug build, with the whole
        // suite running on 2 cores, has taken more than 10.
        let script = """
            import http.client, json, ssl, sys
            port, method, path, headers, body, ca = int(sys.argv[1]), sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5], sys.argv[6]
            if ca:
                context = ssl.create_default_context(cafile=ca)
                c = http.client.HTTPSConnection("localhost", port, timeout=30, context=context)
            else:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                c.request(method, path, body=body.encode() if body else None, headers=headers)
                r = c.getresponse()
                print(json.dumps({"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()}, "body": r.read().decode()}))
            except (ssl.SSLError, OSError) as error:
                print(json.dumps({"status": 0, "headers": {}, "body": type(error).__name__ + ": " + str(error)}))
            """
        let headerText = String(decoding: try JSONSerialization.data(withJSONObject: headers), as: UTF8.self)
        let run = try await ChildProcess.run(
            "/usr/bin/env", ["python3", "-c", script, "\(port)", method, path, headerText, body, caFile ?? ""])
        guard run.status == 0 else { throw TestEnvironmentError("the HTTP probe failed: \(run.stderr)") }
        return try JSONDecoder().decode(Exchange.self, from: Data(run.stdout.utf8))
    }

    /// `spectra-aggregator` with the given arguments on `database`.
    static func admin(_ arguments: [String], database: String, input: String? = nil) async throws -> (status: Int32?, stdout: String, stderr: String) {
        let binary = TestEnvironment.product("spectra-aggregator")
        let all = arguments + ["--set", "database=\(database)"]
        guard let input else { return try await ChildProcess.run(binary, all) }
        // The password on standard input, as a script gives it.
        let quoted = ([binary] + all).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }.joined(separator: " ")
        return try await ChildProcess.run("/bin/sh", ["-c", "printf '%s\\n' \"$SPECTRA_TEST_INPUT\" | \(quoted)"], environment: ["SPECTRA_TEST_INPUT": input])
    }

    /// An aggregator binary on a free port and the folder's database.
    struct Server {
        let process: ChildProcess
        let port: Int
        let database: String

        init(broker: MosquittoBroker, folder: URL, settings: [String] = []) async throws {
            port = try TestEnvironment.freePort()
            database = "\(folder.path)/aggregator.sqlite"
            process = try ChildProcess(
                TestEnvironment.product("spectra-aggregator"),
                [
                    "run", "--set", "mqtt.url=\(broker.url)", "--set", "http.port=\(port)", "--set", "database=\(database)",
                    "--set", "clientId=agg-\(UUID().uuidString.prefix(8))", "--set", "stats.publishIntervalS=1",
                ] + settings.flatMap { ["--set", $0] })
        }

        func listening(caFile: String? = nil) async -> Bool {
            await eventually(timeout: 20) { (try? await AccessTests.request(port: port, "/healthz", caFile: caFile))?.status ?? 0 > 0 }
        }

        func stop() async -> Int32? {
            process.send(SIGTERM)
            return await process.wait(timeout: 15)
        }
    }

    @Test("with no account yet, everything but /healthz is refused, saying how to create one, at start and in the refusal")
    func firstRun() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("access-first-run")
        defer { try? FileManager.default.removeItem(at: folder) }
        let server = try await Server(broker: broker, folder: folder)
        #expect(await server.listening())
        #expect(try await Self.request(port: server.port, "/healthz").status == 200)
        for path in ["/api/v1/fleet/summary", "/metrics", "/api/v1/gateways"] {
            let refused = try await Self.request(port: server.port, path)
            #expect(refused.status == 401 && refused.body.contains("users add NAME --role operator"), "\(path): \(refused)")
        }
        let page = try await Self.request(port: server.port, "/")
        #expect(page.status == 401 && page.body.contains("id=\"login-form\"") && page.body.contains("users add"))
        #expect(server.process.standardError.contains("no account exists yet"), "\(server.process.standardError)")
        #expect(await server.stop() == 0)
        await broker.stop()
    }

    @Test("every route but /healthz refuses no credential (401) and the wrong role (403), and serves the right one; revoked, expired and malformed tokens are refused")
    func rolesAndTokens() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("access-roles")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = "\(folder.path)/aggregator.sqlite"
        var tokens: [String: String] = [:]
        for role in ["viewer", "operator", "metrics"] {
            tokens[role] = try await AggregatorAccess.token(database: database, role: role, name: role)
        }
        let short = try await Self.admin(["tokens", "create", "short", "--role", "operator", "--expires", "2s"], database: database)
        let expiring = short.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let server = try await Server(broker: broker, folder: folder)
        #expect(await server.listening())
        // A gateway the per-gateway routes can find.
        let feeder = MQTTClient(MQTTConfiguration(port: broker.port, clientID: "feeder"))
        try await feeder.connect()
        try await feeder.publish(OutgoingMessage(
            topic: "spectra/v1/demo/gw/gw-0001/status",
            payload: Array(#"{"online":true,"boot":"\#(UUID().uuidString.lowercased())","ts":"\#(WireFormat.timestamp(Date()))"}"#.utf8), retain: true))
        await feeder.disconnect()
        let operatorToken = try #require(tokens["operator"])
        #expect(await eventually(timeout: 10) {
            (try? await Self.request(port: server.port, "/api/v1/gateways/gw-0001", headers: ["Authorization": "Bearer \(operatorToken)"]))?.status == 200
        })

        let routes: [(path: String, allowed: Set<String>)] = [
            ("/", ["viewer", "operator"]),
            ("/api/v1/fleet/summary", ["viewer", "operator"]),
            ("/api/v1/fleet/daily", ["viewer", "operator"]),
            ("/api/v1/gateways", ["operator"]),
            ("/api/v1/gateways/gw-0001", ["operator"]),
            ("/api/v1/gateways/gw-0001/sessions", ["operator"]),
            ("/metrics", ["metrics", "operator"]),
        ]
        for route in routes {
            let anonymous = try await Self.request(port: server.port, route.path)
            #expect(anonymous.status == 401, "\(route.path) without a credential: \(anonymous.status)")
            #expect(anonymous.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            for (role, token) in tokens {
                let answer = try await Self.request(port: server.port, route.path, headers: ["Authorization": "Bearer \(token)"])
                let expected = route.allowed.contains(role) ? 200 : 403
                #expect(answer.status == expected, "\(route.path) as \(role): \(answer.status) \(answer.body.prefix(200))")
                if expected == 403 { #expect(answer.body.contains("needs"), "\(answer.body)") }
            }
        }
        #expect(try await Self.request(port: server.port, "/healthz").status == 200)

        // Malformed, unknown and expired tokens each say what is wrong.
        let malformed = try await Self.request(port: server.port, "/metrics", headers: ["Authorization": "Basic YWxpY2U6c2VjcmV0"])
        #expect(malformed.status == 401 && malformed.body.contains("Bearer TOKEN"), "\(malformed)")
        let forged = try await Self.request(port: server.port, "/metrics", headers: ["Authorization": "Bearer \(operatorToken.dropLast(4))AAAA"])
        #expect(forged.status == 401 && forged.body.contains("not known"), "\(forged)")
        try await Task.sleep(for: .seconds(2.5))
        let expired = try await Self.request(port: server.port, "/metrics", headers: ["Authorization": "Bearer \(expiring)"])
        #expect(expired.status == 401 && expired.body.contains("expired"), "\(expired)")

        // Revoked: refused from the next request on, without a restart.
        let revoke = try await Self.admin(["tokens", "revoke", "metrics"], database: database)
        #expect(revoke.status == 0, "\(revoke.stderr)")
        let revoked = try await Self.request(port: server.port, "/metrics", headers: ["Authorization": "Bearer \(tokens["metrics"] ?? "")"])
        #expect(revoked.status == 401, "\(revoked)")
        let list = try await Self.admin(["tokens", "list"], database: database)
        #expect(list.stdout.contains("operator") && !list.stdout.contains("metrics ") && !list.stdout.contains("spectra_"), "\(list.stdout)")
        #expect(await server.stop() == 0)
        await broker.stop()
    }

    @Test("sign-in: a wrong password is refused and logged, repeated failures are held off (429), the session cookie is HttpOnly and SameSite=Strict, and signing out or a new password ends it")
    func signIn() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("access-sign-in")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = "\(folder.path)/aggregator.sqlite"
        let added = try await Self.admin(["users", "add", "alice", "--role", "viewer", "--password-stdin"], database: database, input: "correct horse battery")
        #expect(added.status == 0, "\(added.stderr)")
        let tooShort = try await Self.admin(["users", "add", "bob", "--role", "viewer"], database: database, input: "short")
        #expect(tooShort.status != 0 && tooShort.stderr.contains("8 to 72 bytes"), "\(tooShort.stderr)")
        let server = try await Server(broker: broker, folder: folder)
        #expect(await server.listening())
        let form = ["Content-Type": "application/x-www-form-urlencoded"]
        func signIn(_ user: String, _ password: String, headers: [String: String] = [:]) async throws -> Exchange {
            try await Self.request(
                port: server.port, method: "POST", "/login", headers: form.merging(headers) { $1 },
                body: "username=\(user)&password=\(password.replacingOccurrences(of: " ", with: "+"))")
        }

        let good = try await signIn("alice", "correct horse battery")
        #expect(good.status == 303 && good.headers["location"] == "/", "\(good)")
        let cookie = try #require(good.headers["set-cookie"])
        #expect(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"), "\(cookie)")
        let session = String(cookie.prefix { $0 != ";" })
        let me = try await Self.request(port: server.port, "/api/v1/me", headers: ["Cookie": session])
        #expect(me.status == 200 && me.body.contains("\"alice\"") && me.body.contains("\"viewer\""), "\(me)")
        // A viewer's session reads fleet figures, not a gateway's history.
        #expect(try await Self.request(port: server.port, "/api/v1/fleet/summary", headers: ["Cookie": session]).status == 200)
        #expect(try await Self.request(port: server.port, "/api/v1/gateways", headers: ["Cookie": session]).status == 403)
        // Another site cannot post the form.
        let crossSite = try await signIn("alice", "correct horse battery", headers: ["Sec-Fetch-Site": "cross-site"])
        #expect(crossSite.status == 403)

        // Signing out ends the session on the server, not only in the browser.
        let out = try await Self.request(port: server.port, method: "POST", "/logout", headers: ["Cookie": session])
        #expect(out.status == 303 && out.headers["location"] == "/login" && out.headers["set-cookie"]?.contains("Max-Age=0") == true, "\(out)")
        let afterOut = try await Self.request(port: server.port, "/api/v1/fleet/summary", headers: ["Cookie": session])
        #expect(afterOut.status == 401 && afterOut.body.contains("sign-in has ended"), "\(afterOut)")

        // A new password ends every sign-in of the account.
        let again = try await signIn("alice", "correct horse battery")
        let second = String((again.headers["set-cookie"] ?? "").prefix { $0 != ";" })
        #expect(try await Self.request(port: server.port, "/api/v1/fleet/summary", headers: ["Cookie": second]).status == 200)
        let passwd = try await Self.admin(["users", "passwd", "alice"], database: database, input: "another long password")
        #expect(passwd.status == 0, "\(passwd.stderr)")
        let ended = try await Self.request(port: server.port, "/api/v1/fleet/summary", headers: ["Cookie": second])
        #expect(ended.status == 401 && ended.body.contains("sign-in has ended"), "\(ended)")

        // Five wrong passwords, then even the right one waits.
        for _ in 0..<5 {
            let wrong = try await signIn("alice", "guess")
            #expect(wrong.status == 401 && wrong.body.contains("wrong name or password"))
        }
        let held = try await signIn("alice", "another long password")
        #expect(held.status == 429 && Int(held.headers["retry-after"] ?? "") ?? 0 > 0, "\(held.status) \(held.headers)")
        let log = server.process.standardError
        #expect(log.components(separatedBy: "sign-in failed").count - 1 == 5 && log.contains("too many failures"), "\(log.suffix(1500))")
        #expect(!log.contains("guess") && !log.contains("correct horse") && !log.contains("another long"), "no password in the log")
        #expect(await server.stop() == 0)
        await broker.stop()
    }

    @Test("no password or token is stored in clear: bcrypt for passwords, SHA-256 for tokens")
    func secretsAtRest() async throws {
        let folder = try TestEnvironment.temporaryDirectory("access-at-rest")
        defer { try? FileManager.default.removeItem(at: folder) }
        let database = "\(folder.path)/aggregator.sqlite"
        let password = "a password nobody should read"
        #expect(try await Self.admin(["users", "add", "carol", "--role", "operator"], database: database, input: password).status == 0)
        let token = try await AggregatorAccess.token(database: database, role: "metrics", name: "scraper")
        // spectra_<16 hex id>_<secret> (the secret is base64url, which may hold _ too)
        let secret = String(token.dropFirst("spectra_".count + 16 + 1))
        #expect(secret.count == 43, "\(token)")
        var stored = Data()
        for suffix in ["", "-wal"] {
            stored.append((try? Data(contentsOf: URL(fileURLWithPath: database + suffix))) ?? Data())
        }
        #expect(!stored.isEmpty)
        #expect(stored.range(of: Data(password.utf8)) == nil, "the password is in the database file")
        #expect(stored.range(of: Data(secret.utf8)) == nil, "the token's secret is in the database file")
        #expect(stored.range(of: Data("$2b$12$".utf8)) != nil, "the password is stored as bcrypt")
        let users = try await Self.admin(["users", "list"], database: database)
        #expect(users.stdout.contains("carol") && users.stdout.contains("operator") && !users.stdout.contains("$2b$"), "\(users.stdout)")
        let removed = try await Self.admin(["users", "remove", "carol"], database: database)
        #expect(removed.status == 0)
        let again = try await Self.admin(["users", "remove", "carol"], database: database)
        #expect(again.status == 1 && again.stderr.contains("no account named 'carol'"), "\(again.stderr)")
    }

    @Test("HTTPS with a certificate from a CA: served and verified, the cookie is Secure, plain HTTP gets nothing, and SIGHUP loads a renewed certificate")
    func https() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("access-https")
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try await TestPKI(), second = try await TestPKI()
        defer { first.remove(); second.remove() }
        let certificate = "\(folder.path)/https.crt", key = "\(folder.path)/https.key"
        try FileManager.default.copyItem(atPath: first.serverCert, toPath: certificate)
        try FileManager.default.copyItem(atPath: first.serverKey, toPath: key)
        let database = "\(folder.path)/aggregator.sqlite"
        #expect(try await Self.admin(["users", "add", "dave", "--role", "operator"], database: database, input: "correct horse battery").status == 0)
        let token = try await AggregatorAccess.token(database: database, role: "metrics")
        let server = try await Server(broker: broker, folder: folder, settings: ["http.tls.certificate=\(certificate)", "http.tls.key=\(key)"])
        #expect(await server.listening(caFile: first.caCert), "\(server.process.standardError)")

        let metrics = try await Self.request(port: server.port, "/metrics", headers: ["Authorization": "Bearer \(token)"], caFile: first.caCert)
        #expect(metrics.status == 200 && metrics.body.contains("spectra_aggregator_"), "\(metrics.status)")
        let signIn = try await Self.request(
            port: server.port, method: "POST", "/login", headers: ["Content-Type": "application/x-www-form-urlencoded"],
            body: "username=dave&password=correct+horse+battery", caFile: first.caCert)
        #expect(signIn.status == 303 && signIn.headers["set-cookie"]?.contains("; Secure") == true, "\(signIn)")
        let plain = try await Self.request(port: server.port, "/healthz")
        #expect(plain.status != 200, "plain HTTP on the HTTPS port: \(plain)")
        // Another CA's client does not trust it.
        #expect(try await Self.request(port: server.port, "/healthz", caFile: second.caCert).status == 0)

        // Renewed (here: from another CA), then SIGHUP: new connections get the new certificate.
        try FileManager.default.removeItem(atPath: certificate)
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: second.serverCert, toPath: certificate)
        try FileManager.default.copyItem(atPath: second.serverKey, toPath: key)
        server.process.send(SIGHUP)
        #expect(await eventually(timeout: 10) { (try? await Self.request(port: server.port, "/healthz", caFile: second.caCert))?.status == 200 })
        #expect(try await Self.request(port: server.port, "/healthz", caFile: first.caCert).status == 0)
        // A broken file on the next SIGHUP: said in the log, the current certificate stays.
        try "not a certificate".write(toFile: certificate, atomically: true, encoding: .utf8)
        server.process.send(SIGHUP)
        #expect(await eventually(timeout: 10) { server.process.standardError.contains("could not reload the HTTPS certificate") })
        #expect(try await Self.request(port: server.port, "/healthz", caFile: second.caCert).status == 200)
        #expect(await server.stop() == 0)

        // A certificate that cannot be read stops the start with one line naming the key.
        let refused = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"),
            ["run", "--set", "database=\(database)", "--set", "http.port=0", "--set", "http.tls.certificate=\(certificate)", "--set", "http.tls.key=\(key)"])
        #expect(refused.status == 1 && refused.stderr.contains("http.tls.certificate"), "\(refused.stderr)")
        await broker.stop()
    }
}
