import Aggregator
import ArgumentParser
import Foundation
import Logging
import MQTT
import SpectraConfig
import SpectraProtocol

@main
struct SpectraAggregatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spectra-aggregator",
        abstract: "Collects fleet usage statistics from the broker and serves them over HTTP.",
        discussion: """
            Configuration precedence: --set KEY=VALUE > SPECTRA_* environment > --config FILE > defaults.

            Examples:
              spectra-aggregator users add alice --role operator --config Config/aggregator.yaml
              spectra-aggregator run --config Config/aggregator.yaml
              spectra-aggregator tokens create prometheus --role metrics --config Config/aggregator.yaml
              spectra-aggregator config show --config Config/aggregator.yaml --set http.port=9090
            """,
        version: SpectraVersion.current,
        subcommands: [Run.self, Users.self, Tokens.self, Retire.self, Forget.self, ConfigGroup.self]
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
                server = try await AggregatorServer.open(configuration: configuration, logger: logger)
            } catch let error as TLSCertificateSource.LoadError {
                FileHandle.standardError.write(Data("spectra-aggregator: \(error.description)\n".utf8))
                throw ExitCode(1)
            } catch let error as DatabaseLock.InUse {
                FileHandle.standardError.write(Data("spectra-aggregator: \(error)\n".utf8))
                throw ExitCode(1)
            } catch let failure as StoreFailure {
                FileHandle.standardError.write(Data("spectra-aggregator: cannot open the database: \(failure.reason)\n".utf8))
                throw ExitCode(1)
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

    struct Forget: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Remove one gateway's personal records; the fleet's totals stay.",
            discussion: """
                Deletes the gateway's sessions, raw events, presence, state, refusals and dedupe
                state from the aggregator's database, moves its daily counts into an anonymous
                bucket (so fleet totals do not change), clears its retained stats/gw/GATEWAY on
                the broker (and its retained status and state where the broker lets it), and
                ignores its older presence from then on. Stop the aggregator first, and take the
                gateway out of the fleet: messages it sent again would be counted anew.

                Example: spectra-aggregator forget gw-0042 --fleet demo --config /etc/spectra/aggregator.yaml
                """)

        @Argument(help: "The gateway id.") var gateway: String
        @Option(help: ArgumentHelp("Its fleet.", valueName: "name")) var fleet = "demo"
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            guard let gatewayID = try? Identifier(gateway, field: "gateway"), let fleetID = try? Identifier(fleet, field: "fleet") else {
                FileHandle.standardError.write(Data("spectra-aggregator: gateway and fleet must be 1-64 of A-Z a-z 0-9 _ -\n".utf8))
                throw ExitCode(2)
            }
            let configuration = await options.aggregatorConfiguration()
            let forgotten: Forgotten
            do {
                if let database = configuration.postgres {
                    let store = try await PostgresStatsStore(database)
                    defer { store.shutdown() }
                    forgotten = try await store.forget(fleet: fleetID.rawValue, gateway: gatewayID.rawValue)
                } else {
                    let lock = try DatabaseLock.acquire(databasePath: configuration.databasePath)
                    defer { withExtendedLifetime(lock) {} }
                    let store = try SQLiteStatsStore(path: configuration.databasePath)
                    forgotten = try await store.forget(fleet: fleetID.rawValue, gateway: gatewayID.rawValue)
                }
            } catch {
                FileHandle.standardError.write(Data("spectra-aggregator: cannot forget \(gatewayID) in \(configuration.databasePath): \(error) (is the aggregator still running?)\n".utf8))
                throw ExitCode(1)
            }
            guard forgotten.known else {
                FileHandle.standardError.write(Data("spectra-aggregator: \(fleetID)/\(gatewayID) is not in \(configuration.databasePath); nothing removed\n".utf8))
                throw ExitCode(1)
            }
            print("forgot \(fleetID)/\(gatewayID): \(forgotten.sessions) sessions and \(forgotten.events) raw events removed; its daily counts stay in the fleet's totals, anonymously")
            // Its retained per-gateway stats on the broker go too.
            let client = MQTTClient(configuration.broker.client(id: "\(configuration.clientID)-forget"))
            do {
                _ = try await client.connect()
                try await client.publish(OutgoingMessage(topic: Topic.statsGateway(fleet: fleetID, gateway: gatewayID).path, payload: [], retain: true))
                print("cleared the retained \(Topic.statsGateway(fleet: fleetID, gateway: gatewayID).path)")
                // The gateway's own retained presence too, where this identity may (the
                // aggregator ignores it from now on either way).
                for topic in [Topic.status(fleet: fleetID, gateway: gatewayID), Topic.state(fleet: fleetID, gateway: gatewayID)] {
                    do {
                        try await client.publish(OutgoingMessage(topic: topic.path, payload: [], retain: true))
                        print("cleared the retained \(topic.path)")
                    } catch {
                        print("left the retained \(topic.path) (\(error)); the aggregator ignores it")
                    }
                }
                await client.disconnect()
            } catch {
                await client.disconnect()
                FileHandle.standardError.write(Data("spectra-aggregator: could not clear the retained stats of \(gatewayID) on \(configuration.broker.url): \(error); clear it with: mosquitto_pub -r -n -t \(Topic.statsGateway(fleet: fleetID, gateway: gatewayID).path)\n".utf8))
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
            print("http.tls: \(configuration.tlsCertificatePath.map { "\($0) (key \(configuration.tlsKeyPath ?? "-"))" } ?? "off")")
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
