import Foundation
import Logging
import NewsdOps
import NewsdPostgres
import NewsdSystem
import ServiceLifecycle

/// Alerts and analysts' rollups as one `Service` of `newsd run`, three loops on their own
/// database connections (each a serial queue off the cooperative pool):
/// - the detector: every `alerts.check_seconds`, reads the predictions stored since its last pass
///   (by any host), synchronises its per-company states with the `alerts` table (so every host
///   agrees, and a restart resumes), evaluates, raises (once across hosts), verifies with the
///   teacher, resolves; it warms up from the stored history on start;
/// - the delivery: drains the outbox with retries;
/// - the rollups: recomputes the analysts' hours and days touched since the last pass.
public final class AlertService: Service, Sendable {
    private let configuration: LockedValue<NewsdConfiguration.Alerts>
    private let analysts: NewsdConfiguration.Analysts
    private let url: String
    private let logger: Logger
    private let metrics: NewsdMetrics
    private let stop = StopFlag()
    private let verifier: AlertVerifier
    private let delivery: AlertDelivery
    private let host: String
    private static let executor = DedicatedTaskExecutor(label: "newsd-alerts")

    /// A service for this configuration; the webhook secret comes from `NEWSD_WEBHOOK_SECRET` (or
    /// the credentials file) unless given.
    public init(configuration c: NewsdConfiguration, logger: Logger, metrics: NewsdMetrics,
                webhookSecret: String? = Secrets.value("WEBHOOK_SECRET")) throws {
        configuration = LockedValue(c.alerts)
        analysts = c.analysts
        url = c.postgres.url
        self.logger = logger
        self.metrics = metrics
        verifier = try AlertVerifier(configuration: c, logger: logger, metrics: metrics)
        delivery = try AlertDelivery(configuration: c.alerts, logger: logger, metrics: metrics, secret: webhookSecret)
        host = "\(ProcessInfo.processInfo.hostName):\(getpid())"
    }

    /// New detector parameters (SIGHUP); they apply from the next pass.
    public func setDetector(_ detector: NewsdConfiguration.AlertDetector, companies: [String: [String: Double]]) {
        configuration.withLock { $0.detector = detector; $0.companies = companies }
    }

    /// Stops the loops.
    public func requestStop() { stop.set() }

    /// Detector passes completed (the first one includes the warm-up from stored history).
    public var completedPasses: Int { passes.value }
    private let passes = LockedValue(0)

    /// Runs until stopped.
    public func run() async throws {
        let stop = stop
        await withGracefulShutdownHandler {
            // The loops' glue runs on threads of its own: a busy or blocked cooperative pool must
            // not delay an alert (their database and HTTP calls are off the pool already).
            await withTaskExecutorPreference(Self.executor) {
                await withTaskGroup(of: Void.self) { group in
                    if configuration.value.enabled {
                        group.addTask { await self.detectorLoop() }
                        group.addTask { await self.deliveryLoop() }
                    }
                    group.addTask { await self.rollupLoop() }
                }
            }
        } onGracefulShutdown: { stop.set() }
        verifier.shutdown()
        delivery.shutdown()
        await awaitShutdownTurn()
    }

    private var running: Bool { !stop.isSet && !Task.isCancelled }

    private func pause(_ seconds: Double) async {
        let deadline = monotonicSeconds() + seconds
        while running && monotonicSeconds() < deadline {
            try? await Task.sleep(for: .milliseconds(Int(min(250, max(1, (deadline - monotonicSeconds()) * 1000)))))
        }
    }

    /// A database for one loop, stopped with the service. `abandonable`: its statements are reads
    /// and recomputations (the detector, the rollups), so a stop cancels the one in flight
    /// rather than wait for it; delivery's writes (notification records) are left to finish.
    private func database(_ label: String, abandonable: Bool) -> BlockingDatabase {
        let stop = stop
        let db = BlockingDatabase(url: url, label: label, logger: logger, policy: RetryPolicy(initialDelay: 0.2, maxDelay: 10))
        Task.detached { while !stop.isSet { try? await Task.sleep(for: .milliseconds(200)) }; db.stop(cancellingStatementInFlight: abandonable) }
        return db
    }

