import Foundation
import GRDB
import PostgresNIO

/// Where ``AccessStore`` keeps accounts, tokens and sessions: the statistics database, SQLite
/// or PostgreSQL. Only rows go through here; the policy (names, hashing, timing) is the store's.
protocol AccessRecords: Sendable {
    /// False when the name is taken.
    func insertAccount(_ name: String, role: Role, passwordHash: String, now: Date) async throws -> Bool
    /// Deletes the account and its sessions; false when there was none.
    func deleteAccount(_ name: String) async throws -> Bool
    /// Sets the hash and ends the account's sessions; false when there is no such account.
    func setPasswordHash(_ name: String, _ hash: String, now: Date) async throws -> Bool
    func accounts() async throws -> [AccessStore.Account]
    func hasCredentials(now: Date) async throws -> Bool
    func credentials(of name: String) async throws -> (role: String, passwordHash: String)?
    /// Records a sign-in: the session, the account's last login; expired sessions go.
    func openSession(_ idHash: String, account: String, now: Date, expiresAt: Date) async throws
    func sessionAccount(_ idHash: String, now: Date) async throws -> (name: String, role: String)?
    func deleteSession(_ idHash: String) async throws
    /// False when the name is taken.
    func insertToken(_ token: AccessStore.Token, secretHash: String) async throws -> Bool
    /// The token deleted, by name or id.
    func deleteToken(_ nameOrID: String) async throws -> AccessStore.Token?
    func tokens() async throws -> [AccessStore.Token]
    func token(id: String) async throws -> (secretHash: String, token: AccessStore.Token)?
    func touchToken(id: String, now: Date) async throws
}

extension Date {
    fileprivate init?(seconds: Double?) {
        guard let seconds else { return nil }
        self.init(timeIntervalSince1970: seconds)
    }
}

struct SQLiteAccessRecords: AccessRecords {
    let pool: DatabasePool

    func insertAccount(_ name: String, role: Role, passwordHash: String, now: Date) async throws -> Bool {
        try await pool.write { db in
            guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM account WHERE name = ?", arguments: [name]) == 0 else { return false }
            try db.execute(
                sql: "INSERT INTO account (name, role, passwordHash, createdAt, passwordSetAt) VALUES (?, ?, ?, ?, ?)",
                arguments: [name, role.rawValue, passwordHash, now.timeIntervalSince1970, now.timeIntervalSince1970])
            return true
        }
    }

