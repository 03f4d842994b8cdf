import Foundation
import Logging
import NewsdDistill
import NewsdOps
import NewsdPostgres
import NewsdSystem
import ServiceLifecycle

/// Probes Postgres for `/readyz` (a `SELECT 1` every two seconds on its own connection, never
/// retried in place: the answer is the last probe, and a probe that hangs makes the answer stale,
/// hence not ready) and reads the group-wide gauges that live in Postgres: teacher queue depth,
/// spend today, cost per million sentences, the active model's sequence number and gate figures.
/// Runs on its own thread (libpq blocks).
public final class DatabaseMonitor: Service, Sendable {
    private let url: String
    private let metrics: NewsdMetrics
    private let logger: Logger
    private let stop = StopFlag()
    private struct Probe: Sendable {
        var ok = false
        var detail = "not probed yet"
        var at = -1e9
    }
    private let last = LockedValue(Probe())
    /// A probe older than this does not count (it hung, or the thread is stuck).
    public let staleAfter: Double

    /// A monitor of the database at `url`.
    public init(url: String, metrics: NewsdMetrics, logger: Logger, staleAfter: Double = 10) {
        self.url = url
        self.metrics = metrics
        self.logger = logger
        self.staleAfter = staleAfter
    }

    /// Whether Postgres answered the last probe, recently; with what was seen.
    public var reachable: HealthCheck {
        let p = last.value
        let age = monotonicSeconds() - p.at
        if p.ok && age <= staleAfter { return HealthCheck("postgres", ok: true, "answered \(String(format: "%.1f", age)) s ago") }
        if p.ok { return HealthCheck("postgres", ok: false, "no answer for \(Int(age)) s") }
        return HealthCheck("postgres", ok: false, p.detail)
    }

    /// Probes until the group stops.
    public func run() async throws {
        try await runBlockingService(thread: "newsd-dbmonitor", stop: { [stop] in stop.set() }) { [self] in loop() }
        await awaitShutdownTurn()
    }

    private func loop() {
        var db: PostgresConnection?
        var nextGauges = 0.0, nextCost = 0.0
        while !stop.isSet {
            let started = monotonicSeconds()
            do {
                if db == nil || !db!.isConnected { db = try PostgresConnection(url) }
                _ = try db!.query("SELECT 1 AS one")
                last.withLock { $0 = Probe(ok: true, detail: "ok", at: monotonicSeconds()) }
                metrics.set("newsd_postgres_up", 1)
                if started >= nextGauges { try readGauges(db!); nextGauges = started + 15 }
                if started >= nextCost { try readCost(db!); nextCost = started + 60 }
            } catch {
                let wasUp = last.value.ok
                last.withLock { $0 = Probe(ok: false, detail: "\(error)", at: monotonicSeconds()) }
                metrics.set("newsd_postgres_up", 0)
                if wasUp { logger.warning("postgres probe failed; not ready", metadata: ["error": "\(error)"]) }
                db = nil
            }
            while !stop.isSet && monotonicSeconds() - started < 2 { Thread.sleep(forTimeInterval: 0.1) }
        }
    }

    private func readGauges(_ db: PostgresConnection) throws {
        var depth = ["pending": 0, "done": 0, "failed": 0]
        for row in try db.query("SELECT status, count(*) AS n FROM teacher_queue GROUP BY status").typed {
            depth[try row.decode("status", as: String.self)] = try row.decode("n", as: Int.self)
        }
        for (status, n) in depth { metrics.set("newsd_teacher_queue_items", [("status", status)], Double(n)) }
        let spent: Double = try db.query("""
            SELECT coalesce(sum(cost_usd), 0)::float8 AS spent FROM teacher_requests WHERE started_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            """).single().decode("spent")
        metrics.set("newsd_teacher_spend_today_usd", spent)
        if let active = try ModelRegistry.active(db) {
            metrics.set("newsd_model_active_seq", Double(active.seq))
            if let data = active.metrics.data(using: .utf8), case let .object(fields)? = try? JSONDecoder().decode(JSONValue.self, from: data) {
                for (name, value) in fields {
                    switch value {
                    case let .float(v): metrics.set("newsd_model_gate_metric", [("metric", name)], v)
                    case let .integer(v): metrics.set("newsd_model_gate_metric", [("metric", name)], Double(v))
                    default: break
                    }
                }
            }
        }
    }

    /// Teacher spend per million sentences stored, over the whole history (the figure the demo
    /// compares with labelling everything by the teacher).
    private func readCost(_ db: PostgresConnection) throws {
        let row = try db.query("""
            SELECT (SELECT coalesce(sum(cost_usd), 0) FROM teacher_requests)::float8 AS spent, (SELECT count(*) FROM news_items) AS items
            """).single()
        let spent: Double = try row.decode("spent"), items: Int = try row.decode("items")
        if items > 0 { metrics.set("newsd_cost_per_million_sentences_usd", spent / Double(items) * 1e6) }
    }
}
