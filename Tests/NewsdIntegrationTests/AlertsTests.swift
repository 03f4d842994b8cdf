import Foundation
import Logging
import NewsdAlerts
import NewsdDevTools
import NewsdHTTP
import NewsdOps
import NewsdPostgres
import NewsdSystem
import Testing

/// Debian's `prometheus-alertmanager` on loopback (no cluster), the program operators run.
final class AlertmanagerServer: @unchecked Sendable {
    let port: Int
    private let process = Process()
    private let directory = Harness.temporaryDirectory()

    init() throws {
        port = try Harness.freePort()
        let config = directory.appendingPathComponent("alertmanager.yml")
        try """
        route:
          receiver: "null"
        receivers:
          - name: "null"
        """.write(to: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus-alertmanager")
        process.arguments = ["--config.file=\(config.path)", "--storage.path=\(directory.appendingPathComponent("data").path)",
                             "--web.listen-address=127.0.0.1:\(port)", "--cluster.listen-address=", "--log.level=warn"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let r = Harness.httpGet(port: UInt16(port), path: "/-/ready"), r.status.contains(" 200") { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw TestFailure("alertmanager did not become ready on port \(port)")
    }

    deinit { if process.isRunning { process.terminate(); process.waitUntilExit() } }

    var url: String { "http://127.0.0.1:\(port)" }

    /// The active alerts (`GET /api/v2/alerts`): resolved ones are not listed.
    func alerts() -> [[String: Any]] {
        guard let r = Harness.httpGet(port: UInt16(port), path: "/api/v2/alerts"), r.status.contains(" 200") else { return [] }
        return ((try? JSONSerialization.jsonObject(with: Data(r.body.utf8))) as? [[String: Any]]) ?? []
    }

    func alert(id: Int64) -> [String: Any]? {
        alerts().first { (($0["labels"] as? [String: String])?["alert_id"]) == String(id) }
    }
}

/// A webhook receiver that can be down (nothing listening) and later up on the same port; once up
/// it answers 503 to its first `failFirst` requests (a receiver still starting).
final class WebhookReceiver: @unchecked Sendable {
    struct Delivery: Sendable { var key: String; var signature: String; var body: [UInt8]; var attempt: String; var accepted: Bool }
    let port: Int
    let failFirst: Int
    let received = LockedValue<[Delivery]>([])
    private let server = LockedValue<HTTPService?>(nil)

    init(failFirst: Int = 0) throws { port = try Harness.freePort(); self.failFirst = failFirst }

    /// The deliveries it accepted (2xx).
    var accepted: [Delivery] { received.value.filter(\.accepted) }

    var url: String { "http://127.0.0.1:\(port)/hook" }

    func start() async throws {
        var s = HTTPService.Settings()
        s.host = "127.0.0.1"; s.port = port
        let (received, failFirst) = (received, failFirst)
        let service = HTTPService(settings: s, logger: Harness.logger) { request in
            let accept = received.withLock { r -> Bool in
                let accept = r.count >= failFirst
                r.append(Delivery(key: request.headers["x-newsd-idempotency-key"] ?? "", signature: request.headers["x-newsd-signature"] ?? "",
                                  body: request.body, attempt: request.headers["x-newsd-delivery-attempt"] ?? "", accepted: accept))
                return accept
            }
            return HTTPServiceReply(status: accept ? 204 : 503, body: [])
        }
        _ = try await service.start()
        server.withLock { $0 = service }
    }

    func stop() async { if let s = server.withLock({ s in defer { s = nil }; return s }) { await s.stop() } }
}

/// Stored predictions for the detector, written straight into the tables ingest writes.
enum AlertSeed {
    static func insert(_ db: PostgresConnection, _ rows: [(company: String, at: Date, pNegative: Double)], tag: String) throws {
        let companies = "{" + rows.map { "\"\($0.company)\"" }.joined(separator: ",") + "}"
        let times = "{" + rows.map { String($0.at.timeIntervalSince1970) }.joined(separator: ",") + "}"
        let pn = "{" + rows.map { String($0.pNegative) }.joined(separator: ",") + "}"
        let texts = "{" + rows.enumerated().map { i, r in
            "\"\(r.company) \(tag) report \(i): \(r.pNegative >= 0.5 ? "shares plunged after the profit warning" : "the company held its annual meeting")\""
        }.joined(separator: ",") + "}"
        try db.execute("""
            WITH src AS (SELECT * FROM unnest($1::text[], $2::float8[], $3::float8[], $4::text[]) WITH ORDINALITY AS s(company, t, pn, text, ord)),
            ins AS (INSERT INTO news_items (topic, partition, kafka_offset, text, published_at)
                    SELECT $5, 0, ord, text, to_timestamp(t) FROM src RETURNING id, kafka_offset),
            pred AS (INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy)
                     SELECT ins.id, 'seed', CASE WHEN s.pn >= 0.5 THEN 'negative' ELSE 'neutral' END,
                            jsonb_build_object('negative', s.pn, 'neutral', (1 - s.pn) * 0.8, 'positive', (1 - s.pn) * 0.2), 0.6, 0.5
                     FROM ins JOIN src s ON s.ord = ins.kafka_offset RETURNING item_id)
            INSERT INTO mentions (item_id, company_id, matched_by, published_at)
            SELECT ins.id, s.company, 'id', to_timestamp(s.t) FROM ins JOIN src s ON s.ord = ins.kafka_offset
            """, [companies, times, pn, texts, "seed-\(tag)"])
    }

    /// Six companies with six hours of calm history (15% negative).
    static func history(_ db: PostgresConnection, now: Date = Date()) throws {
        try db.execute("INSERT INTO companies (id, name) VALUES ('ACME', 'Acme Corp'), ('B1', 'B One'), ('B2', 'B Two'), ('B3', 'B Three'), ('B4', 'B Four'), ('B5', 'B Five')")
        var rows: [(String, Date, Double)] = []
        for c in ["ACME", "B1", "B2", "B3", "B4", "B5"] {
            for i in 0..<60 { rows.append((c, now.addingTimeInterval(-6 * 3600 + Double(i) * 355), i % 7 == 0 ? 0.9 : 0.08)) }
        }
        try insert(db, rows, tag: "history")
    }

    /// ACME turns negative now; the others carry on as usual.
    static func shift(_ db: PostgresConnection, now: Date = Date()) throws {
        var rows: [(String, Date, Double)] = []
        for i in 0..<16 { rows.append(("ACME", now.addingTimeInterval(-Double(i) * 0.5), 0.95)) }
        for c in ["B1", "B2", "B3", "B4", "B5"] { for i in 0..<3 { rows.append((c, now.addingTimeInterval(-Double(i)), 0.08)) } }
        try insert(db, rows, tag: "shift")
    }
}

/// A running `AlertService` (one "host").
final class RunningAlerts: @unchecked Sendable {
    let service: AlertService
    let metrics = NewsdMetrics()
    private var task: Task<Void, Never>?
    /// Where the services start: a plain `Task` would first need a slot of the 2-thread
    /// cooperative pool, which synchronous tests of other suites can hold for a minute (a CI run
    /// timed out waiting for the warm-up that way); `run()` moves to its own executor only after
    /// its first step.
    private static let executor = DedicatedTaskExecutor(label: "newsd-alerts-tests")

    init(_ c: NewsdConfiguration, secret: String? = nil) throws {
        service = try AlertService(configuration: c, logger: Harness.logger, metrics: metrics, webhookSecret: secret)
        let service = service
        task = Task(executorPreference: Self.executor) { try? await service.run() }
    }

    /// Waits for the first detector pass (the warm-up): news stored after it is new to the detector.
    func warmedUp() async throws {
        try await AlertsTests.waitUntil("the detector's warm-up", timeout: 60) { self.service.completedPasses >= 1 }
    }

    func stop() async {
        service.requestStop()
        task?.cancel()
        await task?.value
        task = nil
    }
}

@Suite("Alerts: detect, verify, deliver (real Postgres, Alertmanager, webhook, teacher)")
struct AlertsTests {
    static func configuration(database: String, teacher: String?) -> NewsdConfiguration {
        var c = NewsdConfiguration()
        c.postgres.url = database
        c.teacher.baseURL = teacher ?? ""
        c.teacher.requestsPerMinute = 0
        c.alerts.checkSeconds = 0.3
        c.alerts.detector.windowMinutes = 0.5
        c.alerts.detector.falseAlertRate = 0.1
        c.alerts.detector.cooldownMinutes = 60
        c.alerts.retryInitialSeconds = 0.2
        c.alerts.retryMaxSeconds = 1
        c.analysts.rollupSeconds = 0.5
        return c
    }

    static func devTeacher(answer: String) async throws -> (DevTeacher, String) {
        let book = try AnswerBook(table: CSVTable(header: ["text", "label"], rows: [["unrelated sentence", "neutral"]]))
        let teacher = DevTeacher(book: book, unknown: .label(answer))
        return (teacher, "http://127.0.0.1:\(try await teacher.start(port: 0))/v1")
    }

    /// Polls without blocking a thread of the cooperative pool (the services under test run there).
    static func waitUntil(_ what: String, timeout: Double, _ condition: () throws -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return }
            try await Task.sleep(for: .milliseconds(200))
        }
        // Once more: a poller starved past its deadline by a busy pool must not fail a condition
        // that came true meanwhile.
        if try condition() { return }
        throw TestFailure("timed out after \(timeout) s waiting for \(what)")
    }

    @Test("one company turns negative: one alert across two hosts, teacher-confirmed, delivered to Alertmanager, NOTIFY and a webhook that was down (across a restart), then resolved")
    func endToEnd() async throws {
        let database = try Harness.freshDatabase()
        let db = try PostgresConnection(database)
        try Schema.migrate(db)
        try AlertSeed.history(db)
        let alertmanager = try AlertmanagerServer()
        let webhook = try WebhookReceiver(failFirst: 1)   // down: nothing listens on its port yet
        let (teacher, teacherURL) = try await Self.devTeacher(answer: "negative")
        defer { _ = teacher }
        var c = Self.configuration(database: database, teacher: teacherURL)
        c.alerts.alertmanagerURL = alertmanager.url
        c.alerts.webhookURL = webhook.url
        let secret = "s3cret-for-hmac"
        let listener = try PostgresConnection(database)
        try listener.execute("LISTEN newsd_alerts")

        // Two hosts run the detector on the same database.
        let hostA = try RunningAlerts(c, secret: secret), hostB = try RunningAlerts(c, secret: secret)
        try await hostA.warmedUp(); try await hostB.warmedUp()
        try AlertSeed.shift(db)
        try await Self.waitUntil("a firing alert", timeout: 60) { try Harness.count(database, "SELECT count(*) FROM alerts WHERE state = 'firing'") == 1 }
        let row = try db.query("SELECT id, company_id, verification, drivers_checked, drivers_confirmed FROM alerts").typed
        #expect(row.count == 1, "two hosts raised \(row.count) alerts")
        let id: Int64 = try row[0].decode("id")
        #expect(try row[0].decode("company_id", as: String.self) == "ACME")
        #expect(try row[0].decode("verification", as: String.self) == "confirmed")
        #expect(try row[0].decode("drivers_confirmed", as: Int.self) >= 1)
        // The drivers' teacher labels are stored like any other (training uses them), with
        // their requests on the alert budget's worker.
        #expect(try Harness.count(database, "SELECT count(*) FROM teacher_labels WHERE label = 'negative'") >= 1)
        #expect(try Harness.count(database, "SELECT count(*) FROM teacher_requests WHERE worker LIKE 'alerts:%'") >= 1)
        #expect(try Harness.count(database, "SELECT count(*) FROM alert_drivers WHERE alert_id = \(id) AND teacher_label = 'negative'") >= 1)

        // Alertmanager shows it.
        try await Self.waitUntil("the alert in Alertmanager", timeout: 30) { alertmanager.alert(id: id) != nil }
        let shown = alertmanager.alert(id: id)!
        #expect((shown["labels"] as? [String: String])?["company"] == "ACME")
        let topSentences = (shown["annotations"] as? [String: String])?["top_sentences"] ?? ""
        #expect(topSentences.contains("profit warning"))
        // NOTIFY arrived once.
        var notes: [(channel: String, payload: String)] = []
        try await Self.waitUntil("NOTIFY newsd_alerts", timeout: 20) { notes += try listener.notifications(); return !notes.isEmpty }
        #expect(notes.count == 1)
        #expect(notes.first?.payload.contains("\"alert_id\": \(id)") == true || notes.first?.payload.contains("\"alert_id\":\(id)") == true)

        // The webhook is down: the delivery is retried ...
        try await Self.waitUntil("webhook retries", timeout: 30) {
            try Harness.count(database, "SELECT max(attempts) FROM alert_outbox WHERE sink = 'webhook'") >= 2
        }
        // ... and survives a restart of every host.
        await hostA.stop(); await hostB.stop()
        let hostC = try RunningAlerts(c, secret: secret)
        try await webhook.start()
        try await Self.waitUntil("the webhook delivery", timeout: 30) { !webhook.accepted.isEmpty }
        // Refused once (503), then accepted: the same key, body and signature on both attempts.
        let attempts = webhook.received.value
        #expect(attempts.count >= 2 && !attempts[0].accepted)
        let first = webhook.accepted[0]
        #expect(attempts[0].key == first.key && attempts[0].body == first.body && attempts[0].signature == first.signature)
        #expect(Int(first.attempt) ?? 0 > Int(attempts[0].attempt) ?? 0)
        #expect(first.key == "newsd-alert-\(id)-firing-webhook")
        #expect(first.signature == WebhookSignature.sign(first.body, secret: secret))
        #expect(String(decoding: first.body, as: UTF8.self).contains("\"event\": \"firing\"") || String(decoding: first.body, as: UTF8.self).contains("\"event\":\"firing\""))

        // The window empties: the alert resolves, Alertmanager sees it ended, the webhook hears it.
        try await Self.waitUntil("resolution", timeout: 90) { try Harness.count(database, "SELECT count(*) FROM alerts WHERE state = 'resolved'") == 1 }
        try await Self.waitUntil("Alertmanager to see it resolved", timeout: 30) { alertmanager.alert(id: id) == nil }
        try await Self.waitUntil("the resolved webhook", timeout: 30) { webhook.accepted.count >= 2 }
        await hostC.stop()
        let keys = webhook.accepted.map(\.key)
        #expect(keys == ["newsd-alert-\(id)-firing-webhook", "newsd-alert-\(id)-resolved-webhook"], "\(keys)")
        #expect(try Harness.count(database, "SELECT count(*) FROM alerts") == 1, "an alert was raised twice")
        #expect(try Harness.count(database, "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NULL") == 0)
        await webhook.stop()
    }

    /// A host stopping between claiming deliveries and sending them hands them back: the next
    /// host sends them at once, not when the claim's lease ends (100 s with the default timeout;
    /// a CI run of `endToEnd` waited that long after its hosts restarted).
    @Test("a delivery claimed by a host that stops is handed back unsent: the next pass sends it at once, as its first attempt")
    func stoppingHostHandsItsClaimsBack() async throws {
        let database = try Harness.freshDatabase()
        let db = try PostgresConnection(database)
        try Schema.migrate(db)
        let alert: Int64 = try db.query("""
            INSERT INTO alerts (company_id, rule, severity, state, window_start, window_end, observed_share, baseline_share,
                                window_weight, window_negative, window_items, p_value, parameters, raised_by)
            VALUES ('ACME', 'shift', 'warning', 'firing', now() - interval '1 minute', now(), 0.9, 0.1, 10, 9, 10, 0.001, '{}', 'test')
            RETURNING id
            """).single().decode("id")
        try db.execute("INSERT INTO alert_outbox (alert_id, sink, event, idempotency_key, payload) VALUES ($1, 'webhook', 'firing', 'key-1', '{}')", ["\(alert)"])
        let webhook = try WebhookReceiver()
        try await webhook.start()
        var c = Self.configuration(database: database, teacher: nil)
        c.alerts.webhookURL = webhook.url
        let delivery = try AlertDelivery(configuration: c.alerts, logger: Harness.logger, metrics: NewsdMetrics(), secret: nil)
        let blocking = BlockingDatabase(url: database, label: "newsd-alerts-tests-delivery", logger: Harness.logger)
        let stopping = StopFlag()
        stopping.set()
        #expect(try await delivery.pass(blocking, stop: stopping) == 0)
        #expect(webhook.received.value.isEmpty)
        let row = try db.query("SELECT attempts, next_attempt_at <= now() AS due FROM alert_outbox").single()
        #expect(try row.decode("attempts", as: Int.self) == 0)
        #expect(try row.decode("due", as: Bool.self))
        #expect(try await delivery.pass(blocking) == 1)
        #expect(webhook.accepted.map(\.attempt) == ["1"])
        #expect(try Harness.count(database, "SELECT count(*) FROM alert_outbox WHERE delivered_at IS NOT NULL") == 1)
        blocking.stop()
        delivery.shutdown()
        await webhook.stop()
    }

    @Test("a teacher that contradicts the drivers suppresses the alert and counts the student's errors")
    func suppressed() async throws {
        let database = try Harness.freshDatabase()
        let db = try PostgresConnection(database)
        try Schema.migrate(db)
        try AlertSeed.history(db)
        let (teacher, teacherURL) = try await Self.devTeacher(answer: "positive")
        defer { _ = teacher }
        let host = try RunningAlerts(Self.configuration(database: database, teacher: teacherURL))
        try await host.warmedUp()
        try AlertSeed.shift(db)
        try await Self.waitUntil("a suppressed alert", timeout: 60) { try Harness.count(database, "SELECT count(*) FROM alerts WHERE state = 'suppressed'") == 1 }
        try await Task.sleep(for: .seconds(2))   // a further pass must not raise it again (cool-down)
        await host.stop()
        #expect(try Harness.count(database, "SELECT count(*) FROM alerts") == 1)
        #expect(try Harness.count(database, "SELECT count(*) FROM alerts WHERE verification = 'contradicted' AND drivers_contradicted > 0") == 1)
        #expect(try Harness.count(database, "SELECT count(*) FROM alert_outbox") == 0, "a suppressed alert was delivered")
        // The teacher's labels of the drivers feed the next training run.
        #expect(try Harness.count(database, "SELECT count(*) FROM teacher_labels WHERE label = 'positive'") >= 1)
        let text = String(decoding: host.metrics.render(), as: UTF8.self)
        #expect(text.contains("newsd_alerts_suppressed_total 1"))
        #expect(text.range(of: #"newsd_alert_student_errors_total [1-9]"#, options: .regularExpression) != nil, "\(text.split(separator: "\n").filter { $0.contains("alert") })")
    }

    @Test("with no teacher configured, alerts are raised unverified and say so")
    func unverified() async throws {
        let database = try Harness.freshDatabase()
        let db = try PostgresConnection(database)
        try Schema.migrate(db)
        try AlertSeed.history(db)
        let host = try RunningAlerts(Self.configuration(database: database, teacher: nil))
        try await host.warmedUp()
        try AlertSeed.shift(db)
        // Raised, whether still firing or already resolved: with the tests' 30 s window the alert
        // resolves 30 s after the shift, and a poller that a busy pool starves that long would
        // otherwise miss a state that came and went. Without a teacher, only a raised alert can be
        // resolved, and it stays unverified.
        try await Self.waitUntil("an alert", timeout: 60) {
            try Harness.count(database, "SELECT count(*) FROM alerts WHERE state IN ('firing', 'resolved') AND verification = 'unverified'") == 1
        }
        try await Self.waitUntil("NOTIFY delivered", timeout: 20) {
            try Harness.count(database, "SELECT count(*) FROM alert_outbox WHERE sink = 'notify' AND event = 'firing' AND delivered_at IS NOT NULL") == 1
        }
        await host.stop()
        #expect(try Harness.count(database, "SELECT count(*) FROM alerts WHERE company_id <> 'ACME'") == 0)
    }
}
