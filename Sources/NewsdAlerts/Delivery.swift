import CCrypto
import Foundation
import Logging
import NewsdHTTP
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// The bodies sent to each sink. Built once, when the delivery is queued: every retry sends the
/// same bytes (and the same signature).
public enum AlertPayloads {
    /// The webhook's and NOTIFY's JSON document.
    public struct Document: Codable, Sendable, Equatable {
        /// Alert id, `firing` or `resolved`, and the delivery's idempotency key.
        public var alertID: Int64, event: String, idempotencyKey: String
        /// The company and its name.
        public var companyID: String, companyName: String?
        /// Rule, severity, state and verification.
        public var rule: String, severity: String, state: String, verification: String
        /// Shares, window size and the test's tail.
        public var observedShare: Double, baselineShare: Double, windowItems: Int, pValue: Double
        /// Times, ISO 8601.
        public var windowStart: String, windowEnd: String, raisedAt: String, resolvedAt: String?
        /// Teacher checks of the drivers.
        public var driversChecked: Int, driversConfirmed: Int, driversContradicted: Int
        /// The driver sentences.
        public var drivers: [Driver]
        /// Link to more (optional).
        public var link: String?

        /// One driver.
        public struct Driver: Codable, Sendable, Equatable {
            /// Text, student label, P(negative), teacher label.
            public var text: String, student: String, pNegative: Double, teacher: String?
        }

        enum CodingKeys: String, CodingKey {
            case alertID = "alert_id", event, idempotencyKey = "idempotency_key", companyID = "company_id", companyName = "company_name"
            case rule, severity, state, verification, observedShare = "observed_share", baselineShare = "baseline_share"
            case windowItems = "window_items", pValue = "p_value", windowStart = "window_start", windowEnd = "window_end"
            case raisedAt = "raised_at", resolvedAt = "resolved_at", driversChecked = "drivers_checked"
            case driversConfirmed = "drivers_confirmed", driversContradicted = "drivers_contradicted", drivers, link
        }
    }

