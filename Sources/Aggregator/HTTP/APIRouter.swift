import Foundation
import Hummingbird
import Logging
import MQTT
import SpectraProtocol

/// The HTTP API (docs/contracts/openapi.yaml), `/healthz`, `/metrics` and the dashboard.
public enum APIRouter {
    /// Longest `from`..`to` span one request may ask for, days.
    public static let maxSpanDays = 366

    /// Builds the router.
    /// - Parameters:
    ///   - health: ingest's health now (for `/healthz`, and the health figures of `/metrics`).
    ///   - now: the clock "today" is taken from.
    ///   - access: accounts, tokens and sessions: who may read what (see ``AccessControl``).
    ///   - secureCookies: whether the session cookie is marked `Secure` (served over HTTPS).
    public static func make(
        store: any StatsStore, metrics: IngestMetrics, health: @escaping @Sendable () -> IngestHealth.Report,
        access: AccessStore, secureCookies: Bool = false, allowedHosts: Set<String> = [],
        logger: Logger = Logger(label: "spectra.aggregator.http"), now: @escaping @Sendable () -> Date = Date.init
    ) -> Router<AggregatorRequestContext> {
        let router = Router(context: AggregatorRequestContext.self)
        let control = AccessControl(access: access, secureCookies: secureCookies, logger: logger)
        router.add(middleware: BrowserHardening(allowedHosts: allowedHosts))
        router.add(middleware: control)
        LoginPage.add(to: router, access: access, control: control, limiter: LoginLimiter(), logger: logger)
        router.get("/") { _, _ in
            Response(
                status: .ok,
                headers: [
                    .contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                    .contentSecurityPolicy: Dashboard.contentSecurityPolicy,
                ],
                body: .init(byteBuffer: ByteBuffer(bytes: Dashboard.page)))
        }
        // Who is asking: the dashboard shows it, and hides what the role cannot read.
        router.get("/api/v1/me") { _, context in
            guard let principal = context.principal else { return json(["error": "not signed in"], status: .unauthorized) }
            return json(["name": principal.name, "role": principal.role.rawValue, "credential": principal.credential.rawValue])
        }
        // 200 while the broker is connected, commits succeed and the stats round keeps up with its
        // interval; otherwise 503 with the reasons.
        router.get("/healthz") { _, _ in
            let report = health()
            var response = json(HealthBody(report))
            if !report.healthy { response.status = .serviceUnavailable }
            return response
        }
        router.get("/metrics") { _, _ in
            metrics.update(health())
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
        }
        router.get("/api/v1/fleet/summary") { request, _ in
            try await respond {
                let query = try Query(request, now: now())
                return json(try await store.summary(fleet: query.fleet, now: now()))
            }
        }
        router.get("/api/v1/fleet/daily") { request, _ in
            try await respond {
                let query = try Query(request, now: now())
                return json(try await store.daily(fleet: query.fleet, from: query.from, to: query.to))
            }
        }
        router.get("/api/v1/gateways") { request, _ in
            try await respond {
                let query = try Query(request, now: now())
                return json(try await store.gateways(fleet: query.fleet, search: query.search, now: now()))
            }
        }
        router.get("/api/v1/gateways/:gw") { request, context in
            try await respond {
                let query = try Query(request, now: now())
                let gateway = try gatewayParameter(context)
                guard let detail = try await store.gateway(fleet: query.fleet, id: gateway, now: now(), from: query.from, to: query.to)
                else { throw APIError(.notFound, "no gateway '\(gateway)' has reported to this aggregator") }
                return json(detail)
            }
        }
        router.get("/api/v1/gateways/:gw/sessions") { request, context in
            try await respond {
                let query = try Query(request, now: now())
                let gateway = try gatewayParameter(context)
                guard let sessions = try await store.sessions(fleet: query.fleet, gateway: gateway, from: query.from, to: query.to, limit: query.limit)
                else { throw APIError(.notFound, "no gateway '\(gateway)' has reported to this aggregator") }
                return json(sessions)
            }
        }
        return router
    }

