import Foundation
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// An alert as stored.
public struct AlertRecord: Sendable, Codable, Equatable {
    /// Row id.
    public var id: Int64
    /// The company, and its name from the portfolio (nil when unknown).
    public var companyID: String, companyName: String?
    /// `shift` or `burst`; `warning` or `critical`.
    public var rule: String, severity: String
    /// `verifying`, `firing`, `resolved` or `suppressed`.
    public var state: String
    /// `pending`, `confirmed`, `partly_confirmed`, `contradicted` or `unverified`.
    public var verification: String
    /// The window's probability-weighted negative share, and the baseline's.
    public var observedShare: Double, baselineShare: Double
    /// Predictions in the window, their weight, and the Beta-Binomial tail.
    public var windowItems: Int, windowWeight: Double, pValue: Double
    /// The window.
    public var windowStart: Date, windowEnd: Date
    /// Raised, resolved (or suppressed) and acknowledged.
    public var raisedAt: Date, resolvedAt: Date?, ackedAt: Date?
    /// Drivers the teacher checked, confirmed and contradicted.
    public var driversChecked: Int, driversConfirmed: Int, driversContradicted: Int
}

/// One driver sentence of an alert.
public struct AlertDriver: Sendable, Codable, Equatable {
    /// Rank (1 = weighs most towards negative).
    public var rank: Int
    /// The news item and its text.
    public var itemID: Int64, text: String
    /// When it was published.
    public var publishedAt: Date
    /// What the student said, its P(negative) and version.
    public var studentLabel: String, negativeProbability: Double, modelVersion: String
    /// The teacher's label (nil until verified or when ambiguous) and status.
    public var teacherLabel: String?, teacherStatus: String?
}

/// Where alerts go, from `[alerts]`.
public struct DeliveryPlan: Sendable, Equatable {
    /// `alertmanager`, `webhook`, `notify`: the configured ones.
    public var sinks: [String]
    /// Link put in alerts (may be empty).
    public var linkURL: String
    /// Alertmanager refresh period, seconds (firing alerts expire after three).
    public var refreshSeconds: Double

    /// The plan of a configuration.
    public init(_ c: NewsdConfiguration.Alerts) {
        sinks = (c.alertmanagerURL.isEmpty ? [] : ["alertmanager"]) + (c.webhookURL.isEmpty ? [] : ["webhook"]) + (c.notify ? ["notify"] : [])
        linkURL = c.linkURL
        refreshSeconds = c.alertmanagerRefreshSeconds.value
    }
}

/// The `alerts`, `alert_drivers` and `alert_outbox` tables.
public enum AlertStore {
    static let columns = """
        a.id, a.company_id, c.name AS company_name, a.rule, a.severity, a.state, a.verification, a.observed_share, a.baseline_share,
        a.window_items, a.window_weight, a.p_value, a.window_start, a.window_end, a.raised_at, a.resolved_at, a.acked_at,
        a.drivers_checked, a.drivers_confirmed, a.drivers_contradicted
        """

    static func record(_ r: PostgresRow) throws -> AlertRecord {
        AlertRecord(id: try r.decode("id"), companyID: try r.decode("company_id"), companyName: try r.decode("company_name", as: String?.self),
                    rule: try r.decode("rule"), severity: try r.decode("severity"), state: try r.decode("state"),
                    verification: try r.decode("verification"), observedShare: try r.decode("observed_share"),
                    baselineShare: try r.decode("baseline_share"), windowItems: try r.decode("window_items"),
                    windowWeight: try r.decode("window_weight"), pValue: try r.decode("p_value"),
                    windowStart: try r.decode("window_start"), windowEnd: try r.decode("window_end"), raisedAt: try r.decode("raised_at"),
                    resolvedAt: try r.decode("resolved_at", as: Date?.self), ackedAt: try r.decode("acked_at", as: Date?.self),
                    driversChecked: try r.decode("drivers_checked"), driversConfirmed: try r.decode("drivers_confirmed"),
                    driversContradicted: try r.decode("drivers_contradicted"))
    }

    /// One alert.
    public static func alert(_ db: PostgresConnection, id: Int64) throws -> AlertRecord? {
        try db.query("SELECT \(unescaped: columns) FROM alerts a LEFT JOIN companies c ON c.id = a.company_id WHERE a.id = \(id)").typed.first.map(record)
    }

    /// Alerts raised since `since`, newest first, optionally of one company and state.
    public static func list(_ db: PostgresConnection, since: Date, company: String? = nil, state: String? = nil, limit: Int = 1000) throws -> [AlertRecord] {
        try db.query("""
            SELECT \(unescaped: columns) FROM alerts a LEFT JOIN companies c ON c.id = a.company_id
            WHERE a.raised_at >= \(since) AND (\(company)::text IS NULL OR a.company_id = \(company))
              AND (\(state)::text IS NULL OR a.state = \(state))
            ORDER BY a.raised_at DESC, a.id DESC LIMIT \(limit)
            """).typed.map(record)
    }

