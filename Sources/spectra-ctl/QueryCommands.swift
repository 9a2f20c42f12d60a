import ArgumentParser
import FleetControl
import Foundation
import SpectraConfig
import SpectraProtocol
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Where the aggregator's API is: --aggregator, else aggregator.url from the environment
/// (SPECTRA_AGGREGATOR_URL) or --config, else http://127.0.0.1:8080. The API token is
/// aggregator.token, from the environment (SPECTRA_AGGREGATOR_TOKEN) or --config: never a
/// command-line argument, which every user of the machine can read.
struct AggregatorOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The aggregator's base URL.", valueName: "url")) var aggregator: String?
    @Option(help: ArgumentHelp("A YAML file with aggregator.url.", valueName: "file")) var config: String?
    @Option(help: ArgumentHelp("Only this fleet.", valueName: "name")) var fleet: String?
    @Flag(help: "Print the API's JSON instead of a table.") var json = false

    func get(_ path: String, query: [String: String] = [:]) async throws -> Data {
        let fields = try? await ConnectionOptions.parse(config.map { ["--config", $0] } ?? []).fields()
        let base = aggregator ?? fields?.optionalString("aggregator.url")
        let token = fields?.optionalString("aggregator.token")
        var components = URLComponents(string: (base ?? "http://127.0.0.1:8080") + path)
        var items = query.map { URLQueryItem(name: $0.key, value: $0.value) }
        if let fleet { items.append(URLQueryItem(name: "fleet", value: fleet)) }
        if !items.isEmpty { components?.queryItems = items.sorted { $0.name < $1.name } }
        guard let url = components?.url, ["http", "https"].contains(url.scheme ?? "") else {
            throw UsageFailure("--aggregator must be an http(s) URL like http://127.0.0.1:8080")
        }
        let data: Data
        let response: URLResponse
        do {
            var request = URLRequest(url: url)
            if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
            (data, response) = try await URLSession.shared.data(for: request)
        } catch {
            throw UsageFailure("cannot reach the aggregator at \(url.absoluteString): \(error.localizedDescription)")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard status == 200 else {
            let message = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["error"] as? String
            let hint = status == 401 && token == nil
                ? " (set SPECTRA_AGGREGATOR_TOKEN, or aggregator.token in --config, to a token from spectra-aggregator tokens create)" : ""
            throw UsageFailure("the aggregator answered \(status): \(message ?? String(decoding: data.prefix(200), as: UTF8.self))\(hint)")
        }
        return data
    }

    func output(_ data: Data, table: (Any) -> [[String]]) throws {
        if json {
            print(String(decoding: data, as: UTF8.self))
            return
        }
        let object = try JSONSerialization.jsonObject(with: data)
        printTable(table(object))
    }
}

func text(_ value: Any?) -> String {
    switch value {
    case nil, is NSNull: "-"
    case let number as Double where number != number.rounded(): String(format: "%.2f", number)
    case let value?: "\(value)"
    }
}

func percent(_ value: Any?) -> String {
    guard let number = value as? Double else { return "-" }
    return String(format: "%.1f%%", number * 100)
}

struct Gateways: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List gateways from the aggregator.", discussion: "Example: spectra-ctl gateways --fleet demo --search gw-00")
    @OptionGroup var options: AggregatorOptions
    @Option(help: ArgumentHelp("Only ids containing this.", valueName: "text")) var search: String?

    func run() async throws {
        let data = try await options.get("/api/v1/gateways", query: search.map { ["q": $0] } ?? [:])
        try options.output(data) { object in
            var rows = [["GATEWAY", "FLEET", "ONLINE", "FIRMWARE", "SESSIONS", "COMPLETED", "PHASE", "ADHERENCE", "BACKLOG", "COMPLETE"]]
            for gateway in object as? [[String: Any]] ?? [] {
                let sessions = gateway["sessions"] as? [String: Any]
                rows.append([
                    text(gateway["gateway"]), text(gateway["fleet"]), (gateway["online"] as? Bool) == true ? "yes" : "no",
                    text(gateway["firmware"]), text(sessions?["started"]), text(sessions?["completed"]), text(gateway["phase"]),
                    percent(gateway["adherenceRatio"]), text((gateway["backlog"] as? [String: Any])?["messages"]),
                    percent((gateway["completeness"] as? [String: Any])?["ratio"]),
                ])
            }
            return rows
        }
    }
}

