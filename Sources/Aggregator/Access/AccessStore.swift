import Crypto
import Foundation
import HummingbirdBcrypt
import NIOPosix

/// Accounts, API tokens and dashboard sessions, in the aggregator's database.
///
/// No secret is stored in clear: passwords as bcrypt (cost ``bcryptCost``, salted), tokens and
/// session ids as SHA-256 of 256 random bits (a slow hash adds nothing to a secret that cannot
/// be guessed, and every API request checks one). A token is shown once, when it is created.
public final class AccessStore: Sendable {
    let records: any AccessRecords
    /// bcrypt's work factor: about a quarter of a second per check on a gateway-class CPU.
    static let bcryptCost: UInt8 = 12
    /// How long a dashboard sign-in lasts.
    public static let sessionSeconds: Double = 12 * 3600
    /// Passwords are 8 to 72 bytes (bcrypt reads no further than 72).
    public static let passwordBytes = 8...72
    /// How often a token's `lastUsedAt` is written (not at every request).
    static let lastUsedResolution: Double = 60

    init(records: any AccessRecords) {
        self.records = records
    }

    /// Opens the access tables of the aggregator's database at `path` (created and migrated
    /// as the aggregator would).
    public convenience init(databasePath path: String) throws {
        let store = try SQLiteStatsStore(path: path)
        self.init(records: SQLiteAccessRecords(pool: store.pool))
    }

    /// The access tables of a PostgreSQL statistics database, shared by every instance.
    public convenience init(_ store: PostgresStatsStore) {
        self.init(records: PostgresAccessRecords(store: store))
    }

    /// Why an administration command refused.
    public struct Refusal: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    // MARK: Accounts

    public struct Account: Sendable, Equatable {
        public var name: String
        public var role: Role
        public var createdAt: Date
        public var lastLoginAt: Date?
    }

    /// Account and token names: 1-64 of A-Z a-z 0-9 _ . @ -, starting with a letter or digit.
    public static func isValidName(_ name: String) -> Bool {
        func alphanumeric(_ scalar: Unicode.Scalar) -> Bool {
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
        }
        guard (1...64).contains(name.unicodeScalars.count), let first = name.unicodeScalars.first, alphanumeric(first) else { return false }
        return name.unicodeScalars.allSatisfy { alphanumeric($0) || "_.@-".unicodeScalars.contains($0) }
    }

    static func checkPassword(_ password: String) throws {
        guard passwordBytes.contains(password.utf8.count) else {
            throw Refusal("a password must be \(passwordBytes.lowerBound) to \(passwordBytes.upperBound) bytes long (got \(password.utf8.count))")
        }
    }

    public func addUser(_ name: String, role: Role, password: String) async throws {
        guard Self.isValidName(name) else { throw Refusal("'\(name.prefix(80))' is not a valid account name: use 1-64 of A-Z a-z 0-9 _ . @ -") }
        try Self.checkPassword(password)
        let hash = await Self.bcrypt(password)
        guard try await records.insertAccount(name, role: role, passwordHash: hash, now: Date()) else {
            throw Refusal("an account named '\(name)' exists already (change its password with: users passwd \(name))")
        }
    }

    /// Removes an account and signs it out everywhere.
    public func removeUser(_ name: String) async throws {
        guard try await records.deleteAccount(name) else { throw Refusal("no account named '\(name)'") }
    }

    /// Sets a new password and signs the account out everywhere.
    public func setPassword(_ name: String, password: String) async throws {
        try Self.checkPassword(password)
        let hash = await Self.bcrypt(password)
        guard try await records.setPasswordHash(name, hash, now: Date()) else { throw Refusal("no account named '\(name)'") }
    }

    public func users() async throws -> [Account] {
        try await records.accounts()
    }

    /// Whether any account or unexpired token exists (with none, nothing but `/healthz` is served).
    public func hasCredentials() async throws -> Bool {
        try await records.hasCredentials(now: Date())
    }

    // MARK: Dashboard sessions

    /// Checks a password; on success opens a session and returns its id (the cookie's value)
    /// and the account's role. Unknown accounts take as long as known ones.
    public func signIn(_ name: String, password: String, now: Date = Date()) async throws -> (session: String, principal: Principal)? {
        let account = try await records.credentials(of: name)
        let hash = account?.passwordHash ?? Self.decoyHash
        let matches = await Self.verify(password, hash: hash)
        guard let account, matches, let role = Role(rawValue: account.role) else { return nil }
        let session = Self.randomSecret()
        try await records.openSession(Self.digest(session), account: name, now: now, expiresAt: now.addingTimeInterval(Self.sessionSeconds))
        return (session, Principal(name: name, role: role, credential: .session))
    }