    /// ISO 8601 with milliseconds, UTC.
    public static func iso(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    /// A one-line summary: "ACME: 72% negative vs 18% baseline (12 items, confirmed 3/4)".
    public static func summary(_ a: AlertRecord) -> String {
        let verdict = a.verification == "unverified" ? "unverified" : "teacher confirmed \(a.driversConfirmed)/\(a.driversChecked)"
        return String(format: "%@: %.0f%% negative vs %.0f%% baseline (%d items, %@)", a.companyName ?? a.companyID,
                      a.observedShare * 100, a.baselineShare * 100, a.windowItems, verdict)
    }

    /// The JSON payload for `sink`.
    public static func payload(sink: String, alert a: AlertRecord, drivers: [AlertDriver], event: String, key: String,
                               plan: DeliveryPlan, now: Date) throws -> String {
        if sink == "alertmanager" {
            // Labels identify the alert in Alertmanager (same labels = same alert: retries and
            // refreshes are idempotent there); endsAt makes it resolved, or bounds a firing one
            // that newsd stops refreshing.
            var labels = ["alertname": "NewsdNegativeShift", "company": a.companyID, "severity": a.severity,
                          "rule": a.rule, "alert_id": String(a.id), "service": "newsd"]
            if let name = a.companyName { labels["company_name"] = name }
            let top = drivers.prefix(5).map { "\($0.rank). [\($0.teacherLabel ?? $0.studentLabel)] \(String($0.text.prefix(300)))" }
            let annotations = ["summary": summary(a), "observed_share": String(format: "%.4f", a.observedShare),
                               "baseline_share": String(format: "%.4f", a.baselineShare), "verification": a.verification,
                               "window": "\(iso(a.windowStart)) .. \(iso(a.windowEnd))", "top_sentences": top.joined(separator: "\n"),
                               "idempotency_key": key]
            let ends = event == "resolved" ? (a.resolvedAt ?? now) : now.addingTimeInterval(3 * plan.refreshSeconds)
            var alert: [String: JSONValue] = ["labels": .object(labels.mapValues { .string($0) }),
                                              "annotations": .object(annotations.mapValues { .string($0) }),
                                              "startsAt": .string(iso(a.raisedAt)), "endsAt": .string(iso(ends))]
            if !plan.linkURL.isEmpty { alert["generatorURL"] = .string(plan.linkURL) }
            return try JSONText.encode([JSONValue.object(alert)])
        }
        // NOTIFY payloads must stay under 8000 bytes as Postgres prints the stored jsonb (with
        // spaces after ',' and ':'): texts are cut, and drivers dropped past 6000 bytes compact.
        let cut = sink == "notify" ? 240 : 2000
        // jsonb prints numbers in full decimal (1e-200 would be 200 digits): the tail is
        // reported down to 1e-12.
        let p = max(a.pValue, 1e-12)
        var doc = Document(alertID: a.id, event: event, idempotencyKey: key, companyID: a.companyID, companyName: a.companyName, rule: a.rule,
                           severity: a.severity, state: event == "resolved" ? "resolved" : a.state, verification: a.verification,
                           observedShare: a.observedShare, baselineShare: a.baselineShare, windowItems: a.windowItems, pValue: p,
                           windowStart: iso(a.windowStart), windowEnd: iso(a.windowEnd), raisedAt: iso(a.raisedAt),
                           resolvedAt: a.resolvedAt.map(iso), driversChecked: a.driversChecked, driversConfirmed: a.driversConfirmed,
                           driversContradicted: a.driversContradicted,
                           drivers: drivers.map { .init(text: String($0.text.prefix(cut)), student: $0.studentLabel, pNegative: $0.negativeProbability, teacher: $0.teacherLabel) },
                           link: plan.linkURL.isEmpty ? nil : plan.linkURL)
        var text = try JSONText.encode(doc)
        while sink == "notify" && text.utf8.count > 6_000 && !doc.drivers.isEmpty {
            doc.drivers.removeLast()
            text = try JSONText.encode(doc)
        }
        return text
    }
}

/// `X-Newsd-Signature: sha256=<hex HMAC-SHA256 of the body with the shared secret>`.
public enum WebhookSignature {
    /// The header value for `body`.
    public static func sign(_ body: [UInt8], secret: String) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let key = Array(secret.utf8)
        _ = key.withUnsafeBytes { k in
            body.withUnsafeBytes { b in
                HMAC(EVP_sha256(), k.baseAddress, Int32(k.count), b.baseAddress?.assumingMemoryBound(to: UInt8.self), b.count, &digest, &length)
            }
        }
        return "sha256=" + digest.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
    }
}

/// One queued delivery.
public struct OutboxItem: Sendable {
    /// Row id, alert, sink, event, key, payload text, attempts so far (this one included).
    public var id: Int64, alertID: Int64, sink: String, event: String, key: String, payload: String, attempts: Int
}

/// The outcome of one delivery attempt.
public enum DeliveryOutcome: Sendable, Equatable {
    /// Accepted.
    case delivered
    /// Try again later (connection refused, 5xx, 408, 429, timeout).
    case retry(String)
    /// The receiver refused it for good (other 4xx): kept, marked failed, counted.
    case rejected(String)
}

/// Delivers the outbox: claims due rows (`FOR UPDATE SKIP LOCKED`, a lease so a crashed host's
/// claims come back), sends each, and records the outcome with exponential backoff. Deliveries
/// of one alert to one sink go in order (a resolve never overtakes its firing).
public final class AlertDelivery: Sendable {
    private let configuration: NewsdConfiguration.Alerts
    private let http: HTTPClient
    private let logger: Logger
    private let metrics: NewsdMetrics
    /// The webhook secret (`NEWSD_WEBHOOK_SECRET` or the credentials file).
    private let secret: String?

    /// A deliverer for `[alerts]`.
    public init(configuration: NewsdConfiguration.Alerts, logger: Logger, metrics: NewsdMetrics, secret: String? = Secrets.value("WEBHOOK_SECRET")) throws {
        self.configuration = configuration
        self.logger = logger
        self.metrics = metrics
        self.secret = secret
        http = try HTTPClient(maxConcurrent: 4, userAgent: "newsd-alerts")
    }

    /// Stops the HTTP thread.
    public func shutdown() { http.shutdown() }