struct Stats: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fleet summary and per-day figures from the aggregator.",
        discussion: "Example: spectra-ctl stats --fleet demo --from 2026-11-01 --to 2026-11-27")
    @OptionGroup var options: AggregatorOptions
    @Option(help: ArgumentHelp("First day, YYYY-MM-DD (default: 29 days before --to).", valueName: "day")) var from: String?
    @Option(help: ArgumentHelp("Last day, YYYY-MM-DD (default: today, UTC).", valueName: "day")) var to: String?

    func run() async throws {
        var query: [String: String] = [:]
        query["from"] = from
        query["to"] = to
        let summary = try await options.get("/api/v1/fleet/summary")
        let daily = try await options.get("/api/v1/fleet/daily", query: query)
        if options.json {
            print(#"{"summary":\#(String(decoding: summary, as: UTF8.self)),"daily":\#(String(decoding: daily, as: UTF8.self))}"#)
            return
        }
        let s = try JSONSerialization.jsonObject(with: summary) as? [String: Any] ?? [:]
        let sessions = s["sessions"] as? [String: Any]
        print("gateways \(text(s["gateways"])), online \(text(s["online"])) (silent \(text(s["silent"]))), active today \(text(s["activeToday"]))")
        print("sessions \(text(sessions?["started"])): completed \(text(sessions?["completed"])), aborted \(text(sessions?["aborted"])), completion \(percent(sessions?["completionRate"])), safety trips \(text(sessions?["safetyTrips"]))")
        print("adherence \(percent(s["adherenceRatio"])), completeness \(percent((s["completeness"] as? [String: Any])?["ratio"])), backlog \(text((s["backlog"] as? [String: Any])?["messages"])) messages")
        var rows = [["DAY", "ACTIVE", "STARTED", "COMPLETED", "ABORTED", "L1 MIN", "L2 MIN", "L3 MIN"]]
        for day in try JSONSerialization.jsonObject(with: daily) as? [[String: Any]] ?? [] {
            let totals = day["sessions"] as? [String: Any]
            let minutes = totals?["levelMinutes"] as? [String: Any]
            rows.append([text(day["day"]), text(day["activeGateways"]), text(totals?["started"]), text(totals?["completed"]), text(totals?["aborted"]),
                         text(minutes?["1"]), text(minutes?["2"]), text(minutes?["3"])])
        }
        printTable(rows)
    }
}

struct Sessions: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A gateway's sessions from the aggregator.", discussion: "Example: spectra-ctl sessions gw-0001 --from 2026-11-01")
    @OptionGroup var options: AggregatorOptions
    @Argument(help: ArgumentHelp("The gateway.", valueName: "gateway")) var gateway: String
    @Option(help: ArgumentHelp("First day, YYYY-MM-DD.", valueName: "day")) var from: String?
    @Option(help: ArgumentHelp("Last day, YYYY-MM-DD.", valueName: "day")) var to: String?
    @Option(help: ArgumentHelp("At most this many (1-1000).", valueName: "n")) var limit = 100

    func run() async throws {
        guard Identifier.isValid(gateway) else { throw UsageFailure("gateway id must be 1-64 of A-Z a-z 0-9 _ -") }
        var query = ["limit": "\(limit)"]
        query["from"] = from
        query["to"] = to
        let data = try await options.get("/api/v1/gateways/\(gateway)/sessions", query: query)
        try options.output(data) { object in
            var rows = [["SESSION", "DAY", "OUTCOME", "REASON", "LEVEL", "STIMULATING S", "PAUSES", "TRIPS", "REGIMEN"]]
            for session in object as? [[String: Any]] ?? [] {
                rows.append([
                    text(session["sessionId"]), text(session["day"]), text(session["outcome"]), text(session["reason"]), text(session["level"]),
                    text(session["stimulatingS"]), text(session["pauses"]), text(session["safetyTrips"]),
                    "\(text(session["regimenPhase"])) \(text(session["regimenDay"]))",
                ])
            }
            return rows
        }
    }
}
