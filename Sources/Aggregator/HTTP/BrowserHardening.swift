import HTTPTypes
import Hummingbird

/// Headers every answer carries, and the Host check that keeps a DNS-rebinding page in an
/// operator's browser from reading the API.
///
/// - `Host` must name this server (``allowedHosts``, compared without the port); anything
///   else gets `421 Misdirected Request` saying which names are allowed. An empty list allows
///   any name (a server bound to every address with no `http.allowedHosts`).
/// - Every answer: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`,
///   `X-Frame-Options: DENY` and a Content-Security-Policy (the dashboard's and the login
///   page's own, by hash; `default-src 'none'; frame-ancestors 'none'` for the rest).
/// - Answers about gateways (their sessions: personal data) are `Cache-Control: no-store`.
struct BrowserHardening<Context: RequestContext>: RouterMiddleware {
    /// Lower-case host names (without port) the server answers to; empty: any.
    let allowedHosts: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if !allowedHosts.isEmpty {
            let host = Self.hostName(request.head.authority ?? "")
            guard allowedHosts.contains(host) else {
                var refused = APIRouter.json(
                    ["error": "this server does not answer to the host '\(host)': set http.allowedHosts to the names it is reached by (now \(allowedHosts.sorted().joined(separator: ", ")))"],
                    status: .misdirectedRequest)
                Self.harden(&refused, path: request.uri.path)
                return refused
            }
        }
        var response = try await next(request, context)
        Self.harden(&response, path: request.uri.path)
        return response
    }

    static func harden(_ response: inout Response, path: String) {
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HeaderNames.referrerPolicy] = "no-referrer"
        response.headers[HeaderNames.xFrameOptions] = "DENY"
        // Pages set their own (the dashboard's and the login page's allow their inline style
        // and script by hash); everything else may load nothing and be framed nowhere.
        if response.headers[.contentSecurityPolicy] == nil {
            response.headers[.contentSecurityPolicy] = "default-src 'none'; frame-ancestors 'none'"
        }
        if path.hasPrefix("/api/v1/gateways") || path == "/api/v1/me" { response.headers[.cacheControl] = "no-store" }
    }

    /// `Host` without its port, lower-case (`[::1]:8080` is `[::1]`).
    static func hostName(_ authority: String) -> String {
        let lower = authority.lowercased()
        if lower.hasPrefix("[") { return String(lower.prefix { $0 != "]" }) + "]" }
        return String(lower.split(separator: ":", maxSplits: 1).first ?? "")
    }

    /// The names a server bound to `host` answers to by default: the loopback names, and the
    /// bound name or address itself; none (any name) when bound to every address.
    static func defaultAllowedHosts(boundTo host: String) -> Set<String> {
        let wildcard = ["0.0.0.0", "::", "[::]", ""].contains(host)
        guard !wildcard else { return [] }
        let bound = host.contains(":") && !host.hasPrefix("[") ? "[\(host.lowercased())]" : host.lowercased()
        return ["localhost", "127.0.0.1", "[::1]", bound]
    }
}

/// Header names HTTPTypes does not predefine.
enum HeaderNames {
    // Valid field names, checked by HTTPTypes; a literal that failed would be a typo found by
    // every test that reads a header.
    static let referrerPolicy = HTTPField.Name("Referrer-Policy") ?? .contentSecurityPolicyReportOnly
    static let xFrameOptions = HTTPField.Name("X-Frame-Options") ?? .contentSecurityPolicyReportOnly
}