    /// The account a session cookie belongs to, while the session lasts.
    public func session(_ id: String, now: Date = Date()) async throws -> Principal? {
        guard id.utf8.count <= 128 else { return nil }
        guard let (name, roleName) = try await records.sessionAccount(Self.digest(id), now: now), let role = Role(rawValue: roleName)
        else { return nil }
        return Principal(name: name, role: role, credential: .session)
    }

    public func signOut(_ id: String) async throws {
        guard id.utf8.count <= 128 else { return }
        try await records.deleteSession(Self.digest(id))
    }

    // MARK: API tokens

    public struct Token: Sendable, Equatable {
        public var id: String
        public var name: String
        public var role: Role
        public var createdAt: Date
        public var expiresAt: Date?
        public var lastUsedAt: Date?
    }

    /// Tokens read `spectra_<id>_<secret>`: the id finds the row, the secret's SHA-256 must match.
    static let tokenPrefix = "spectra_"

    /// Creates a token; the returned text is the only time its secret exists outside the caller.
    public func createToken(_ name: String, role: Role, expiresAt: Date?) async throws -> (token: Token, secret: String) {
        guard Self.isValidName(name) else { throw Refusal("'\(name.prefix(80))' is not a valid token name: use 1-64 of A-Z a-z 0-9 _ . @ -") }
        let id = (0..<8).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        let secret = Self.randomSecret()
        let now = Date()
        let token = Token(id: id, name: name, role: role, createdAt: now, expiresAt: expiresAt)
        guard try await records.insertToken(token, secretHash: Self.digest(secret)) else {
            throw Refusal("a token named '\(name)' exists already (revoke it first, or pick another name)")
        }
        return (token, "\(Self.tokenPrefix)\(id)_\(secret)")
    }

    /// Revokes a token by its name or id.
    public func revokeToken(_ nameOrID: String) async throws -> Token {
        guard let token = try await records.deleteToken(nameOrID) else {
            throw Refusal("no token named '\(nameOrID.prefix(80))' (list them with: tokens list)")
        }
        return token
    }

    public func tokens() async throws -> [Token] {
        try await records.tokens()
    }

    /// Why a bearer token was refused.
    public enum TokenProblem: Error, Equatable {
        case malformed, unknown, expired
    }

    /// The token's name and role, or why it is refused.
    public func authenticate(bearer text: String, now: Date = Date()) async throws -> Result<Principal, TokenProblem> {
        guard text.hasPrefix(Self.tokenPrefix), text.utf8.count <= 128 else { return .failure(.malformed) }
        let parts = text.dropFirst(Self.tokenPrefix.count).split(separator: "_", maxSplits: 1)
        guard parts.count == 2 else { return .failure(.malformed) }
        let id = String(parts[0]), secret = String(parts[1])
        guard let (stored, token) = try await records.token(id: id) else { return .failure(.unknown) }
        guard Self.constantTimeEqual(stored, Self.digest(secret)) else { return .failure(.unknown) }
        if let expiresAt = token.expiresAt, expiresAt <= now { return .failure(.expired) }
        if (token.lastUsedAt.map { now.timeIntervalSince($0) } ?? .infinity) >= Self.lastUsedResolution {
            try? await records.touchToken(id: id, now: now)
        }
        return .success(Principal(name: token.name, role: token.role, credential: .token))
    }

    // MARK: Secrets

    /// 256 random bits, base64url without padding (43 characters).
    static func randomSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: 0...255, using: &generator) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func digest(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        var difference: UInt8 = 0
        for index in x.indices { difference |= x[index] ^ y[index] }
        return difference == 0
    }

    /// A hash no password matches, checked for unknown accounts so they take as long as known ones.
    static let decoyHash = Bcrypt.hash(randomSecret(), cost: bcryptCost)

    /// bcrypt off the concurrency pool (each call is a quarter of a second of CPU).
    static func bcrypt(_ password: String) async -> String {
        (try? await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: bcryptCost) }) ?? Bcrypt.hash(password, cost: bcryptCost)
    }

    static func verify(_ password: String, hash: String) async -> Bool {
        (try? await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }) ?? Bcrypt.verify(password, hash: hash)
    }
}