    /// The body of `/healthz`.
    struct HealthBody: Encodable {
        var status: String
        var broker: String
        var reasons: [String]
        var lastCommitAgeS: Double
        var statsRoundAgeS: Double
        var lastStatsRoundS: Double?
        /// Since when the broker has been connected (or not), and the last reason it was not.
        var brokerSince: String
        var brokerLastError: String?

        init(_ report: IngestHealth.Report) {
            brokerSince = WireFormat.timestamp(report.brokerSince)
            brokerLastError = report.brokerLastError
            status = report.healthy ? "ok" : "unhealthy"
            broker = report.brokerConnected ? "connected" : "disconnected"
            reasons = report.reasons
            lastCommitAgeS = (report.lastCommitAgeSeconds * 1000).rounded() / 1000
            statsRoundAgeS = (report.statsRoundAgeSeconds * 1000).rounded() / 1000
            lastStatsRoundS = report.lastStatsRoundSeconds.map { ($0 * 1000).rounded() / 1000 }
        }
    }

    static func gatewayParameter(_ context: AggregatorRequestContext) throws -> String {
        let text = context.parameters.get("gw") ?? ""
        guard Identifier.isValid(text) else {
            throw APIError(.badRequest, "gateway id must be 1-64 of A-Z a-z 0-9 _ -")
        }
        return text
    }

    /// Turns an ``APIError`` into its JSON response; any other error is a 500 without details.
    static func respond(_ body: () async throws -> Response) async throws -> Response {
        do {
            return try await body()
        } catch let error as APIError {
            return json(["error": error.message], status: error.status)
        } catch {
            return json(["error": "the statistics store failed; see the aggregator's log"], status: .internalServerError)
        }
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(bytes: IngestService.encode(value))))
    }
}

/// A request refused with a status and one line saying what to fix.
struct APIError: Error {
    var status: HTTPResponse.Status
    var message: String
    init(_ status: HTTPResponse.Status, _ message: String) {
        self.status = status
        self.message = message
    }
}

/// The query parameters every endpoint shares, validated.
struct Query {
    var fleet: String?
    var from: Day
    var to: Day
    var search: String?
    var limit: Int

    init(_ request: Request, now: Date) throws {
        let parameters = request.uri.queryParameters
        func text(_ name: String) -> String? {
            parameters.get(name).flatMap { $0.isEmpty ? nil : $0 }
        }
        if let fleet = text("fleet") {
            guard Identifier.isValid(fleet) else { throw APIError(.badRequest, "fleet must be 1-64 of A-Z a-z 0-9 _ -") }
            self.fleet = fleet
        }
        let today = Day(now)
        let to = try text("to").map { try Self.day($0, name: "to") } ?? today
        let from = try text("from").map { try Self.day($0, name: "from") } ?? to.adding(-29)
        guard from <= to else { throw APIError(.badRequest, "from (\(from)) is after to (\(to)); swap them") }
        guard to.number - from.number < APIRouter.maxSpanDays else {
            throw APIError(.badRequest, "from..to spans \(to.number - from.number + 1) days; ask for at most \(APIRouter.maxSpanDays)")
        }
        self.from = from
        self.to = to
        if let search = text("q") {
            guard search.count <= 64 else { throw APIError(.badRequest, "q is longer than 64 characters") }
            self.search = search
        }
        if let limitText = text("limit") {
            guard let limit = Int(limitText), (1...1000).contains(limit) else {
                throw APIError(.badRequest, "limit must be a whole number from 1 to 1000")
            }
            self.limit = limit
        } else {
            limit = 100
        }
    }

    static func day(_ text: String, name: String) throws -> Day {
        guard let day = Day(parsing: text) else {
            throw APIError(.badRequest, "\(name) must be a date as YYYY-MM-DD (UTC), got '\(text.prefix(40))'")
        }
        return day
    }
}