    // MARK: detector

    private func detectorLoop() async {
        let db = database("newsd-alerts-detector", abandonable: true)
        var c = configuration.value
        var detector = NegativeShiftDetector(parameters: c.detector, overrides: c.companies, drivers: c.drivers)
        var feed = PredictionFeed()
        var warmed = false
        while running {
            let started = monotonicSeconds()
            do {
                let now = Date().timeIntervalSince1970
                let fresh = configuration.value
                if fresh != c { c = fresh; detector.setParameters(c.detector, overrides: c.companies, drivers: c.drivers) }
                if !warmed {
                    let horizon = min(4 * c.detector.baselineHalfLifeHours * 3600, 21 * 86_400)
                    let (events, warmedFeed) = try await db.run("alert warm-up") { conn in
                        var f = PredictionFeed()
                        return (try f.warmUp(conn, since: now - horizon, now: now), f)
                    }
                    feed = warmedFeed
                    for e in events { detector.add(e, now: now) }
                    warmed = true
                    logger.info("alert detector warmed up", metadata: ["events": "\(events.count)", "companies": "\(detector.companyIDs.count)"])
                }
                try await pass(&detector, &feed, db: db, now: now, configuration: c)
                passes.withLock { $0 += 1 }
                metrics.observe("newsd_alert_pass_seconds", monotonicSeconds() - started)
            } catch {
                if !running { break }
                logger.error("alert detector pass failed; next pass retries", metadata: ["error": "\(error)"])
            }
            await pause(c.checkSeconds.value)
        }
    }

    private func pass(_ detector: inout NegativeShiftDetector, _ feed: inout PredictionFeed, db: BlockingDatabase, now: Double,
                      configuration c: NewsdConfiguration.Alerts) async throws {
        let snapshot = feed
        let (states, events, newFeed) = try await db.run("alert pass") { conn -> ([String: NegativeShiftDetector.State], [PredictionEvent], PredictionFeed) in
            var f = snapshot
            let events = try f.poll(conn, now: now)
            return (try AlertStore.states(conn), events, f)
        }
        feed = newFeed
        detector.synchronise(states)
        for e in events { detector.add(e, now: now) }
        let plan = DeliveryPlan(c)
        let verifying = verifier.isEnabled
        var toVerify: [Int64] = []
        for d in detector.evaluate(at: now) {
            let params = detector.parameters(for: d.company)
            switch d.kind {
            case let .raise(rule, severity):
                let host = host
                if let id = try await db.run("raise alert", { try AlertStore.raise($0, decision: d, parameters: params, verifying: verifying, host: host, plan: plan) }) {
                    metrics.increment("newsd_alerts_raised_total", [("rule", rule), ("severity", severity)])
                    logger.notice("negative shift: alert raised", metadata: [
                        "alert": "\(id)", "company": "\(d.company)", "rule": "\(rule)", "severity": "\(severity)",
                        "observed": "\(String(format: "%.3f", d.figures.observedShare))", "baseline": "\(String(format: "%.3f", d.figures.baselineShare))",
                        "items": "\(d.figures.items)", "p": "\(String(format: "%.2g", d.figures.pValue))", "verifying": "\(verifying)"])
                    if verifying { toVerify.append(id) }
                }
            case .resolve:
                if let id = try await db.run("resolve alert", { try AlertStore.resolve($0, company: d.company, plan: plan) }) {
                    metrics.increment("newsd_alerts_resolved_total")
                    logger.notice("alert resolved: the share is back", metadata: ["alert": "\(id)", "company": "\(d.company)",
                                                                                  "observed": "\(String(format: "%.3f", d.figures.observedShare))"])
                }
            }
        }
        let host = host
        let timeout = c.verifyTimeoutSeconds.value
        toVerify += try await db.run("stale verifications") { try AlertStore.claimStaleVerifications($0, timeout: timeout, host: host) }
        // Alerts are verified side by side (a market-wide event raises several at once; one
        // after another, each would wait for the teacher's answers on all the others), each on
        // its own connection.
        let (verifier, logger, stop, url) = (verifier, logger, stop, url)
        await withTaskGroup(of: Void.self) { group in
            for (i, id) in toVerify.enumerated() {
                if i >= 4 { await group.next() }
                group.addTask {
                    let own = BlockingDatabase(url: url, label: "newsd-alerts-verify", logger: logger, policy: RetryPolicy(initialDelay: 0.2, maxDelay: 10))
                    defer { own.stop() }
                    do {
                        let state = try await verifier.verify(alert: id, database: own, plan: plan, stop: stop)
                        logger.info("alert verified", metadata: ["alert": "\(id)", "state": "\(state ?? "left to another pass")"])
                    } catch {
                        logger.error("alert verification failed; another pass takes it over after alerts.verify_timeout_seconds",
                                     metadata: ["alert": "\(id)", "error": "\(error)"])
                    }
                }
            }
        }
        try await db.run("alert refreshes") { try AlertStore.enqueueRefreshes($0, plan: plan) }
        let firing = try await db.run("alerts firing") { try $0.query("SELECT count(*) AS n FROM alerts WHERE state = 'firing'").single().decode("n", as: Int.self) }
        metrics.set("newsd_alerts_firing", Double(firing))
        detector.forget(before: now - 30 * 86_400)
    }

