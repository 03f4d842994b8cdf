import Foundation
import Logging
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import ServiceLifecycle

/// Running totals of a teacher worker.
public struct TeacherWorkerStatistics: Sendable {
    /// Items labelled (majority) and ambiguous (no majority).
    public var labelled = 0, ambiguous = 0
    /// Items given back after a failure.
    public var released = 0
    /// HTTP requests by status.
    public var requests: [String: Int] = [:]
    /// Tokens and spend reported.
    public var promptTokens = 0, completionTokens = 0
    /// US dollars.
    public var cost = 0.0
}

/// Drains the teacher queue: claims items (`FOR UPDATE SKIP LOCKED`, with a lease), labels them
/// with k samples through the teacher client (limits, retries, breaker), records every request,
/// stores each verdict and marks the item done in one transaction. Items whose labelling failed
/// go back to the queue. Holds back while the breaker is open or the day's budget is spent; ingest
/// is unaffected either way. Several hosts can run one each.
public final class TeacherWorker: Service, Sendable {
    private let configuration: NewsdConfiguration
    private let client: TeacherClient
    private let logger: Logger
    private let database: BlockingDatabase
    /// This worker's name in leases and request records (`host:pid`).
    public let workerID: String
    private let stats = LockedValue(TeacherWorkerStatistics())
    private let stopFlag = LockedValue(false)
    /// Return once the queue is empty and nothing is in flight (batch runs, benchmarks).
    public let stopWhenEmpty: Bool
    /// The daemon's metrics.
    public let metrics: NewsdMetrics
    /// The client (its limiter and ledger take reloaded limits).
    public var teacherClient: TeacherClient { client }

    /// A worker for this configuration.
    public init(configuration: NewsdConfiguration, client: TeacherClient, logger: Logger, stopWhenEmpty: Bool = false,
                metrics: NewsdMetrics = NewsdMetrics()) {
        self.configuration = configuration
        self.metrics = metrics
        self.stopWhenEmpty = stopWhenEmpty
        self.client = client
        self.logger = logger
        workerID = "\(ProcessInfo.processInfo.hostName):\(getpid())"
        database = BlockingDatabase(url: configuration.postgres.url, label: "newsd-teacher-db", logger: logger)
    }

    /// Current totals.
    public var statistics: TeacherWorkerStatistics { stats.withLock { $0 } }

    /// Asks the worker to stop claiming and return once its items in flight are done (within the
    /// shutdown bound; after it, database calls stop retrying so a Postgres outage cannot hold
    /// the stop). Idempotent.
    public func requestStop() {
        let first = stopFlag.withLock { stopping -> Bool in defer { stopping = true }; return !stopping }
        guard first else { return }
        logger.info("teacher worker: finishing the items in flight")
        let database = database
        DispatchQueue.global().asyncAfter(deadline: .now() + configuration.ingest.shutdownTimeoutSeconds.value) {
            database.stop(cancellingStatementInFlight: true)   // at the bound: nothing may hold the stop longer
        }
    }
    private var stopping: Bool { stopFlag.withLock { $0 } }

