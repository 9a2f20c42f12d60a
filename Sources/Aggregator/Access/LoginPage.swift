import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// The dashboard's sign-in: `GET /login` (the form), `POST /login` (checks the password, sets
/// the session cookie), `POST /logout`. No script on the page; its CSP allows its own style
/// (by hash) and a form posted to this server, nothing else.
enum LoginPage {
    static func add(to router: Router<AggregatorRequestContext>, access: AccessStore, control: AccessControl, limiter: LoginLimiter, logger: Logger) {
        router.get("/login") { request, _ in
            if let cookie = request.cookies[AccessControl.cookieName]?.value, (try? await access.session(cookie)) != nil {
                return redirect(to: "/")
            }
            let firstRun = (try? await access.hasCredentials()) == false
            return response(status: .ok, notice: firstRun ? AccessControl.firstRunMessage : nil, error: nil)
        }
        router.post("/login") { request, context in
            guard sameOrigin(request) else {
                return response(status: .forbidden, notice: nil, error: "the sign-in form was posted from another site")
            }
            let form = parseForm(try await request.body.collect(upTo: 4096))
            let name = String((form["username"] ?? "").prefix(64)), password = form["password"] ?? ""
            let source = context.source
            if let wait = limiter.retryAfter(source: source, account: name) {
                logger.warning("sign-in refused: too many failures", metadata: ["user": "\(name)", "source": "\(source)"])
                var refused = response(
                    status: .tooManyRequests, notice: nil,
                    error: "too many failed sign-ins from here or for this account; try again in \(Int(wait.rounded(.up))) s")
                refused.headers[.retryAfter] = "\(Int(wait.rounded(.up)))"
                return refused
            }
            guard !name.isEmpty, !password.isEmpty, let (session, principal) = try await access.signIn(name, password: password) else {
                limiter.failed(source: source, account: name)
                logger.warning("sign-in failed: wrong name or password", metadata: ["user": "\(name)", "source": "\(source)"])
                return response(status: .unauthorized, notice: nil, error: "wrong name or password")
            }
            limiter.succeeded(account: name)
            logger.info("signed in", metadata: ["user": "\(principal.name)", "role": "\(principal.role.rawValue)", "source": "\(source)"])
            var answer = redirect(to: "/")
            answer.headers[.setCookie] = control.sessionCookie(session)
            return answer
        }
        router.post("/logout") { request, context in
            guard sameOrigin(request) else { return APIRouter.json(["error": "sign-out was posted from another site"], status: .forbidden) }
            if let cookie = request.cookies[AccessControl.cookieName]?.value, !cookie.isEmpty {
                if let principal = try? await access.session(cookie) {
                    logger.info("signed out", metadata: ["user": "\(principal.name)", "source": "\(context.source)"])
                }
                try await access.signOut(cookie)
            }
            var answer = redirect(to: "/login")
            answer.headers[.setCookie] = control.clearedCookie()
            return answer
        }
    }

