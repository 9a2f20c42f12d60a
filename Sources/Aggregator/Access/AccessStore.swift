import Crypto
import Foundation
import GRDB
import HummingbirdBcrypt
import NIOPosix

/// Accounts, API tokens and dashboard sessions, in the aggregator's database.
///
/// No secret is stored in clear: passwords as bcrypt (cost ``bcryptCost``, salted), tokens and
/// session ids as SHA-256 of 256 random bits (a slow hash adds nothing to a secret that cannot
/// be guessed, and every API request checks one). A token is shown once, when it is created.
public final class AccessStore: Sendable {
    let pool: DatabasePool
    /// bcrypt's work factor: about a quarter of a second per check on a gateway-class CPU.
    static let bcryptCost: UInt8 = 12
    /// How long a dashboard sign-in lasts.
    public static let sessionSeconds: Double = 12 * 3600
    /// Passwords are 8 to 72 bytes (bcrypt reads no further than 72).
    public static let passwordBytes = 8...72
    /// How often a token's `lastUsedAt` is written (not at every request).
    static let lastUsedResolution: Double = 60

    init(pool: DatabasePool) {
        self.pool = pool
    }

    /// Opens the access tables of the aggregator's database at `path` (created and migrated
    /// as the aggregator would).
    public convenience init(databasePath path: String) throws {
        let store = try SQLiteStatsStore(path: path)
        self.init(pool: store.pool)
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
        let now = Date().timeIntervalSince1970
        try await pool.write { db in
            guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM account WHERE name = ?", arguments: [name]) == 0 else {
                throw Refusal("an account named '\(name)' exists already (change its password with: users passwd \(name))")
            }
            try db.execute(
                sql: "INSERT INTO account (name, role, passwordHash, createdAt, passwordSetAt) VALUES (?, ?, ?, ?, ?)",
                arguments: [name, role.rawValue, hash, now, now])
        }
    }

    /// Removes an account and signs it out everywhere.
    public func removeUser(_ name: String) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM web_session WHERE account = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM account WHERE name = ?", arguments: [name])
            guard db.changesCount > 0 else { throw Refusal("no account named '\(name)'") }
        }
    }

    /// Sets a new password and signs the account out everywhere.
    public func setPassword(_ name: String, password: String) async throws {
        try Self.checkPassword(password)
        let hash = await Self.bcrypt(password)
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE account SET passwordHash = ?, passwordSetAt = ? WHERE name = ?",
                arguments: [hash, Date().timeIntervalSince1970, name])
            guard db.changesCount > 0 else { throw Refusal("no account named '\(name)'") }
            try db.execute(sql: "DELETE FROM web_session WHERE account = ?", arguments: [name])
        }
    }

    public func users() async throws -> [Account] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT name, role, createdAt, lastLoginAt FROM account ORDER BY name").map { row in
                Account(
                    name: row["name"], role: Role(rawValue: row["role"]) ?? .viewer,
                    createdAt: Date(timeIntervalSince1970: row["createdAt"]),
                    lastLoginAt: (row["lastLoginAt"] as Double?).map(Date.init(timeIntervalSince1970:)))
            }
        }
    }

    /// Whether any account or unexpired token exists (with none, nothing but `/healthz` is served).
    public func hasCredentials() async throws -> Bool {
        try await pool.read { db in
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM account) OR EXISTS (SELECT 1 FROM api_token WHERE expiresAt IS NULL OR expiresAt > ?)",
                arguments: [Date().timeIntervalSince1970]) ?? false
        }
    }

    // MARK: Dashboard sessions

    /// Checks a password; on success opens a session and returns its id (the cookie's value)
    /// and the account's role. Unknown accounts take as long as known ones.
    public func signIn(_ name: String, password: String, now: Date = Date()) async throws -> (session: String, principal: Principal)? {
        // (Sendable values out of the closure: the asynchronous read, which does not hold the
        // caller's thread while it waits for a reader.)
        let account = try await pool.read { db -> (role: String, passwordHash: String)? in
            try Row.fetchOne(db, sql: "SELECT role, passwordHash FROM account WHERE name = ?", arguments: [name]).map { ($0["role"], $0["passwordHash"]) }
        }
        let hash = account?.passwordHash ?? Self.decoyHash
        let matches = await Self.verify(password, hash: hash)
        guard let account, matches, let role = Role(rawValue: account.role) else { return nil }
        let session = Self.randomSecret()
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM web_session WHERE expiresAt <= ?", arguments: [now.timeIntervalSince1970])
            try db.execute(
                sql: "INSERT INTO web_session (idHash, account, createdAt, expiresAt) VALUES (?, ?, ?, ?)",
                arguments: [Self.digest(session), name, now.timeIntervalSince1970, now.timeIntervalSince1970 + Self.sessionSeconds])
            try db.execute(sql: "UPDATE account SET lastLoginAt = ? WHERE name = ?", arguments: [now.timeIntervalSince1970, name])
        }
        return (session, Principal(name: name, role: role, credential: .session))
    }

    /// The account a session cookie belongs to, while the session lasts.
    public func session(_ id: String, now: Date = Date()) async throws -> Principal? {
        guard id.utf8.count <= 128 else { return nil }
        return try await pool.read { db in
            guard let row = try Row.fetchOne(
                db, sql: """
                    SELECT account.name, account.role FROM web_session JOIN account ON account.name = web_session.account
                    WHERE web_session.idHash = ? AND web_session.expiresAt > ?
                    """, arguments: [Self.digest(id), now.timeIntervalSince1970]),
                let role = Role(rawValue: row["role"])
            else { return nil }
            return Principal(name: row["name"], role: role, credential: .session)
        }
    }

    public func signOut(_ id: String) async throws {
        guard id.utf8.count <= 128 else { return }
        try await pool.write { db in try db.execute(sql: "DELETE FROM web_session WHERE idHash = ?", arguments: [Self.digest(id)]) }
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
        try await pool.write { db in
            guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM api_token WHERE name = ?", arguments: [name]) == 0 else {
                throw Refusal("a token named '\(name)' exists already (revoke it first, or pick another name)")
            }
            try db.execute(
                sql: "INSERT INTO api_token (id, name, role, secretHash, createdAt, expiresAt) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [id, name, role.rawValue, Self.digest(secret), now.timeIntervalSince1970, expiresAt?.timeIntervalSince1970])
        }
        return (token, "\(Self.tokenPrefix)\(id)_\(secret)")
    }

    /// Revokes a token by its name or id.
    public func revokeToken(_ nameOrID: String) async throws -> Token {
        try await pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM api_token WHERE name = ? OR id = ?", arguments: [nameOrID, nameOrID]) else {
                throw Refusal("no token named '\(nameOrID.prefix(80))' (list them with: tokens list)")
            }
            let token = Self.token(row)
            try db.execute(sql: "DELETE FROM api_token WHERE id = ?", arguments: [token.id])
            return token
        }
    }

    public func tokens() async throws -> [Token] {
        try await pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM api_token ORDER BY name").map(Self.token) }
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
        guard let (stored, token) = try await pool.read({ db -> (String, Token)? in
            try Row.fetchOne(db, sql: "SELECT * FROM api_token WHERE id = ?", arguments: [id]).map { ($0["secretHash"], Self.token($0)) }
        }) else { return .failure(.unknown) }
        guard Self.constantTimeEqual(stored, Self.digest(secret)) else { return .failure(.unknown) }
        if let expiresAt = token.expiresAt, expiresAt <= now { return .failure(.expired) }
        if (token.lastUsedAt.map { now.timeIntervalSince($0) } ?? .infinity) >= Self.lastUsedResolution {
            try? await pool.write { db in
                try db.execute(sql: "UPDATE api_token SET lastUsedAt = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
            }
        }
        return .success(Principal(name: token.name, role: token.role, credential: .token))
    }

    static func token(_ row: Row) -> Token {
        Token(
            id: row["id"], name: row["name"], role: Role(rawValue: row["role"]) ?? .viewer,
            createdAt: Date(timeIntervalSince1970: row["createdAt"]),
            expiresAt: (row["expiresAt"] as Double?).map(Date.init(timeIntervalSince1970:)),
            lastUsedAt: (row["lastUsedAt"] as Double?).map(Date.init(timeIntervalSince1970:)))
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
