import Aggregator
import ArgumentParser
import Foundation
import SpectraConfig

#if canImport(Glibc)
import Glibc
#endif

/// `spectra-aggregator users …`: dashboard accounts, in the aggregator's database.
struct Users: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the accounts that sign in to the dashboard and API.",
        discussion: """
            Roles: viewer (fleet figures and the dashboard), operator (also per-gateway detail and
            session history, and /metrics), metrics (/metrics only). Passwords are 8 to 72 bytes,
            stored as bcrypt. They are read from the terminal (asked twice), or from the first line
            of standard input when it is not a terminal or with --password-stdin.

            Examples:
              spectra-aggregator users add alice --role operator --config /etc/spectra/aggregator.yaml
              printf '%s\\n' "$PASSWORD" | spectra-aggregator users add grafana --role viewer --password-stdin
            """,
        subcommands: [Add.self, Remove.self, List.self, Passwd.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create an account.")
        @Argument(help: "The account name (1-64 of A-Z a-z 0-9 _ . @ -).") var name: String
        @Option(help: ArgumentHelp("viewer, operator or metrics.", valueName: "role")) var role: String
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let role = try parseRole(role)
            guard AccessStore.isValidName(name) else {
                throw ValidationError("'\(name.prefix(80))' is not a valid account name: use 1-64 of A-Z a-z 0-9 _ . @ -")
            }
            let access = await openAccess(options)
            let password = try readPassword(for: name, fromStandardInput: passwordStdin)
            try await refuseOnFailure { try await access.addUser(name, role: role, password: password) }
            print("created \(name) (\(role.rawValue)); sign in to the dashboard at the aggregator's address")
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete an account and end its sign-ins.")
        @Argument(help: "The account name.") var name: String
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let access = await openAccess(options)
            try await refuseOnFailure { try await access.removeUser(name) }
            print("removed \(name); its sign-ins have ended")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the accounts.")
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let access = await openAccess(options)
            let users = try await refuseOnFailure { try await access.users() }
            guard !users.isEmpty else {
                print("no accounts yet: create one with spectra-aggregator users add NAME --role operator")
                return
            }
            printTable([["NAME", "ROLE", "CREATED", "LAST SIGN-IN"]] + users.map {
                [$0.name, $0.role.rawValue, timestamp($0.createdAt), $0.lastLoginAt.map(timestamp) ?? "never"]
            })
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Set an account's password and end its sign-ins.")
        @Argument(help: "The account name.") var name: String
        @Flag(help: "Read the password from the first line of standard input.") var passwordStdin = false
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let access = await openAccess(options)
            let password = try readPassword(for: name, fromStandardInput: passwordStdin)
            try await refuseOnFailure { try await access.setPassword(name, password: password) }
            print("changed the password of \(name); its sign-ins have ended")
        }
    }
}

/// `spectra-aggregator tokens …`: API tokens for scripts, Prometheus and spectra-ctl.
struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage API tokens (sent as Authorization: Bearer TOKEN).",
        discussion: """
            A token is printed once, on standard output, when it is created; only its SHA-256 is
            stored. Give it the least role that does the job: metrics for a Prometheus scrape,
            viewer for fleet figures, operator for per-gateway detail (spectra-ctl gateways).

            Examples:
              spectra-aggregator tokens create prometheus --role metrics --expires 365d
              spectra-aggregator tokens revoke prometheus
            """,
        subcommands: [Create.self, Revoke.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a token and print it (once).")
        @Argument(help: "A name for the token (1-64 of A-Z a-z 0-9 _ . @ -).") var name: String
        @Option(help: ArgumentHelp("viewer, operator or metrics.", valueName: "role")) var role: String
        @Option(help: ArgumentHelp("How long it is valid, like 90d or 12h (default: until revoked).", valueName: "duration"))
        var expires: String?
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let role = try parseRole(role)
            var expiresAt: Date?
            if let expires {
                guard let seconds = DurationText.seconds(expires), seconds <= 3650 * 86_400 else {
                    throw ValidationError("--expires must be a duration like 12h or 90d, at most 3650d; got '\(expires)'")
                }
                expiresAt = Date().addingTimeInterval(seconds)
            }
            let access = await openAccess(options)
            let (token, secret) = try await refuseOnFailure { try await access.createToken(name, role: role, expiresAt: expiresAt) }
            print(secret)
            let expiry = token.expiresAt.map { "expires \(timestamp($0))" } ?? "valid until revoked"
            FileHandle.standardError.write(Data("""
                created token \(token.name) (\(role.rawValue), \(expiry)); it is shown this once: store it now.
                send it as: Authorization: Bearer TOKEN

                """.utf8))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token (it is refused from the next request on).")
        @Argument(help: "The token's name or id.") var name: String
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let access = await openAccess(options)
            let token = try await refuseOnFailure { try await access.revokeToken(name) }
            print("revoked token \(token.name) (\(token.id))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the tokens (never their secrets).")
        @OptionGroup var options: ConfigOptions

        func run() async throws {
            let access = await openAccess(options)
            let tokens = try await refuseOnFailure { try await access.tokens() }
            guard !tokens.isEmpty else {
                print("no tokens: create one with spectra-aggregator tokens create NAME --role metrics")
                return
            }
            let now = Date()
            printTable([["NAME", "ID", "ROLE", "CREATED", "EXPIRES", "LAST USED"]] + tokens.map {
                [
                    $0.name, $0.id, $0.role.rawValue, timestamp($0.createdAt),
                    $0.expiresAt.map { $0 <= now ? "expired \(timestamp($0))" : timestamp($0) } ?? "never",
                    $0.lastUsedAt.map(timestamp) ?? "never",
                ]
            })
        }
    }
}

private func parseRole(_ text: String) throws -> Role {
    guard let role = Role(rawValue: text) else { throw ValidationError("--role must be one of \(Role.names); got '\(text)'") }
    return role
}

private func openAccess(_ options: ConfigOptions) async -> AccessStore {
    let configuration = await options.aggregatorConfiguration()
    do {
        if let database = configuration.postgres { return AccessStore(try await PostgresStatsStore(database)) }
        return try AccessStore(databasePath: configuration.databasePath)
    } catch let failure as StoreFailure {
        FileHandle.standardError.write(Data("spectra-aggregator: cannot open the database: \(failure.reason)\n".utf8))
        Foundation.exit(1)
    } catch {
        FileHandle.standardError.write(Data("spectra-aggregator: cannot open the database \(configuration.databasePath): \(error)\n".utf8))
        Foundation.exit(1)
    }
}

/// Runs an administration step; a refusal or database error is one line on stderr, exit 1.
private func refuseOnFailure<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch {
        FileHandle.standardError.write(Data("spectra-aggregator: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

/// The password: from standard input (its first line) when asked or when it is not a
/// terminal, else typed twice at the terminal without echo.
private func readPassword(for name: String, fromStandardInput: Bool) throws -> String {
    if fromStandardInput || isatty(STDIN_FILENO) == 0 {
        guard let line = readLine(strippingNewline: true), !line.isEmpty else {
            throw ValidationError("no password on standard input: give it as its first line")
        }
        return line
    }
    guard let first = getpass("Password for \(name): ").map({ String(cString: $0) }),
          let second = getpass("Again: ").map({ String(cString: $0) })
    else { throw ValidationError("cannot read a password from the terminal; use --password-stdin") }
    guard first == second else { throw ValidationError("the two passwords differ; nothing changed") }
    return first
}

private func timestamp(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.string(from: date)
}