    /// Claims up to `limit` due deliveries for `leaseSeconds` (`pass`: every claimed row's request
    /// timeout plus a minute), counting the attempt.
    public static func claim(_ db: PostgresConnection, limit: Int, leaseSeconds: Double) throws -> [OutboxItem] {
        try db.query("""
            UPDATE alert_outbox o SET attempts = o.attempts + 1, next_attempt_at = now() + make_interval(secs => \(leaseSeconds))
            WHERE o.id IN (SELECT q.id FROM alert_outbox q
                           WHERE q.delivered_at IS NULL AND q.failed_at IS NULL AND q.next_attempt_at <= now()
                             AND NOT EXISTS (SELECT 1 FROM alert_outbox e WHERE e.alert_id = q.alert_id AND e.sink = q.sink
                                             AND e.id < q.id AND e.delivered_at IS NULL AND e.failed_at IS NULL)
                           ORDER BY q.id LIMIT \(limit) FOR UPDATE SKIP LOCKED)
            RETURNING o.id, o.alert_id, o.sink, o.event, o.idempotency_key, o.payload::text AS payload, o.attempts
            """).typed.map { r in
            OutboxItem(id: try r.decode("id"), alertID: try r.decode("alert_id"), sink: try r.decode("sink"), event: try r.decode("event"),
                       key: try r.decode("idempotency_key"), payload: try r.decode("payload"), attempts: try r.decode("attempts"))
        }.sorted { $0.id < $1.id }
    }

    /// Delivers one NOTIFY row: the notification and the mark are one transaction (exactly once).
    public static func deliverNotify(_ db: PostgresConnection, _ item: OutboxItem) throws {
        try db.transaction {
            // Still ours (our claim's attempt), not delivered by a host that took it over.
            guard try db.query("""
                UPDATE alert_outbox SET delivered_at = now(), last_error = NULL
                WHERE id = \(item.id) AND attempts = \(item.attempts) AND delivered_at IS NULL
                """).affected == 1 else { return }
            try db.query("SELECT pg_notify('newsd_alerts', \(item.payload))")
        }
    }

    /// Hands claimed deliveries back unsent: due at once, with the attempt their claim counted
    /// undone (it was never made). Only while the claim is ours: a row another host has claimed
    /// since (a later attempt) is left to it.
    public static func release(_ db: PostgresConnection, _ items: [OutboxItem]) throws {
        for item in items {
            try db.query("""
                UPDATE alert_outbox SET attempts = attempts - 1, next_attempt_at = now()
                WHERE id = \(item.id) AND delivered_at IS NULL AND failed_at IS NULL AND attempts = \(item.attempts)
                """)
        }
    }

    /// Records an HTTP delivery's outcome.
    public static func record(_ db: PostgresConnection, _ item: OutboxItem, _ outcome: DeliveryOutcome, retryIn: Double) throws {
        switch outcome {
        case .delivered:
            try db.query("UPDATE alert_outbox SET delivered_at = now(), last_error = NULL WHERE id = \(item.id)")
        case let .retry(why):
            // Only while the claim is ours: a host that took the row over keeps its lease.
            try db.query("""
                UPDATE alert_outbox SET last_error = \(String(why.prefix(500))), next_attempt_at = now() + make_interval(secs => \(retryIn))
                WHERE id = \(item.id) AND delivered_at IS NULL AND attempts = \(item.attempts)
                """)
        case let .rejected(why):
            try db.query("UPDATE alert_outbox SET failed_at = now(), last_error = \(String(why.prefix(500))) WHERE id = \(item.id) AND delivered_at IS NULL")
        }
    }