    func deleteAccount(_ name: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM web_session WHERE account = ?", arguments: [name])
            try db.execute(sql: "DELETE FROM account WHERE name = ?", arguments: [name])
            return db.changesCount > 0
        }
    }

    func setPasswordHash(_ name: String, _ hash: String, now: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE account SET passwordHash = ?, passwordSetAt = ? WHERE name = ?", arguments: [hash, now.timeIntervalSince1970, name])
            guard db.changesCount > 0 else { return false }
            try db.execute(sql: "DELETE FROM web_session WHERE account = ?", arguments: [name])
            return true
        }
    }

    func accounts() async throws -> [AccessStore.Account] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT name, role, createdAt, lastLoginAt FROM account ORDER BY name").map { row in
                AccessStore.Account(
                    name: row["name"], role: Role(rawValue: row["role"]) ?? .viewer, createdAt: Date(timeIntervalSince1970: row["createdAt"]),
                    lastLoginAt: Date(seconds: row["lastLoginAt"]))
            }
        }
    }

    func hasCredentials(now: Date) async throws -> Bool {
        try await pool.read { db in
            try Bool.fetchOne(
                db, sql: "SELECT EXISTS (SELECT 1 FROM account) OR EXISTS (SELECT 1 FROM api_token WHERE expiresAt IS NULL OR expiresAt > ?)",
                arguments: [now.timeIntervalSince1970]) ?? false
        }
    }

    func credentials(of name: String) async throws -> (role: String, passwordHash: String)? {
        // (Sendable values out of the closure: the asynchronous read, which does not hold the
        // caller's thread while it waits for a reader.)
        try await pool.read { db -> (role: String, passwordHash: String)? in
            try Row.fetchOne(db, sql: "SELECT role, passwordHash FROM account WHERE name = ?", arguments: [name]).map { ($0["role"], $0["passwordHash"]) }
        }
    }

    func openSession(_ idHash: String, account: String, now: Date, expiresAt: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM web_session WHERE expiresAt <= ?", arguments: [now.timeIntervalSince1970])
            try db.execute(
                sql: "INSERT INTO web_session (idHash, account, createdAt, expiresAt) VALUES (?, ?, ?, ?)",
                arguments: [idHash, account, now.timeIntervalSince1970, expiresAt.timeIntervalSince1970])
            try db.execute(sql: "UPDATE account SET lastLoginAt = ? WHERE name = ?", arguments: [now.timeIntervalSince1970, account])
        }
    }

    func sessionAccount(_ idHash: String, now: Date) async throws -> (name: String, role: String)? {
        try await pool.read { db -> (name: String, role: String)? in
            try Row.fetchOne(
                db, sql: """
                    SELECT account.name, account.role FROM web_session JOIN account ON account.name = web_session.account
                    WHERE web_session.idHash = ? AND web_session.expiresAt > ?
                    """, arguments: [idHash, now.timeIntervalSince1970]
            ).map { ($0["name"], $0["role"]) }
        }
    }

    func deleteSession(_ idHash: String) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM web_session WHERE idHash = ?", arguments: [idHash]) }
    }

    func insertToken(_ token: AccessStore.Token, secretHash: String) async throws -> Bool {
        try await pool.write { db in
            guard try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM api_token WHERE name = ?", arguments: [token.name]) == 0 else { return false }
            try db.execute(
                sql: "INSERT INTO api_token (id, name, role, secretHash, createdAt, expiresAt) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [
                    token.id, token.name, token.role.rawValue, secretHash, token.createdAt.timeIntervalSince1970,
                    token.expiresAt?.timeIntervalSince1970,
                ])
            return true
        }
    }

    func deleteToken(_ nameOrID: String) async throws -> AccessStore.Token? {
        try await pool.write { db in
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM api_token WHERE name = ? OR id = ?", arguments: [nameOrID, nameOrID])
            else { return nil }
            let token = Self.token(row)
            try db.execute(sql: "DELETE FROM api_token WHERE id = ?", arguments: [token.id])
            return token
        }
    }

    func tokens() async throws -> [AccessStore.Token] {
        try await pool.read { db in try Row.fetchAll(db, sql: "SELECT * FROM api_token ORDER BY name").map(Self.token) }
    }

    func token(id: String) async throws -> (secretHash: String, token: AccessStore.Token)? {
        try await pool.read { db -> (secretHash: String, token: AccessStore.Token)? in
            try Row.fetchOne(db, sql: "SELECT * FROM api_token WHERE id = ?", arguments: [id]).map { ($0["secretHash"], Self.token($0)) }
        }
    }

    func touchToken(id: String, now: Date) async throws {
        try await pool.write { db in
            try db.execute(sql: "UPDATE api_token SET lastUsedAt = ? WHERE id = ?", arguments: [now.timeIntervalSince1970, id])
        }
    }

    static func token(_ row: Row) -> AccessStore.Token {
        AccessStore.Token(
            id: row["id"], name: row["name"], role: Role(rawValue: row["role"]) ?? .viewer,
            createdAt: Date(timeIntervalSince1970: row["createdAt"]), expiresAt: Date(seconds: row["expiresAt"]),
            lastUsedAt: Date(seconds: row["lastUsedAt"]))
    }
}

/// The same rows in the PostgreSQL statistics database (its tables are made with the
/// statistics schema), through the store's connection pool.
struct PostgresAccessRecords: AccessRecords {
    let store: PostgresStatsStore

    private func tuples<each T: PostgresDecodable & Sendable>(_ query: PostgresQuery, as type: (repeat each T).Type) async throws -> [(repeat each T)] {
        try await store.transaction { [store] connection in
            var result: [(repeat each T)] = []
            for try await value in try await connection.query(query, logger: store.logger).decode((repeat each T).self) { result.append(value) }
            return result
        }
    }

    /// Runs statements in one transaction; returns how many rows the last one returned (its
    /// `RETURNING 1`: the rows it changed).
    private func run(_ queries: [PostgresQuery]) async throws -> Int {
        try await store.transaction { [store] connection in
            var returned = 0
            for query in queries {
                returned = 0
                for try await _ in try await connection.query(query, logger: store.logger) { returned += 1 }
            }
            return returned
        }
    }

    func insertAccount(_ name: String, role: Role, passwordHash: String, now: Date) async throws -> Bool {
        let at = now.timeIntervalSince1970
        return try await run([
            """
            INSERT INTO account (name, role, passwordHash, createdAt, passwordSetAt) VALUES (\(name), \(role.rawValue), \(passwordHash), \(at), \(at))
            ON CONFLICT (name) DO NOTHING RETURNING 1
            """
        ]) == 1
    }

    func deleteAccount(_ name: String) async throws -> Bool {
        try await run(["DELETE FROM web_session WHERE account = \(name)", "DELETE FROM account WHERE name = \(name) RETURNING 1"]) > 0
    }