    // MARK: delivery

    private func deliveryLoop() async {
        let db = database("newsd-alerts-delivery", abandonable: false)
        var cleaned = -Double.infinity
        while running {
            do {
                // Delivered rows are kept 30 days (the audit of what went where), then dropped:
                // refreshes of long-firing alerts would otherwise grow the table without end.
                if monotonicSeconds() - cleaned > 3600 {
                    try await db.run("outbox retention") { try $0.execute("DELETE FROM alert_outbox WHERE delivered_at < now() - interval '30 days'") }
                    cleaned = monotonicSeconds()
                }
                let handled = try await delivery.pass(db, stop: stop)
                let pending = try await db.run("outbox size") {
                    try $0.query("SELECT count(*) AS n FROM alert_outbox WHERE delivered_at IS NULL AND failed_at IS NULL").single().decode("n", as: Int.self)
                }
                metrics.set("newsd_alert_outbox_pending", Double(pending))
                if handled > 0 { continue }
            } catch {
                if !running { break }
                logger.error("alert delivery pass failed; retrying", metadata: ["error": "\(error)"])
            }
            await pause(min(1, configuration.value.retryInitialSeconds.value))
        }
    }

    // MARK: rollups

    private func rollupLoop() async {
        let db = database("newsd-rollups", abandonable: true)
        let (margin, every, agreementEvery) = (analysts.lowConfidenceMargin, analysts.rollupSeconds.value, analysts.agreementRefreshSeconds.value)
        var mark: Int64 = -1
        var refreshed = -Double.infinity
        while running {
            do {
                let started = monotonicSeconds()
                let stop = stop
                let pass = try await db.run("rollup pass") { try AnalystRollups.pass($0, lowConfidenceMargin: margin, stop: stop) }
                if pass.hours > 0 {
                    metrics.observe("newsd_rollup_pass_seconds", monotonicSeconds() - started)
                    metrics.increment("newsd_rollup_hours_total", by: pass.hours)
                }
                if monotonicSeconds() - refreshed >= agreementEvery {
                    let now = try await db.run("rescored mark") { try AnalystRollups.rescoredMark($0) }
                    if now != mark {
                        try await db.run("refresh agreement") { try AnalystRollups.refreshAgreement($0) }
                        mark = now
                    }
                    refreshed = monotonicSeconds()
                }
            } catch {
                if !running { break }
                logger.error("rollup pass failed; retrying", metadata: ["error": "\(error)"])
            }
            await pause(every)
        }
    }
}