    /// Sends one HTTP delivery.
    public func send(_ item: OutboxItem) async -> DeliveryOutcome {
        let body = Array(item.payload.utf8)
        var headers = ["Content-Type: application/json", "Idempotency-Key: \(item.key)", "X-Newsd-Idempotency-Key: \(item.key)",
                       "X-Newsd-Event: \(item.event)", "X-Newsd-Delivery-Attempt: \(item.attempts)"]
        let url: String
        switch item.sink {
        case "alertmanager":
            let base = configuration.alertmanagerURL
            url = (base.hasSuffix("/") ? String(base.dropLast()) : base) + "/api/v2/alerts"
        case "webhook":
            url = configuration.webhookURL
            if let secret { headers.append("X-Newsd-Signature: \(WebhookSignature.sign(body, secret: secret))") }
        default:
            return .rejected("unknown sink \(item.sink)")
        }
        guard !url.isEmpty && url != "/api/v2/alerts" else { return .retry("\(item.sink) is not configured on this host") }
        let timeout = configuration.deliveryTimeoutSeconds.value
        do {
            let response = try await http.send(HTTPRequest(url: url, method: "POST", headers: headers, body: body,
                                                           connectTimeout: min(timeout, 5), timeout: timeout))
            switch response.status {
            case 200..<300: return .delivered
            case 408, 425, 429, 500...599: return .retry("HTTP \(response.status)")
            default: return .rejected("HTTP \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))")
            }
        } catch {
            return .retry("\(error)")
        }
    }

    /// The wait before attempt `attempts + 1`: doubling from `retry_initial_seconds` up to `retry_max_seconds`, with jitter.
    public func backoff(afterAttempts attempts: Int) -> Double {
        let base = configuration.retryInitialSeconds.value * pow(2, Double(max(0, attempts - 1)))
        return min(configuration.retryMaxSeconds.value, base) * Double.random(in: 0.8...1.0)
    }

    /// Deliveries claimed at once: few, so the lease (every one's timeout plus a minute) always
    /// outlasts sending them one after another.
    static let claimSize = 4

    /// One pass: claims due deliveries and sends them; returns how many it tried. A row that
    /// fails (a receiver down, a NOTIFY Postgres refuses) is rescheduled or marked failed on its
    /// own and never holds up the others; `stop` ends the pass between rows, handing the rows not
    /// sent back at once (not when the lease ends, 100 s with the default timeout: a restart or
    /// another host delivers them now).
    public func pass(_ database: BlockingDatabase, stop: StopFlag? = nil) async throws -> Int {
        let lease = configuration.deliveryTimeoutSeconds.value * Double(Self.claimSize) + 60
        let items = try await database.run("claim alert deliveries") { try Self.claim($0, limit: Self.claimSize, leaseSeconds: lease) }
        var tried = 0
        for item in items {
            if stop?.isSet == true {
                let unsent = Array(items[tried...])
                try await database.run("release alert deliveries") { try Self.release($0, unsent) }
                break
            }
            tried += 1
            if item.sink == "notify" {
                do {
                    try await database.run("notify alert") { try Self.deliverNotify($0, item) }
                    metrics.increment("newsd_alert_deliveries_total", [("sink", item.sink), ("outcome", "delivered")])
                } catch let e as PostgresError where !e.isRetriable {
                    metrics.increment("newsd_alert_deliveries_total", [("sink", item.sink), ("outcome", "rejected")])
                    logger.error("alert NOTIFY refused by Postgres; not retried", metadata: ["alert": "\(item.alertID)", "error": "\(e)"])
                    try await database.run("record alert delivery") { try Self.record($0, item, .rejected("\(e)"), retryIn: 0) }
                }
                continue
            }
            let outcome = await send(item)
            let wait = backoff(afterAttempts: item.attempts)
            try await database.run("record alert delivery") { try Self.record($0, item, outcome, retryIn: wait) }
            switch outcome {
            case .delivered:
                metrics.increment("newsd_alert_deliveries_total", [("sink", item.sink), ("outcome", "delivered")])
                logger.info("alert delivered", metadata: ["alert": "\(item.alertID)", "sink": "\(item.sink)", "event": "\(item.event)", "attempt": "\(item.attempts)"])
            case let .retry(why):
                metrics.increment("newsd_alert_deliveries_total", [("sink", item.sink), ("outcome", "retry")])
                logger.warning("alert delivery failed; will retry", metadata: ["alert": "\(item.alertID)", "sink": "\(item.sink)", "error": "\(why)",
                                                                            "attempt": "\(item.attempts)", "retry_in_s": "\(String(format: "%.1f", wait))"])
            case let .rejected(why):
                metrics.increment("newsd_alert_deliveries_total", [("sink", item.sink), ("outcome", "rejected")])
                logger.error("alert delivery refused by the receiver; not retried", metadata: ["alert": "\(item.alertID)", "sink": "\(item.sink)", "error": "\(why)"])
            }
        }
        return tried
    }
}
