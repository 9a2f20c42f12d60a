@_spi(Testing) import Aggregator
import Foundation
import SpectraTesting
import Testing

/// The two statistics stores, for behaviour tests that run against both.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// A statistics store as the behaviour tests look into it.
protocol InspectableStore: StatsStore {
    func storedDedupeKeys() async throws -> Int
    func streamCount() async throws -> Int
    func sessionRows() async throws -> Int
}

extension SQLiteStatsStore: InspectableStore {
    func streamCount() async throws -> Int { try await streamCounts().stored }
}

extension PostgresStatsStore: InspectableStore {}

/// Where one test keeps its store: a SQLite file in a temporary folder, or a database on a
/// PostgreSQL server of its own. ``open(gapHorizonSeconds:silentAfterSeconds:newEpochsPerGatewayPerDay:)``
/// may be called again to reopen the same data, as a restarted aggregator would.
final class StoreUnderTest: Sendable {
    let kind: StoreKind
    let folder: URL
    let server: PostgresServer?

    init(_ kind: StoreKind) async throws {
        self.kind = kind
        folder = try TestEnvironment.temporaryDirectory("store-\(kind)")
        server = kind == .postgres ? try await PostgresServer() : nil
    }

    deinit { try? FileManager.default.removeItem(at: folder) }

    func open(
        gapHorizonSeconds: Double = 7 * 86_400, silentAfterSeconds: Double = 600, newEpochsPerGatewayPerDay: Int = 16
    ) async throws -> any InspectableStore {
        switch kind {
        case .sqlite:
            try SQLiteStatsStore(
                path: folder.appendingPathComponent("stats.sqlite").path, gapHorizonSeconds: gapHorizonSeconds,
                silentAfterSeconds: silentAfterSeconds, newEpochsPerGatewayPerDay: newEpochsPerGatewayPerDay)
        case .postgres:
            try await PostgresStatsStore(
                try PostgresDatabase(url: (server?.url ?? "") + "?sslmode=disable", password: nil), gapHorizonSeconds: gapHorizonSeconds,
                silentAfterSeconds: silentAfterSeconds, newEpochsPerGatewayPerDay: newEpochsPerGatewayPerDay)
        }
    }
}