    func setPasswordHash(_ name: String, _ hash: String, now: Date) async throws -> Bool {
        try await run([
            "DELETE FROM web_session WHERE account = \(name)",
            "UPDATE account SET passwordHash = \(hash), passwordSetAt = \(now.timeIntervalSince1970) WHERE name = \(name) RETURNING 1",
        ]) > 0
    }

    func accounts() async throws -> [AccessStore.Account] {
        try await tuples("SELECT name, role, createdAt, lastLoginAt FROM account ORDER BY name", as: (String, String, Double, Double?).self).map {
            AccessStore.Account(
                name: $0.0, role: Role(rawValue: $0.1) ?? .viewer, createdAt: Date(timeIntervalSince1970: $0.2), lastLoginAt: Date(seconds: $0.3))
        }
    }

    func hasCredentials(now: Date) async throws -> Bool {
        try await tuples(
            """
            SELECT EXISTS (SELECT 1 FROM account) OR EXISTS (SELECT 1 FROM api_token WHERE expiresAt IS NULL OR expiresAt > \(now.timeIntervalSince1970))
            """, as: Bool.self).first ?? false
    }

    func credentials(of name: String) async throws -> (role: String, passwordHash: String)? {
        try await tuples("SELECT role, passwordHash FROM account WHERE name = \(name)", as: (String, String).self).first.map { (role: $0.0, passwordHash: $0.1) }
    }

    func openSession(_ idHash: String, account: String, now: Date, expiresAt: Date) async throws {
        let at = now.timeIntervalSince1970
        _ = try await run([
            "DELETE FROM web_session WHERE expiresAt <= \(at)",
            "INSERT INTO web_session (idHash, account, createdAt, expiresAt) VALUES (\(idHash), \(account), \(at), \(expiresAt.timeIntervalSince1970))",
            "UPDATE account SET lastLoginAt = \(at) WHERE name = \(account)",
        ])
    }

    func sessionAccount(_ idHash: String, now: Date) async throws -> (name: String, role: String)? {
        try await tuples(
            """
            SELECT account.name, account.role FROM web_session JOIN account ON account.name = web_session.account
            WHERE web_session.idHash = \(idHash) AND web_session.expiresAt > \(now.timeIntervalSince1970)
            """, as: (String, String).self
        ).first.map { (name: $0.0, role: $0.1) }
    }

    func deleteSession(_ idHash: String) async throws {
        _ = try await run(["DELETE FROM web_session WHERE idHash = \(idHash)"])
    }

    func insertToken(_ token: AccessStore.Token, secretHash: String) async throws -> Bool {
        try await run([
            """
            INSERT INTO api_token (id, name, role, secretHash, createdAt, expiresAt)
            VALUES (\(token.id), \(token.name), \(token.role.rawValue), \(secretHash), \(token.createdAt.timeIntervalSince1970),
                \(token.expiresAt?.timeIntervalSince1970))
            ON CONFLICT DO NOTHING RETURNING 1
            """
        ]) == 1
    }

    static let tokenColumns = "id, name, role, createdAt, expiresAt, lastUsedAt, secretHash"
    typealias TokenRow = (String, String, String, Double, Double?, Double?, String)

    static func token(_ row: TokenRow) -> AccessStore.Token {
        AccessStore.Token(
            id: row.0, name: row.1, role: Role(rawValue: row.2) ?? .viewer, createdAt: Date(timeIntervalSince1970: row.3),
            expiresAt: Date(seconds: row.4), lastUsedAt: Date(seconds: row.5))
    }

    func deleteToken(_ nameOrID: String) async throws -> AccessStore.Token? {
        try await tuples(
            PostgresQuery(
                unsafeSQL: "DELETE FROM api_token WHERE name = $1 OR id = $1 RETURNING \(Self.tokenColumns)",
                binds: { var binds = PostgresBindings(); binds.append(nameOrID); return binds }()),
            as: TokenRow.self
        ).first.map(Self.token)
    }

    func tokens() async throws -> [AccessStore.Token] {
        try await tuples(PostgresQuery(unsafeSQL: "SELECT \(Self.tokenColumns) FROM api_token ORDER BY name"), as: TokenRow.self).map(Self.token)
    }

    func token(id: String) async throws -> (secretHash: String, token: AccessStore.Token)? {
        try await tuples(
            PostgresQuery(
                unsafeSQL: "SELECT \(Self.tokenColumns) FROM api_token WHERE id = $1",
                binds: { var binds = PostgresBindings(); binds.append(id); return binds }()),
            as: TokenRow.self
        ).first.map { ($0.6, Self.token($0)) }
    }

    func touchToken(id: String, now: Date) async throws {
        _ = try await run(["UPDATE api_token SET lastUsedAt = \(now.timeIntervalSince1970) WHERE id = \(id)"])
    }
}