/// Reads the predictions stored since the last read, by any host. Transactions of several hosts
/// commit out of id order, so it re-reads a margin of `predicted_at` and skips ids it has seen.
public struct PredictionFeed: Sendable {
    /// A prediction about one company (a prediction of an item naming two companies is two events).
    struct Key: Hashable, Sendable { var id: Int64; var company: String }
    private var seen: [Key: Double] = [:]
    private var last: Double = 0

    /// An empty feed.
    public init() {}

    /// (prediction id, predicted_at, event) of each row.
    static func events(_ rows: PostgresRows, now: Double) throws -> [(id: Int64, at: Double, event: PredictionEvent)] {
        try rows.typed.map { r in
            (try r.decode("id"), try r.decode("at"),
             PredictionEvent(time: min(now, try r.decode("t")), company: try r.decode("company_id"), itemID: try r.decode("item_id"),
                             negativeProbability: try r.decode("pn"), margin: try r.decode("margin")))
        }
    }

    static let select = """
        SELECT p.id, p.item_id, m.company_id, extract(epoch FROM m.published_at)::float8 AS t,
               coalesce((p.probabilities->>'negative')::float8, 0) AS pn, p.margin::float8 AS margin,
               extract(epoch FROM p.predicted_at)::float8 AS at
        FROM predictions p JOIN mentions m ON m.item_id = p.item_id
        """

    /// The stored history since `since` (ingest predictions, not rescorings), for a start.
    public mutating func warmUp(_ db: PostgresConnection, since: Double, now: Double) throws -> [PredictionEvent] {
        let mark = try Self.databaseNow(db)
        // Driven by the items' time index (news_items_published_at), one read in time order.
        let rows = try db.query("""
            SELECT p.id, p.item_id, m.company_id, extract(epoch FROM m.published_at)::float8 AS t,
                   coalesce((p.probabilities->>'negative')::float8, 0) AS pn, p.margin::float8 AS margin,
                   extract(epoch FROM p.predicted_at)::float8 AS at
            FROM news_items n
            JOIN mentions m ON m.item_id = n.id
            JOIN predictions p ON p.item_id = n.id AND NOT p.rescored
            WHERE coalesce(n.published_at, n.received_at) >= to_timestamp(\(since))
            """)
        var out: [PredictionEvent] = []
        for r in try Self.events(rows, now: now) {
            out.append(r.event)
            if r.at >= mark - 900 { seen[Key(id: r.id, company: r.event.company)] = r.at }
        }
        last = mark
        return out
    }

    /// The database's clock: `predicted_at` is stamped by it, so the feed's marks are too (a
    /// host's own clock may be off).
    static func databaseNow(_ db: PostgresConnection) throws -> Double {
        try db.query("SELECT extract(epoch FROM clock_timestamp())::float8 AS now").single().decode("now")
    }

    /// Predictions stored since the last poll. `predicted_at` is its transaction's start, so a
    /// row may commit after a later-stamped one: the read goes back five minutes and skips what
    /// it has seen.
    public mutating func poll(_ db: PostgresConnection, now: Double) throws -> [PredictionEvent] {
        let mark = try Self.databaseNow(db)
        let rows = try db.query("""
            \(unescaped: Self.select)
            WHERE p.predicted_at >= to_timestamp(\(last - 300)) AND NOT p.rescored
            ORDER BY p.id
            """)
        var result: [PredictionEvent] = []
        for r in try Self.events(rows, now: now) where seen[Key(id: r.id, company: r.event.company)] == nil {
            seen[Key(id: r.id, company: r.event.company)] = r.at
            result.append(r.event)
        }
        seen = seen.filter { $0.value >= mark - 900 }
        last = mark
        return result
    }
}