    /// The drivers of an alert, by rank.
    public static func drivers(_ db: PostgresConnection, alert: Int64) throws -> [AlertDriver] {
        try db.query("SELECT * FROM alert_drivers WHERE alert_id = \(alert) ORDER BY rank").typed.map { r in
            AlertDriver(rank: try r.decode("rank"), itemID: try r.decode("item_id"), text: try r.decode("text"), publishedAt: try r.decode("published_at"),
                        studentLabel: try r.decode("student_label"), negativeProbability: try r.decode("negative_probability"),
                        modelVersion: try r.decode("model_version"), teacherLabel: try r.decode("teacher_label", as: String?.self),
                        teacherStatus: try r.decode("teacher_status", as: String?.self))
        }
    }

    /// Acknowledges an alert; false when there is no such alert.
    @discardableResult
    public static func acknowledge(_ db: PostgresConnection, id: Int64, by who: String) throws -> Bool {
        try db.query("UPDATE alerts SET acked_at = coalesce(acked_at, now()), acked_by = coalesce(acked_by, \(who)) WHERE id = \(id)").affected == 1
    }

    /// Per company, the open alert's raise time or the last alert's end (for the detector's
    /// states on every host).
    public static func states(_ db: PostgresConnection) throws -> [String: NegativeShiftDetector.State] {
        var out: [String: NegativeShiftDetector.State] = [:]
        for r in try db.query("""
            SELECT DISTINCT ON (company_id) company_id, state, extract(epoch FROM raised_at)::double precision AS raised,
                   extract(epoch FROM coalesce(resolved_at, raised_at))::double precision AS ended
            FROM alerts ORDER BY company_id, raised_at DESC, id DESC
            """).typed {
            let state: String = try r.decode("state")
            out[try r.decode("company_id")] = state == "verifying" || state == "firing"
                ? .firing(since: try r.decode("raised")) : .quiet(lastEnded: try r.decode("ended"))
        }
        return out
    }

    /// Raises an alert unless the company has an open one or ended one within the cool-down
    /// (another host may have raised it: the partial unique index makes that a no-op). Stores the
    /// drivers (text, student label) with it. Returns the new id, or nil.
    public static func raise(_ db: PostgresConnection, decision d: DetectorDecision, parameters: NewsdConfiguration.AlertDetector,
                             verifying: Bool, host: String, plan: DeliveryPlan) throws -> Int64? {
        guard case let .raise(rule, severity) = d.kind else { return nil }
        let f = d.figures
        return try db.transaction {
            let row = try db.query("""
                INSERT INTO alerts (company_id, rule, severity, state, verification, window_start, window_end, observed_share,
                                    baseline_share, window_weight, window_negative, window_items, p_value, parameters, raised_by)
                SELECT \(d.company), \(rule), \(severity), \(verifying ? "verifying" : "firing"), \(verifying ? "pending" : "unverified"),
                       to_timestamp(\(f.start)), to_timestamp(\(f.end)), \(f.observedShare), \(f.baselineShare), \(f.weight), \(f.negative),
                       \(f.items), \(f.pValue), \(try JSONText.encode(parameters))::jsonb, \(host)
                WHERE NOT EXISTS (SELECT 1 FROM alerts WHERE company_id = \(d.company)
                                  AND (state IN ('verifying', 'firing')
                                       OR coalesce(resolved_at, raised_at) > now() - make_interval(secs => \(parameters.cooldownMinutes * 60))))
                ON CONFLICT (company_id) WHERE state IN ('verifying', 'firing') DO NOTHING
                RETURNING id
                """).typed.first
            guard let id: Int64 = try row?.decode("id") else { return nil }
            let ids = "{" + d.drivers.map { String($0.itemID) }.joined(separator: ",") + "}"
            let ranks = "{" + d.drivers.indices.map { String($0 + 1) }.joined(separator: ",") + "}"
            try db.query("""
                INSERT INTO alert_drivers (alert_id, rank, item_id, text, published_at, student_label, negative_probability, model_version)
                SELECT \(id), r.rank, n.id, n.text, coalesce(n.published_at, n.received_at), p.label,
                       coalesce((p.probabilities->>'negative')::real, 0), p.model_version
                FROM unnest(\(ids)::bigint[], \(ranks)::integer[]) AS r(item_id, rank)
                JOIN news_items n ON n.id = r.item_id
                CROSS JOIN LATERAL (SELECT * FROM predictions p WHERE p.item_id = n.id
                                    ORDER BY p.withdrawn, p.predicted_at DESC, p.id DESC LIMIT 1) p
                """)
            if !verifying { try enqueueDeliveries(db, alert: id, event: "firing", plan: plan) }
            return id
        }
    }

    /// Claims verifications nobody finished within `timeout` seconds (their host died); returns their ids.
    public static func claimStaleVerifications(_ db: PostgresConnection, timeout: Double, host: String) throws -> [Int64] {
        try db.query("""
            UPDATE alerts SET verify_started_at = now(), raised_by = \(host)
            WHERE state = 'verifying' AND verify_started_at < now() - make_interval(secs => \(timeout))
            RETURNING id
            """).typed.map { try $0.decode("id") }
    }

