import Foundation
import SpectraTesting
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// API tokens for the aggregators the tests start, made the way an operator makes them.
enum AggregatorAccess {
    /// Runs `spectra-aggregator tokens create` on `database` and returns the token it printed.
    static func token(database: String, role: String = "operator", name: String = "tests-\(UUID().uuidString.prefix(8))") async throws -> String {
        let run = try await ChildProcess.run(
            TestEnvironment.product("spectra-aggregator"), ["tokens", "create", name, "--role", role, "--set", "database=\(database)"])
        let token = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        guard run.status == 0, token.hasPrefix("spectra_") else {
            throw TestEnvironmentError("tokens create failed (\(String(describing: run.status))): \(run.stderr)")
        }
        return token
    }

    /// A GET sending `token` as a bearer token (none when nil): the body and the status.
    static func get(_ url: String, token: String?) async throws -> (data: Data, status: Int) {
        guard let address = URL(string: url) else { throw TestEnvironmentError("not a URL: \(url)") }
        var request = URLRequest(url: address)
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return (data, (response as? HTTPURLResponse)?.statusCode ?? 0)
    }
}
