import Aggregator
import ArgumentParser
import Foundation
import Logging
import SpectraConfig

@main
struct SpectraAggregatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-aggregator",
        abstract: "Collects fleet usage statistics from the broker and serves them over HTTP.",
        discussion: """
            Configuration precedence: --set KEY=VALUE > SPECTRA_* environment > --config FILE > defaults.

            Examples:
              spectra-aggregator run --config Config/aggregator.yaml
              spectra-aggregator config show --config Config/aggregator.yaml --set http.port=9090
            """,
        subcommands: [Run.self, Retire.self, ConfigGroup.self]
    )

    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Collect statistics and serve the API and dashboard until SIGTERM or SIGINT.",
            discussion: "Example: spectra-aggregator run --config Config/aggregator.yaml")

        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let configuration = await options.aggregatorConfiguration()
            let logger = Logger(label: "spectra.aggregator")
            let server: AggregatorServer
            do {
                server = try AggregatorServer(configuration: configuration, logger: logger)
            } catch {
                FileHandle.standardError.write(Data("spectra-aggregator: cannot open the database \(configuration.databasePath): \(error)\n".utf8))
                throw ExitCode(1)
            }
            do {
                try await server.run()
            } catch let failure as IngestFailure {
                FileHandle.standardError.write(Data("spectra-aggregator: \(failure.message)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct Retire: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Retire a stopped instance for good: ingest what its broker session holds, then end the session.",
            discussion: """
                An instance's persistent session outlives it by 7 days: the broker keeps queueing
                messages for it and, in a share group, keeps giving it its share, which nobody then
                reads. Stop the instance first, then run this with the same configuration (its
                clientId, broker and database): it resumes the session, unsubscribes, ingests what
                the session held and ends the session.

                Example: spectra-aggregator retire --config /etc/spectra/aggregator-2.yaml
                """)

        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let configuration = await options.aggregatorConfiguration()
            var logger = Logger(label: "spectra.aggregator")
            logger.logLevel = .warning
            do {
                let outcome = try await Retirement.run(configuration: configuration, logger: logger)
                print("retired \(configuration.clientID): its session held \(outcome.received) messages, \(outcome.envelopes) envelopes written to \(configuration.databasePath); the broker has no session for it now")
            } catch {
                FileHandle.standardError.write(Data("spectra-aggregator: retiring \(configuration.clientID) failed: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct ConfigGroup: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "config", abstract: "Inspect the aggregator's configuration.", subcommands: [Show.self])
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration after every layer is applied.",
            discussion: "Example: spectra-aggregator config show --config Config/aggregator.yaml")

        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let configuration = await options.aggregatorConfiguration()
            print("fleets: \(configuration.fleets.map(\.rawValue).joined(separator: ","))")
            print("mqtt.url: \(configuration.broker.url)")
            print("mqtt.protocol: \(configuration.broker.protocolVersion.rawValue)")
            print("clientId: \(configuration.clientID)")
            print("shareGroup: \(configuration.shareGroup)")
            print("database: \(configuration.databasePath)")
            print("http: \(configuration.httpHost):\(configuration.httpPort)")
            print("stats.publishIntervalS: \(configuration.publishIntervalSeconds)")
            print("retention.days: \(configuration.retentionDays)")
            print("presence.silentAfterS: \(configuration.silentAfterSeconds)")
        }
    }
}

extension ConfigOptions {
    /// The aggregator's configuration, or one clear line and exit status 2.
    func aggregatorConfiguration() async -> AggregatorConfiguration {
        let fields = await load(knownKeys: AggregatorConfiguration.keys)
        do {
            return try AggregatorConfiguration(fields: fields)
        } catch {
            ConfigOptions.exit(with: error)
        }
    }
}