    /// Runs until graceful shutdown (or an empty queue with `stopWhenEmpty`).
    public func run() async throws {
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await loop()
            } onGracefulShutdown: { [self] in
                requestStop()
            }
        } onCancel: { [self] in
            requestStop()
            database.stop()
        }
        database.stop()
        if stopping { await awaitShutdownTurn() }
    }

    private func loop() async throws {
        let t = configuration.teacher
        let slots = t.concurrency
        var lastBudgetSync = -1e9, lastRenewal = Date().timeIntervalSince1970
        var loggedHold: String?
        // Items in flight run as their own tasks; the loop tops them up as they finish. On
        // shutdown it waits for them within the ingest shutdown bound, then gives the rest back
        // to the queue at once (another host takes them without waiting for the lease).
        let inFlight = LockedValue([Int64: QueuedItem]())
        while !stopping {
            // A database failure while stopping (Postgres down, the database stopped after the
            // bound) ends the loop; the items in flight are then given back below.
            do {
                let now = Date().timeIntervalSince1970
                if now - lastBudgetSync > 15 {
                    let spent = try await database.run("read spend") { try TeacherQueue.spentToday($0) }
                    client.ledger.synchronise(spentToday: spent)
                    lastBudgetSync = now
                }
                var hold: String?
                if client.ledger.isExhausted { hold = "daily budget of $\(t.dailyBudgetUSD) spent; waiting for the next UTC day" }
                else if client.breaker.isOpen { hold = "teacher unavailable (circuit open); the queue waits" }
                if hold != loggedHold {
                    if let hold { logger.warning("teacher worker holding: \(hold)") } else if loggedHold != nil { logger.info("teacher worker resumed") }
                    loggedHold = hold
                }
                // Leases are renewed while items are still being labelled (retries and breaker waits
                // can outlast one), so no other worker, nor this one, starts them again.
                if now - lastRenewal > max(1, t.leaseSeconds.value / 3) {
                    let (ids, worker, lease) = (inFlight.withLock { Array($0.keys) }, workerID, t.leaseSeconds.value)
                    try await database.run("renew leases") { try TeacherQueue.renew($0, ids: ids, worker: worker, leaseSeconds: lease) }
                    lastRenewal = now
                }
                let free = slots - inFlight.withLock { $0.count }
                var claimed: [QueuedItem] = []
                if hold == nil && free > 0 {
                    let (worker, lease, maxAttempts) = (workerID, t.leaseSeconds.value, t.maxAttempts)
                    claimed = try await database.run("claim") {
                        try TeacherQueue.claim($0, worker: worker, limit: free, leaseSeconds: lease, maxAttempts: maxAttempts)
                    }
                    for item in claimed {
                        let fresh = inFlight.withLock { running -> Bool in
                            guard running[item.id] == nil else { return false }
                            running[item.id] = item
                            return true
                        }
                        guard fresh else { continue }
                        Task { await self.process(item); inFlight.withLock { $0[item.id] = nil } }
                    }
                }
                let busy = inFlight.withLock { $0.count }
                if claimed.isEmpty && busy == 0 && stopWhenEmpty && hold == nil { return }
                // Poll the queue while idle; check often for free slots while busy.
                let pause: UInt64 = hold != nil ? 1_000_000_000 : (busy < slots && claimed.isEmpty ? 300_000_000 : 20_000_000)
                try? await Task.sleep(nanoseconds: pause)
            } catch where stopping {
                break
            }
        }
        let deadline = Date().addingTimeInterval(max(1, configuration.ingest.shutdownTimeoutSeconds.value - 2))
        while inFlight.withLock({ !$0.isEmpty }) && Date() < deadline { try? await Task.sleep(nanoseconds: 50_000_000) }
        let left = inFlight.withLock { Array($0.values) }
        if !left.isEmpty {
            logger.info("teacher worker: giving unfinished items back to the queue", metadata: ["items": "\(left.count)"])
            // A stop is not the item's failure: it never counts towards max_attempts. Tasks still
            // waiting on a transfer may finish later; they no longer hold the lease, so their
            // release is a no-op and a verdict they store is stored once (text-hash key).
            let worker = workerID
            _ = try? await database.run("release on shutdown") { db in
                for item in left { try TeacherQueue.release(db, item: item, worker: worker, error: "worker stopped", maxAttempts: 0, countsAsAttempt: false) }
            }
        }
    }

    private func process(_ item: QueuedItem) async {
        let (worker, db, stats, metrics) = (workerID, database, stats, metrics)
        do {
            let verdict = try await client.label(item.text) { record in
                Self.record(record, into: metrics)
                stats.withLock { s in
                    s.requests[record.status, default: 0] += 1
                    s.promptTokens += record.promptTokens; s.completionTokens += record.completionTokens; s.cost += record.cost
                }
                db.enqueue("record request") { try TeacherQueue.record($0, item: item, worker: worker, record) }
            }
            let model = configuration.teacher.model
            let stored = try await database.run("store verdict") { try TeacherQueue.complete($0, item: item, label: verdict, teacherModel: model) }
            stats.withLock { s in if verdict.label == nil { s.ambiguous += 1 } else { s.labelled += 1 } }
            metrics.increment("newsd_teacher_items_total", [("outcome", verdict.label == nil ? "ambiguous" : "labelled")])
            logger.debug("teacher verdict", metadata: ["queue_id": "\(item.id)", "status": "\(verdict.status)", "label": "\(verdict.label ?? "-")",
                                                       "votes": "\(verdict.votes)", "stored": "\(stored)"])
        } catch {
            let budget = (error as? TeacherError)?.kind == .budgetExhausted
            if !budget { logger.warning("teacher could not label an item; it goes back to the queue", metadata: ["queue_id": "\(item.id)", "error": "\(error)"]) }
            stats.withLock { $0.released += 1 }
            metrics.increment("newsd_teacher_items_total", [("outcome", "released")])
            let max = configuration.teacher.maxAttempts
            // Not retried at once: the server just failed every retry, give it a moment.
            let wait = budget ? 0 : min(60, 5 * Double(item.attempts))
            _ = try? await database.run("release") {
                try TeacherQueue.release($0, item: item, worker: worker, error: "\(error)", maxAttempts: max, countsAsAttempt: !budget, retryAfterSeconds: wait)
            }
        }
    }

    /// One request's figures: status, error kind, tokens, spend.
    static func record(_ r: TeacherRequestRecord, into metrics: NewsdMetrics) {
        metrics.increment("newsd_teacher_requests_total", [("status", r.status)])
        if let kind = errorKind(r.status) { metrics.increment("newsd_teacher_errors_total", [("kind", kind)]) }
        metrics.increment("newsd_teacher_tokens_total", [("kind", "prompt")], by: r.promptTokens)
        metrics.increment("newsd_teacher_tokens_total", [("kind", "completion")], by: r.completionTokens)
        metrics.add("newsd_teacher_spend_usd_total", r.cost)
    }

    /// The error kind of a request status (`http_429` -> `rate_limited`), nil for `ok`.
    static func errorKind(_ status: String) -> String? {
        switch status {
        case "ok": return nil
        case "timeout", "connection": return status
        case "bad_response": return "unparsable"
        case "http_429": return "rate_limited"
        default:
            if status.hasPrefix("http_5") { return "server" }
            if status.hasPrefix("http_") { return "client" }
            return "other"
        }
    }

    /// Gauges read from the client: breaker state, budget, limits in force.
    public func publishGauges() {
        let state: Double
        switch client.breaker.current {
        case .closed: state = 0
        case .halfOpen: state = 1
        case .open: state = client.breaker.isOpen ? 2 : 1
        }
        metrics.set("newsd_teacher_breaker_state", state)
        metrics.set("newsd_teacher_budget_exhausted", client.ledger.isExhausted ? 1 : 0)
        metrics.set("newsd_teacher_daily_budget_usd", client.ledger.dailyBudget)
        metrics.set("newsd_teacher_requests_per_minute_limit", Double(client.limiter.requestsPerMinute))
    }
}
