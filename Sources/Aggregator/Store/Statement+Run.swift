import GRDB
import GRDBSQLite

extension Statement {
    /// Runs this write statement with `values` bound straight to its parameters, in order.
    ///
    /// The same as `execute(arguments:)` for a statement that returns no rows, for the few that
    /// ingest runs thousands of times per batch. GRDB's `StatementArguments` boxes every value
    /// in an existential, checks the list against the statement, and binds and clears through
    /// nested closures: about a fifth of the store's time in a backlog drain. Here each value
    /// binds through its own `StatementBinding`, with no boxing.
    ///
    /// - Throws: `DatabaseError` when a value does not bind or the statement fails; the
    ///   statement is reset either way, ready for its next use.
    func run<each Value: StatementBinding>(_ values: repeat each Value) throws {
        let handle = sqliteStatement
        defer {
            sqlite3_reset(handle)
        }
        var index: CInt = 0
        var code = SQLITE_OK
        for value in repeat each values {
            index += 1
            if code == SQLITE_OK { code = value.bind(to: handle, at: index) }
        }
        guard index == sqlite3_bind_parameter_count(handle) else {
            throw DatabaseError(resultCode: .SQLITE_MISUSE, message: "\(index) values for \(sqlite3_bind_parameter_count(handle)) parameters", sql: sql)
        }
        if code == SQLITE_OK {
            code = sqlite3_step(handle)
            if code == SQLITE_DONE { return }
        }
        throw DatabaseError(
            resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(sqlite3_db_handle(handle))), sql: sql)
    }
}