    /// Marks a verification as still in progress (so no other host takes it over).
    public static func touchVerification(_ db: PostgresConnection, alert: Int64) throws {
        try db.query("UPDATE alerts SET verify_started_at = now() WHERE id = \(alert) AND state = 'verifying'")
    }

    /// Records the teacher's verdicts on the drivers and ends the verification: the alert fires
    /// (and its deliveries are queued) or is suppressed. Returns the final state, or nil when the
    /// alert was no longer verifying.
    public static func finishVerification(_ db: PostgresConnection, alert: Int64, verdicts: [Int: (label: String?, status: String)],
                                          verification: String, suppress: Bool, plan: DeliveryPlan) throws -> String? {
        try db.transaction {
            for (rank, v) in verdicts {
                try db.query("UPDATE alert_drivers SET teacher_label = \(v.label), teacher_status = \(v.status) WHERE alert_id = \(alert) AND rank = \(rank)")
            }
            let checked = verdicts.values.filter { $0.label != nil }.count
            let confirmed = verdicts.values.filter { $0.label == "negative" }.count
            let state = suppress ? "suppressed" : "firing"
            let done = try db.query("""
                UPDATE alerts SET state = \(state), verification = \(verification), drivers_checked = \(checked),
                       drivers_confirmed = \(confirmed), drivers_contradicted = \(checked - confirmed),
                       resolved_at = CASE WHEN \(suppress) THEN now() END
                WHERE id = \(alert) AND state = 'verifying'
                """).affected
            guard done == 1 else { return nil }
            if !suppress { try enqueueDeliveries(db, alert: alert, event: "firing", plan: plan) }
            return state
        }
    }

    /// Resolves the company's firing alert (one host wins); returns its id.
    public static func resolve(_ db: PostgresConnection, company: String, plan: DeliveryPlan) throws -> Int64? {
        try db.transaction {
            guard let id: Int64 = try db.query("""
                UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE company_id = \(company) AND state = 'firing' RETURNING id
                """).typed.first?.decode("id") else { return nil }
            try enqueueDeliveries(db, alert: id, event: "resolved", plan: plan)
            return id
        }
    }

    /// Queues a delivery of `alert`'s `event` to each sink (default: the configured ones), with a
    /// payload fixed now (so every retry sends the same bytes) and an idempotency key unique per
    /// alert, event, sink and `round` (Alertmanager refreshes of a firing alert).
    public static func enqueueDeliveries(_ db: PostgresConnection, alert: Int64, event: String, plan: DeliveryPlan, only: [String]? = nil, round: Int = 0) throws {
        let targets = only ?? plan.sinks
        guard !targets.isEmpty, let record = try self.alert(db, id: alert) else { return }
        // A firing event for an alert that is no longer firing would undo its resolution.
        if event == "firing" && record.state != "firing" { return }
        let drivers = try self.drivers(db, alert: alert)
        for sink in targets {
            let key = "newsd-alert-\(alert)-\(event)-\(sink)" + (round > 0 ? "-\(round)" : "")
            let payload = try AlertPayloads.payload(sink: sink, alert: record, drivers: drivers, event: event, key: key, plan: plan, now: Date())
            try db.query("""
                INSERT INTO alert_outbox (alert_id, sink, event, idempotency_key, payload)
                VALUES (\(alert), \(sink), \(event), \(key), \(payload)::jsonb) ON CONFLICT (idempotency_key) DO NOTHING
                """)
        }
    }

    /// Queues Alertmanager refreshes of firing alerts, one per `refresh` seconds of firing (the
    /// key makes hosts agree).
    public static func enqueueRefreshes(_ db: PostgresConnection, plan: DeliveryPlan) throws {
        guard plan.sinks.contains("alertmanager") else { return }
        let refresh = plan.refreshSeconds
        let due = try db.query("""
            SELECT id, floor(extract(epoch FROM now() - raised_at) / \(refresh))::integer AS round FROM alerts
            WHERE state = 'firing' AND now() - raised_at >= make_interval(secs => \(refresh))
            """).typed
        for r in due {
            let id: Int64 = try r.decode("id"), round: Int = try r.decode("round")
            let key = "newsd-alert-\(id)-firing-alertmanager-\(round)"
            guard try db.query("SELECT 1 FROM alert_outbox WHERE idempotency_key = \(key)").typed.isEmpty else { continue }
            // The share lock makes a concurrent resolve wait for this transaction: the refresh is
            // queued before the resolution (and delivered before it), or not at all.
            try db.transaction {
                guard !(try db.query("SELECT 1 FROM alerts WHERE id = \(id) AND state = 'firing' FOR SHARE").typed.isEmpty) else { return }
                try enqueueDeliveries(db, alert: id, event: "firing", plan: plan, only: ["alertmanager"], round: round)
            }
        }
    }
}