    static func redirect(to location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location, .cacheControl: "no-store"])
    }

    /// A form posted by a browser must come from a page of this server (the session cookie is
    /// SameSite=Strict; this closes the sign-in form to other sites too). Browsers say where a
    /// request comes from in `Sec-Fetch-Site`; older ones name the page's origin in `Origin`
    /// (`null` under this server's `Referrer-Policy: no-referrer`). A client that sends
    /// neither is not a browser another site can drive.
    static func sameOrigin(_ request: Request) -> Bool {
        if let site = request.headers[secFetchSite] { return site == "same-origin" || site == "none" }
        guard let origin = request.headers[.origin], origin != "null" else { return true }
        guard let host = URL(string: origin)?.host.map({ $0.lowercased() }), let authority = request.head.authority else { return false }
        let bracketed = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return BrowserHardening<AggregatorRequestContext>.hostName(authority) == bracketed
    }

    // A valid field name; a typo would fail every sign-in test.
    static let secFetchSite = HTTPField.Name("Sec-Fetch-Site") ?? .origin

    /// `application/x-www-form-urlencoded` fields (the first of each name).
    static func parseForm(_ body: ByteBuffer) -> [String: String] {
        var fields: [String: String] = [:]
        for pair in String(buffer: body).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ text: Substring) -> String {
                String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
            }
            let name = decode(parts[0])
            if fields[name] == nil { fields[name] = parts.count > 1 ? decode(parts[1]) : "" }
        }
        return fields
    }

    static func response(status: HTTPResponse.Status, notice: String?, error: String?) -> Response {
        var body = page
        body = body.replacingOccurrences(of: "{{notice}}", with: notice.map { "<p class=\"notice\" id=\"notice\">\(escape($0))</p>" } ?? "")
        body = body.replacingOccurrences(of: "{{error}}", with: error.map { "<p class=\"error\" id=\"login-error\">\(escape($0))</p>" } ?? "")
        return Response(
            status: status,
            headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store", .contentSecurityPolicy: contentSecurityPolicy],
            body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static let contentSecurityPolicy =
        "default-src 'none'; style-src '\(Dashboard.hash(of: "style", in: page))'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

    static let page = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Spectra Fleet: sign in</title>
<style>
  body { margin:0; min-height:100vh; display:grid; place-items:center; font:14px/1.4 system-ui, sans-serif; background:#0f1419; color:#e6edf3; }
  form { background:#182028; border:1px solid #2a3540; border-radius:8px; padding:20px 24px; width:min(340px, 90vw); display:grid; gap:10px; }
  h1 { font-size:18px; margin:0 0 6px; }
  label { color:#8b98a5; font-size:12px; }
  input { font:inherit; padding:7px 9px; border-radius:6px; border:1px solid #2a3540; background:#0f1419; color:#e6edf3; }
  button { font:inherit; padding:8px; border-radius:6px; border:0; background:#4fb3ff; color:#0f1419; font-weight:600; cursor:pointer; }
  .error { color:#f85149; margin:0; }
  .notice { color:#d29922; margin:0; }
</style>
</head>
<body>
<form method="post" action="/login" id="login-form">
  <h1>Spectra Fleet</h1>
  {{notice}}
  {{error}}
  <label for="username">Account</label>
  <input id="username" name="username" autocomplete="username" required autofocus>
  <label for="password">Password</label>
  <input id="password" name="password" type="password" autocomplete="current-password" required>
  <button type="submit" id="sign-in">Sign in</button>
</form>
</body>
</html>
"""#
}

/// Failed sign-ins, per source address and per account: after ``accountLimit`` failures for
/// one account or ``sourceLimit`` from one address within ``windowSeconds``, further attempts
/// are refused (429) until the oldest failure leaves the window. A success clears the
/// account's failures. Memory is bounded (``maxKeys``).
final class LoginLimiter: Sendable {
    let windowSeconds: Double
    let accountLimit: Int
    let sourceLimit: Int
    static let maxKeys = 10_000
    private let failures = Mutex<[String: [Double]]>([:])
    private let now: @Sendable () -> Double

    init(windowSeconds: Double = 900, accountLimit: Int = 5, sourceLimit: Int = 20, now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.windowSeconds = windowSeconds
        self.accountLimit = accountLimit
        self.sourceLimit = sourceLimit
        self.now = now
    }

    /// Seconds until a sign-in may be tried again, or nil if it may now.
    func retryAfter(source: String, account: String) -> Double? {
        let time = now()
        return failures.withLock { table in
            var waits: [Double] = []
            for (key, limit) in [("s:" + source, sourceLimit), ("a:" + account.lowercased(), accountLimit)] {
                let recent = (table[key] ?? []).filter { $0 > time - windowSeconds }
                table[key] = recent.isEmpty ? nil : recent
                if recent.count >= limit, let oldest = recent.first { waits.append(oldest + windowSeconds - time) }
            }
            return waits.max()
        }
    }

    func failed(source: String, account: String) {
        let time = now()
        failures.withLock { table in
            if table.count >= Self.maxKeys {
                table = table.filter { ($0.value.last ?? 0) > time - windowSeconds }
                if table.count >= Self.maxKeys { table.removeAll() }
            }
            for key in ["s:" + source, "a:" + account.lowercased()] {
                var times = table[key] ?? []
                times.append(time)
                if times.count > 64 { times.removeFirst(times.count - 64) }
                table[key] = times
            }
        }
    }

    func succeeded(account: String) {
        _ = failures.withLock { $0.removeValue(forKey: "a:" + account.lowercased()) }
    }
}
