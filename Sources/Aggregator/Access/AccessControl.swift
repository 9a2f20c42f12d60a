import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// The aggregator's request context: Hummingbird's, plus the peer's address (for the login
/// rate limit) and who the request comes from once ``AccessControl`` has checked it.
public struct AggregatorRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    public var principal: Principal?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// The peer's IP address as text ("unknown" for a Unix socket).
    var source: String { remoteAddress?.ipAddress ?? "unknown" }
}

/// Who may read what: every route but `/healthz` and the login page needs a signed-in user
/// (the dashboard's session cookie) or an API token (`Authorization: Bearer`), with a role
/// that grants the route's.
///
/// - No credential: 401, saying how to sign in, or, while no account exists, how to create one.
///   A browser asking for the dashboard gets the login form with the 401.
/// - A token that is malformed, unknown, revoked or expired: 401 saying which.
/// - A role that does not reach the route: 403 naming the role it needs.
struct AccessControl: RouterMiddleware {
    typealias Context = AggregatorRequestContext
    let access: AccessStore
    /// Whether the session cookie is marked `Secure` (served over TLS, directly or by a proxy).
    let secureCookies: Bool
    let logger: Logger

    static let cookieName = "spectra_session"

    /// What a route needs.
    enum Requirement: Equatable {
        case open
        case signedIn
        case role(Role)
    }

    static func requirement(path: String) -> Requirement {
        switch path {
        case "/healthz", "/login", "/logout": .open
        case "/metrics": .role(.metrics)
        case "/api/v1/me": .signedIn
        case "/api/v1/gateways": .role(.operator)
        case _ where path.hasPrefix("/api/v1/gateways/"): .role(.operator)
        default: .role(.viewer)
        }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let requirement = Self.requirement(path: request.uri.path)
        if requirement == .open { return try await next(request, context) }
        var context = context
        switch try await authenticate(request) {
        case .success(let principal):
            if case .role(let need) = requirement, !principal.role.grants(need) {
                return APIRouter.json(
                    ["error": "\(principal.credential == .token ? "the token" : "the account") '\(principal.name)' has the role \(principal.role.rawValue); \(request.uri.path) needs \(need.rawValue)\(need == .operator ? "" : " or operator")"],
                    status: .forbidden)
            }
            context.principal = principal
            return try await next(request, context)
        case .failure(let refusal):
            return await refuse(request, refusal)
        }
    }

    /// Why a request carries no usable credential.
    enum Refusal: Error {
        case none
        case token(AccessStore.TokenProblem)
        case sessionEnded
    }

    func authenticate(_ request: Request) async throws -> Result<Principal, Refusal> {
        if let authorization = request.headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else { return .failure(.token(.malformed)) }
            return try await access.authenticate(bearer: String(parts[1]).trimmingCharacters(in: .whitespaces)).mapError { .token($0) }
        }
        if let cookie = request.cookies[Self.cookieName]?.value, !cookie.isEmpty {
            guard let principal = try await access.session(cookie) else { return .failure(.sessionEnded) }
            return .success(principal)
        }
        return .failure(.none)
    }

    func refuse(_ request: Request, _ refusal: Refusal) async -> Response {
        let firstRun = (try? await access.hasCredentials()) == false
        let message: String
        switch refusal {
        case _ where firstRun:
            message = Self.firstRunMessage
        case .none:
            message = "sign in at /login, or send an API token as Authorization: Bearer TOKEN"
        case .token(.malformed):
            message = "the Authorization header must be 'Bearer TOKEN' with a token from spectra-aggregator tokens create"
        case .token(.unknown):
            message = "the token is not known here (revoked, or from another aggregator); create one with spectra-aggregator tokens create"
        case .token(.expired):
            message = "the token has expired; create a new one with spectra-aggregator tokens create"
        case .sessionEnded:
            message = "the sign-in has ended (signed out, expired, or the password changed); sign in again at /login"
        }
        var response: Response
        if request.uri.path == "/" {
            response = LoginPage.response(status: .unauthorized, notice: firstRun ? Self.firstRunMessage : nil, error: nil)
        } else {
            response = APIRouter.json(["error": message], status: .unauthorized)
        }
        response.headers[.wwwAuthenticate] = "Bearer realm=\"spectra-aggregator\""
        if case .sessionEnded = refusal { response.headers[.setCookie] = clearedCookie() }
        return response
    }

    static let firstRunMessage = "no account exists yet: on the aggregator's host run 'spectra-aggregator users add NAME --role operator' (same --config), then sign in"

    func sessionCookie(_ value: String) -> String {
        "\(Self.cookieName)=\(value); Path=/; Max-Age=\(Int(AccessStore.sessionSeconds)); HttpOnly; SameSite=Strict\(secureCookies ? "; Secure" : "")"
    }

    func clearedCookie() -> String {
        "\(Self.cookieName)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict\(secureCookies ? "; Secure" : "")"
    }
}
