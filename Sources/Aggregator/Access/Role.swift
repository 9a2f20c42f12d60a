/// What a signed-in user or an API token may read.
///
/// - `viewer`: fleet-level figures and the dashboard (no gateway is named).
/// - `operator`: everything a viewer sees, plus per-gateway detail and session history (personal
///   data: when one person used the headband, at what level) and `/metrics`.
/// - `metrics`: `/metrics` only, for Prometheus scrapes.
public enum Role: String, Sendable, CaseIterable, Codable {
    case viewer
    case `operator`
    case metrics

    /// Whether this role may read what needs `need`.
    public func grants(_ need: Role) -> Bool {
        switch self {
        case .operator: true
        case .viewer: need == .viewer
        case .metrics: need == .metrics
        }
    }

    /// The roles, as the command line and error messages spell them.
    public static let names = allCases.map(\.rawValue).joined(separator: ", ")
}

/// Who a request comes from, once its session cookie or token checked out.
public struct Principal: Sendable, Equatable {
    public enum Credential: String, Sendable { case session, token }
    /// The account name, or the token's name.
    public var name: String
    public var role: Role
    public var credential: Credential
}
