import Foundation
import Logging
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// Teacher verification of an alert's drivers before it is raised: drivers with no label yet
/// (imported labels first, then the teacher's cache) go to the teacher at once, outside the
/// sampling queue and its budget, within `alerts.teacher_daily_budget_usd`. Their labels are
/// stored like any teacher label, so the next training run learns from them.
public final class AlertVerifier: Sendable {
    /// The client (its own rate limits, breaker and ledger).
    public let client: TeacherClient?
    private let teacherModel: String
    private let suppressShare: Double
    private let worker: String
    private let logger: Logger
    private let metrics: NewsdMetrics

    /// A verifier; `client` nil raises alerts unverified.
    public init(configuration c: NewsdConfiguration, logger: Logger, metrics: NewsdMetrics, apiKey: String? = Secrets.value("TEACHER_API_KEY")) throws {
        if c.alerts.verify && !c.teacher.baseURL.isEmpty {
            var teacher = c.teacher
            teacher.dailyBudgetUSD = c.alerts.teacherDailyBudgetUSD
            teacher.concurrency = min(teacher.concurrency, 4)
            teacher.maxRetries = min(teacher.maxRetries, 2)
            teacher.timeoutSeconds = Seconds(min(teacher.timeoutSeconds.value, 30))
            client = try TeacherClient(settings: try TeacherSettings(configuration: teacher, apiKey: apiKey))
        } else {
            client = nil
        }
        teacherModel = c.teacher.model
        suppressShare = c.alerts.suppressShare
        worker = TeacherQueue.alertWorkerPrefix + "\(ProcessInfo.processInfo.hostName):\(getpid())"
        self.logger = logger
        self.metrics = metrics
    }

    /// Whether alerts wait for the teacher.
    public var isEnabled: Bool { client != nil }

    /// Stops the client's HTTP thread.
    public func shutdown() { client?.shutdown() }

    /// The outcome of a verification.
    public struct Outcome: Sendable, Equatable {
        /// Teacher (or imported) label and status per driver rank.
        public var verdicts: [Int: Verdict]
        /// `confirmed`, `partly_confirmed`, `contradicted` or `unverified`.
        public var verification: String
        /// True when most checked drivers are contradicted.
        public var suppress: Bool
        /// One driver's verdict.
        public struct Verdict: Sendable, Equatable {
            /// The label (nil: ambiguous or not checked).
            public var label: String?
            /// `labelled`, `ambiguous`, `imported`, or `unchecked: <why>`.
            public var status: String
        }
    }

    /// The decision from verdicts: suppressed when more than `suppressShare` of the checked
    /// drivers are contradicted; unverified when none could be checked.
    public static func decide(_ verdicts: [Int: Outcome.Verdict], suppressShare: Double) -> (verification: String, suppress: Bool) {
        let checked = verdicts.values.filter { $0.label != nil }
        guard !checked.isEmpty else { return ("unverified", false) }
        let confirmed = checked.filter { $0.label == "negative" }.count
        let contradicted = checked.count - confirmed
        if Double(contradicted) / Double(checked.count) > suppressShare { return ("contradicted", true) }
        return (confirmed == checked.count ? "confirmed" : "partly_confirmed", false)
    }

    /// Verifies `alert`'s drivers and ends its verification; returns the final state.
    public func verify(alert id: Int64, database: BlockingDatabase, plan: DeliveryPlan, stop: StopFlag? = nil) async throws -> String? {
        let (worker, teacherModel) = (worker, teacherModel)
        let drivers = try await database.run("alert drivers") { try AlertStore.drivers($0, alert: id) }
        if let client {
            let spent = try await database.run("alert teacher spend") { try TeacherQueue.spentToday($0, alerts: true) }
            client.ledger.synchronise(spentToday: spent)
        }
        var verdicts: [Int: Outcome.Verdict] = [:]
        for d in drivers {
            // A stop leaves the alert verifying: a host takes it over after the timeout.
            if stop?.isSet == true { return nil }
            try await database.run("verification in progress") { try AlertStore.touchVerification($0, alert: id) }
            let hash = teacherTextHash(d.text)
            let known = try await database.run("driver label") { db -> Outcome.Verdict? in
                if let r = try db.query("SELECT label FROM imported_labels WHERE text_hash = \(hash)").typed.first {
                    return Outcome.Verdict(label: try r.decode("label"), status: "imported")
                }
                if let r = try db.query("SELECT label, status FROM teacher_labels WHERE text_hash = \(hash)").typed.first {
                    return Outcome.Verdict(label: try r.decode("label", as: String?.self), status: try r.decode("status"))
                }
                return nil
            }
            if let known { verdicts[d.rank] = known; continue }
            guard let client else { verdicts[d.rank] = .init(label: nil, status: "unchecked: no teacher"); continue }
            do {
                let metrics = metrics
                let label = try await client.label(d.text) { record in
                    metrics.add("newsd_alert_teacher_spend_usd_total", record.cost)
                    database.enqueue("record alert request") { try TeacherQueue.record($0, item: nil, worker: worker, record) }
                }
                let text = d.text
                try await database.run("store driver label") { try TeacherQueue.store($0, text: text, label: label, teacherModel: teacherModel) }
                verdicts[d.rank] = .init(label: label.label, status: label.status)
            } catch {
                logger.warning("alert verification: the teacher could not label a driver", metadata: ["alert": "\(id)", "rank": "\(d.rank)", "error": "\(error)"])
                verdicts[d.rank] = .init(label: nil, status: "unchecked: \(String("\(error)".prefix(120)))")
            }
        }
        let (verification, suppress) = Self.decide(verdicts, suppressShare: suppressShare)
        let pairs = verdicts.mapValues { (label: $0.label, status: $0.status) }
        let state = try await database.run("finish verification") {
            try AlertStore.finishVerification($0, alert: id, verdicts: pairs, verification: verification, suppress: suppress, plan: plan)
        }
        if state == "suppressed" {
            let contradicted = verdicts.values.filter { $0.label != nil && $0.label != "negative" }.count
            metrics.increment("newsd_alerts_suppressed_total")
            metrics.increment("newsd_alert_student_errors_total", by: contradicted)
            logger.notice("alert suppressed: the teacher contradicts its drivers (counted as student errors)",
                          metadata: ["alert": "\(id)", "contradicted": "\(contradicted)", "checked": "\(verdicts.values.filter { $0.label != nil }.count)"])
        }
        return state
    }
}
