import Aggregator
import SpectraConfig
import Foundation
import SpectraTesting
import Testing

@Suite("Aggregator HTTP API", .serialized)
struct APITests {
    @Test("bad query parameters get a 400 that says what to fix; unknown gateways a 404; health and metrics answer")
    func validation() async throws {
        let broker = try await MosquittoBroker()
        let folder = try TestEnvironment.temporaryDirectory("api")
        defer { try? FileManager.default.removeItem(at: folder) }
        let aggregator = try await RunningAggregator(broker: broker, database: folder.appendingPathComponent("agg.sqlite").path)

        let cases: [(String, Int, String)] = [
            ("/api/v1/fleet/daily?from=2026-13-01", 400, "from must be a date as YYYY-MM-DD"),
            ("/api/v1/fleet/daily?from=2026-02-30", 400, "from must be a date"),
            ("/api/v1/fleet/daily?to=yesterday", 400, "to must be a date"),
            ("/api/v1/fleet/daily?from=2026-11-20&to=2026-11-10", 400, "is after to"),
            ("/api/v1/fleet/daily?from=2020-01-01&to=2026-01-01", 400, "at most 366"),
            ("/api/v1/fleet/summary?fleet=no%2Bway", 400, "fleet must be"),
            ("/api/v1/gateways/gw-a/sessions?limit=0", 400, "limit must be"),
            ("/api/v1/gateways/nobody", 404, "no gateway 'nobody'"),
            ("/api/v1/gateways/nobody/sessions", 404, "no gateway 'nobody'"),
        ]
        for (path, status, message) in cases {
            let (got, body) = try await aggregator.get(path)
            let text = String(decoding: body, as: UTF8.self)
            #expect(got == status, "\(path)")
            #expect(text.contains(message), "\(path) says \(text)")
        }
        let daily = try await aggregator.json([DailyStats].self, "/api/v1/fleet/daily?from=2026-11-01&to=2026-11-27")
        #expect(daily.count == 27)
        #expect(daily.first?.day.description == "2026-11-01")
        #expect(daily.allSatisfy { $0.sessions.started == 0 })
        let defaultWindow = try await aggregator.json([DailyStats].self, "/api/v1/fleet/daily")
        #expect(defaultWindow.count == 30)
        #expect(defaultWindow.last?.day == today)

        let (healthStatus, health) = try await aggregator.get("/healthz")
        #expect(healthStatus == 200)
        #expect(String(decoding: health, as: UTF8.self).contains(#""broker":"connected""#))
        let (metricsStatus, metrics) = try await aggregator.get("/metrics")
        #expect(metricsStatus == 200)
        #expect(String(decoding: metrics, as: UTF8.self).contains("spectra_aggregator_broker_connected 1"))

        await aggregator.stop()
        await broker.stop()
    }
}

extension APITests {
    @Test("an empty shareGroup subscribes directly; a bad one is refused with the key named")
    func shareGroupSetting() async throws {
        func load(_ value: String) async throws -> AggregatorConfiguration {
            let fields = try await ConfigLoader(filePath: nil, overrides: ["shareGroup": value], environment: [:])
                .load(knownKeys: AggregatorConfiguration.keys)
            return try AggregatorConfiguration(fields: fields)
        }
        #expect(try await load("").shareGroup == "")
        #expect(try await load("east").shareGroup == "east")
        do {
            _ = try await load("a/b")
            Issue.record("a/b was accepted")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("shareGroup"))
        }
    }
}
