import Foundation

/// Where the aggregator keeps what it ingested and answers questions from. One implementation
/// today, ``SQLiteStatsStore``; a shared PostgreSQL store for several instances is the next
/// (docs/architecture.md, "Aggregator"), so nothing outside this protocol touches the database.
public protocol StatsStore: Sendable {
    /// Applies a batch in one transaction, exactly once per `(gw, epoch, seq)`.
    func apply(_ records: [IngestRecord]) async throws -> ApplyOutcome
    /// Gives back the space of dedupe keys that can no longer be needed.
    func compact(now: Date) async throws
    /// Deletes raw events from before `day`; statistics are kept. Returns how many.
    func prune(before day: Day) async throws -> Int

    func summary(fleet: String?, now: Date) async throws -> FleetSummary
    func daily(fleet: String?, from: Day, to: Day) async throws -> [DailyStats]
    func gateways(fleet: String?, search: String?, now: Date) async throws -> [GatewaySummary]
    /// Nil when no such gateway is known.
    func gateway(fleet: String?, id: String, now: Date, from: Day, to: Day) async throws -> GatewayDetail?
    /// Nil when no such gateway is known.
    func sessions(fleet: String?, gateway: String, from: Day, to: Day, limit: Int) async throws -> [SessionRecord]?
    /// Fleets that have data.
    func fleets() async throws -> [String]
}

/// What one batch did.
public struct ApplyOutcome: Sendable, Equatable {
    /// Envelopes counted for the first time.
    public var accepted = 0
    /// Of ``accepted``, how many were events (the rest telemetry).
    public var acceptedEvents = 0
    /// Envelopes already counted (a redelivery, a replay, or a second instance's copy).
    public var duplicates = 0
    /// Status and state messages applied.
    public var presence = 0
    /// The newest commit lag seen in the batch: commit time minus the envelope's `ts`, seconds
    /// (synced clocks only; nil when none).
    public var maxLagSeconds: Double?
    /// Commit time minus `ts` of each live envelope from a synced clock, seconds: the
    /// end-to-end latency from the gateway to the statistics store.
    public var latenciesSeconds: [Double] = []
    /// Gateways whose statistics changed.
    public var changedGateways: Set<GatewayKey> = []
    /// Envelopes the store itself refused (a per-gateway limit), by reason; recorded against
    /// their gateway like the ``IngestRecord/refused(_:_:receivedAt:payload:)`` records.
    public var refused: [String: Int] = [:]
    /// Times the batch's transaction was rolled back by the database (a serialisation failure
    /// or a deadlock with another writer) and run again from the start before it committed.
    public var retries = 0

    public init() {}
}

/// A gateway, within its fleet.
public struct GatewayKey: Sendable, Hashable, Comparable {
    public var fleet: String
    public var gateway: String
    public init(fleet: String, gateway: String) {
        self.fleet = fleet
        self.gateway = gateway
    }
    public static func < (lhs: GatewayKey, rhs: GatewayKey) -> Bool { (lhs.fleet, lhs.gateway) < (rhs.fleet, rhs.gateway) }
}

/// Why ``StatsStore/apply(_:)`` failed, as ingest needs to know it: whether to write the same
/// batch again until it commits, or to find the records the store will never take.
public struct StoreFailure: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The store cannot commit now (disk full, database locked, I/O error): nothing changed;
        /// the same batch is written again until it commits.
        case unavailable
        /// The store refuses something in the batch and always will: retrying cannot help.
        case refused
    }

    public var kind: Kind
    /// What failed, in one line for an operator.
    public var reason: String

    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { reason }
}
