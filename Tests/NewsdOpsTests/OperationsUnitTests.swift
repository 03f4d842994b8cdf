import Foundation
import Logging
import NewsdOps
import Testing

@Suite("Reload plan, structured log lines, secret scrubbing, metrics registry")
struct OperationsUnitTests {
    @Test("a reload applies the safe keys and lists the ones that need a restart, secrets hidden")
    func reloadPlan() throws {
        var running = NewsdConfiguration()
        running.postgres.url = "postgresql://newsd:old-pass@db/newsd"
        var reread = running
        reread.teacher.requestsPerMinute = 1234
        reread.teacher.marginThreshold = 0.2
        reread.log.level = .debug
        reread.kafka.brokers = "other:9092"
        reread.postgres.url = "postgresql://newsd:new-pass@db/newsd"
        reread.kafka.properties = ["sasl.password": "x"]
        let plan = try ReloadPlan(running: running, reread: reread)
        #expect(Set(plan.applied.map(\.key)) == ["teacher.requests_per_minute", "teacher.margin_threshold", "log.level"])
        #expect(Set(plan.needsRestart.map(\.key)) == ["kafka.brokers", "postgres.url", "kafka.properties"])
        #expect(plan.result.teacher.requestsPerMinute == 1234 && plan.result.log.level == .debug)
        #expect(plan.result.kafka.brokers == running.kafka.brokers && plan.result.postgres.url == running.postgres.url)
        let shown = (plan.applied + plan.needsRestart).map(\.description).joined(separator: " ")
        #expect(!shown.contains("pass") && shown.contains("teacher.requests_per_minute: 600 -> 1234"), "\(shown)")
        #expect(try ReloadPlan(running: running, reread: running).applied.isEmpty)
        // The alert detector's parameters and per-company overrides apply at once; where alerts
        // are delivered needs a restart.
        var alerts = running
        alerts.alerts.detector.minLift = 0.3
        alerts.alerts.companies = ["ACME": ["min_support": 3]]
        alerts.alerts.webhookURL = "http://127.0.0.1:1/hook"
        let alertPlan = try ReloadPlan(running: running, reread: alerts)
        #expect(alertPlan.result.alerts.detector.minLift == 0.3)
        #expect(alertPlan.result.alerts.companies["ACME"]?["min_support"] == 3)
        #expect(alertPlan.result.alerts.webhookURL == "")
        #expect(alertPlan.needsRestart.map(\.key) == ["alerts.webhook_url"])
    }

    @Test("logfmt and JSON lines: sorted fields, quoting and escapes, UTC time")
    func logLines() throws {
        let t = Date(timeIntervalSince1970: 1_800_000_000.25)
        let fields: Logger.Metadata = ["batch": "12", "model": "v2", "note": "two words \"quoted\"\nnext", "a key": "x=y"]
        let logfmt = StructuredLogHandler.format(.logfmt, time: t, level: .info, label: "newsd", message: "batch written", fields: fields)
        #expect(logfmt == #"ts=2027-01-15T08:00:00.250Z level=info logger=newsd msg="batch written" a_key="x=y" batch=12 model=v2 note="two words \"quoted\"\nnext""#, "\(logfmt)")
        let json = StructuredLogHandler.format(.json, time: t, level: .warning, label: "newsd", message: "m", fields: fields)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: String])
        #expect(object["level"] == "warning" && object["batch"] == "12" && object["note"] == "two words \"quoted\"\nnext" && object["ts"] == "2027-01-15T08:00:00.250Z")
    }

    @Test("registered secrets are scrubbed from any text; short values are not registered")
    func scrubbing() {
        var c = NewsdConfiguration()
        c.postgres.url = "postgresql://newsd:p%40ss-unit-77@db/newsd"
        c.kafka.properties = ["sasl.password": "kafka-unit-secret"]
        SecretScrubber.register(configuration: c, environment: ["NEWSD_TEACHER_API_KEY": "sk-unit-secret-1", "PGPASSWORD": "env-unit-pw"])
        SecretScrubber.register(["abc"])
        let text = "url postgresql://newsd:p%40ss-unit-77@db and p@ss-unit-77, key sk-unit-secret-1, kafka-unit-secret, env-unit-pw, abc"
        #expect(SecretScrubber.scrub(text) == "url postgresql://newsd:***@db and ***, key ***, ***, ***, abc")
    }

    /// Before: three catalogued counters (offset restarts, unknown companies, dropped mentions)
    /// were exported but never incremented, so the alerts an operator builds on them never fire.
    @Test("every catalogued metric is emitted by some source file, not only declared")
    func everyCatalogMetricIsEmitted() throws {
        let sources = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(at: sources, includingPropertiesForKeys: nil))
        var code = ""
        for case let url as URL in files where url.pathExtension == "swift" && url.lastPathComponent != "Telemetry.swift" {
            code += try String(contentsOf: url, encoding: .utf8)
        }
        #expect(code.count > 100_000, "Sources not found at \(sources.path)")
        for entry in MetricCatalog.entries {
            #expect(code.contains("\"\(entry.name)\""), "\(entry.name) is catalogued but no source emits it")
        }
    }

    @Test("the registry renders catalogued families with HELP and TYPE; histograms have buckets; removed series are gone")
    func registry() {
        let m = NewsdMetrics()
        m.increment("newsd_messages_consumed_total", [("topic", "news")], by: 3)
        m.observe("newsd_stage_duration_seconds", [("stage", "parse")], 0.003)
        m.set("newsd_consumer_lag_messages", [("topic", "news"), ("partition", "0")], 5)
        m.set("newsd_consumer_lag_messages", [("topic", "news"), ("partition", "1")], 7)
        m.add("newsd_teacher_spend_usd_total", 0.25)
        #expect(m.gaugeSum("newsd_consumer_lag_messages") == 12)
        m.remove("newsd_consumer_lag_messages", [("topic", "news"), ("partition", "1")])
        let text = String(decoding: m.render(), as: UTF8.self)
        #expect(text.contains("# HELP newsd_messages_consumed_total Kafka messages consumed"))
        #expect(text.contains("# TYPE newsd_messages_consumed_total counter"))
        #expect(text.contains(#"newsd_messages_consumed_total{topic="news"} 3"#))
        #expect(text.contains(#"newsd_stage_duration_seconds_bucket{stage="parse",le="0.005"} 1"#), "\(text)")
        #expect(text.contains("newsd_teacher_spend_usd_total 0.25"))
        #expect(!text.contains(#"partition="1""#))
        #expect(HealthReport([HealthCheck("a", ok: true, "x"), HealthCheck("b", ok: false, "y")]).status == "fail")
    }
}
