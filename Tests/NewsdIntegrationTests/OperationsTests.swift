import Foundation
import NewsdDevTools
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What operators see of a running daemon: a real Prometheus scraping it, readiness following
/// Postgres, the systemd watchdog following the ingest loop, SIGHUP reloads, logs without
/// secrets, an endpoint that holds under a flood of idle connections, the rules and dashboard,
/// install and upgrade.
@Suite("Operations: metrics, health, watchdog, reload, logs, install")
struct OperationsTests {
    // MARK: Prometheus

    @Test("a real Prometheus scrapes a running daemon: the series exist and move as work is done")
    func prometheusScrapesTheDaemon() throws {
        let stream = try TestStream(topic: "ops-prom", partitions: 2)
        var c = Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic)
        let port = try Harness.freePort()
        c.metrics.listen = "127.0.0.1:\(port)"
        let daemon = try DaemonProcess(config: try Harness.writeConfig(c), name: "ops-prom")
        let prometheus = try PrometheusServer(target: "127.0.0.1:\(port)")
        #expect(prometheus.waitForTarget(timeout: 60), "prometheus never scraped the daemon; daemon log:\n\(daemon.logText.suffix(1500))")
        let before = prometheus.value("sum(newsd_messages_consumed_total)") ?? 0
        try stream.produce(Harness.goodMessages(300, prefix: "prom") + ["{\"text\": 1}"])
        #expect(Harness.waitUntil(60) { (prometheus.value("sum(newsd_messages_consumed_total)") ?? 0) >= 301 },
                "consumed: \(String(describing: prometheus.value("sum(newsd_messages_consumed_total)")))")
        #expect(before < 301)
        #expect(prometheus.value("sum(newsd_items_stored_total)") == 300)
        #expect(prometheus.value("sum(newsd_messages_rejected_total{reason=\"malformed\"})") == 1)
        #expect((prometheus.value("sum(newsd_predictions_total)") ?? 0) == 300)
        #expect((prometheus.value("sum(newsd_batches_total)") ?? 0) >= 1)
        #expect((prometheus.value("sum(newsd_stage_duration_seconds_count{stage=\"classify\"})") ?? 0) >= 1)
        #expect(prometheus.value("newsd_postgres_up") == 1)
        #expect(prometheus.value("newsd_assigned_partitions") == 2)
        #expect(prometheus.value("count(newsd_consumer_lag_messages)") == 2)
        #expect(prometheus.value("count(newsd_model_info)") == 1)
        // Every family the daemon exports is in the catalog (help text, type), and the catalog's
        // ingest families are all there after work.
        let names = Set(prometheus.metricNames().filter { $0.hasPrefix("newsd_") })
        let catalog = Set(MetricCatalog.entries.map(\.name))
        let exported = Set(names.map { n in ["_bucket", "_sum", "_count"].reduce(n) { $0.hasSuffix($1) ? String($0.dropLast($1.count)) : $0 } })
        #expect(exported.subtracting(catalog).isEmpty, "not in the catalog: \(exported.subtracting(catalog))")
        for required in ["newsd_messages_consumed_total", "newsd_items_stored_total", "newsd_batch_size_messages", "newsd_batch_latency_seconds",
                         "newsd_ingest_loop_iterations_total", "newsd_low_confidence_share", "newsd_process_resident_bytes"] {
            #expect(exported.contains(required), "\(required) missing from \(exported.sorted())")
        }
        daemon.kill(SIGTERM)
        #expect(daemon.wait(timeout: 30) == 0)
    }

    @Test("promtool: the rules check and each fires on its synthetic series; rules and dashboard name only exported metrics")
    func rulesAndDashboard() throws {
        let ops = Harness.packageRoot.appendingPathComponent("ops")
        #expect(Harness.run("/usr/bin/promtool", ["check", "rules", ops.appendingPathComponent("newsd.rules.yml").path]) == 0)
        #expect(Harness.run("/usr/bin/promtool", ["test", "rules", ops.appendingPathComponent("newsd.rules.test.yml").path]) == 0)
        let rules = try String(contentsOf: ops.appendingPathComponent("newsd.rules.yml"), encoding: .utf8)
        let dashboard = try Data(contentsOf: ops.appendingPathComponent("grafana/newsd.json"))
        let json = try #require(try JSONSerialization.jsonObject(with: dashboard) as? [String: Any])
        let panels = try #require(json["panels"] as? [[String: Any]])
        #expect(panels.count >= 12)
        let exprs = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        let catalog = Set(MetricCatalog.entries.map(\.name))
        for text in exprs + [rules] {
            for name in Self.metricNames(in: text) {
                #expect(catalog.contains(name), "\(name) (in \(text.prefix(80))) is not a metric newsd exports")
            }
        }
        for alert in ["NewsdConsumerLagGrowing", "NewsdIngestStalled", "NewsdTeacherBudgetExhausted", "NewsdTeacherBreakerOpen",
                      "NewsdModelRollback", "NewsdRejectedShareHigh"] {
            #expect(rules.contains("alert: \(alert)"))
        }
    }

    static func metricNames(in text: String) -> Set<String> {
        let regex = try! NSRegularExpression(pattern: "newsd_[a-z0-9_]+")
        let ns = text as NSString
        return Set(regex.matches(in: text, range: NSRange(location: 0, length: ns.length)).map { m in
            let n = ns.substring(with: m.range)
            return ["_bucket", "_sum", "_count"].reduce(n) { $0.hasSuffix($1) && !$0.hasSuffix("_total") ? String($0.dropLast($1.count)) : $0 }
        })
    }

    // MARK: Health

    @Test("/readyz: ready, not ready while Postgres is down (with the reason), ready again after; /healthz stays alive")
    func readinessFollowsPostgres() throws {
        let pgPort = 31333
        defer { Harness.removePrivatePostgres(port: pgPort) }
        let (url, pgctl) = try Harness.privatePostgres(port: pgPort)
        let stream = try TestStream(topic: "ops-ready", partitions: 1)
        var c = Harness.configuration(brokers: stream.cluster.bootstrapServers, database: url, topic: stream.topic)
        let port = try Harness.freePort()
        c.metrics.listen = "127.0.0.1:\(port)"
        let daemon = try DaemonProcess(config: try Harness.writeConfig(c), name: "ops-ready")
        func ready() -> (Int, String)? {
            guard let r = Harness.httpGet(port: UInt16(port), path: "/readyz") else { return nil }
            return (r.status.contains(" 200") ? 200 : r.status.contains(" 503") ? 503 : 0, r.body)
        }
        #expect(Harness.waitUntil(60) { ready()?.0 == 200 }, "never ready: \(String(describing: ready())); log:\n\(daemon.logText.suffix(1500))")
        #expect(pgctl("stop") == 0)
        #expect(Harness.waitUntil(30) { ready()?.0 == 503 }, "\(String(describing: ready()))")
        let body = ready()?.1 ?? ""
        let report = try JSONDecoder().decode(HealthReport.self, from: Data(body.utf8))
        #expect(report.status == "fail")
        #expect(report.checks.first { $0.name == "postgres" }?.ok == false, "\(body)")
        #expect(report.checks.first { $0.name == "model" }?.ok == true)
        let live = Harness.httpGet(port: UInt16(port), path: "/healthz")
        #expect(live?.status.contains(" 200") == true, "\(String(describing: live))")
        #expect(pgctl("start") == 0)
        #expect(Harness.waitUntil(60) { ready()?.0 == 200 }, "not ready again: \(String(describing: ready()))")
        daemon.kill(SIGTERM)
        #expect(daemon.wait(timeout: 30) == 0)
    }

    // MARK: systemd

    @Test("watchdog: READY=1 then WATCHDOG=1 pings; a stalled ingest loop (a write blocked on a lock) stops them; they resume after")
    func watchdogFollowsIngestProgress() throws {
        let stream = try TestStream(topic: "ops-watchdog", partitions: 1)
        let c = Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic)
        let socket = try NotifySocket()
        let daemon = try DaemonProcess(arguments: ["run", "--config", try Harness.writeConfig(c).path], name: "ops-watchdog",
                                       environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "2000000"])
        #expect(Harness.waitUntil(60) { socket.messages.contains { $0.text.contains("READY=1") } }, "\(daemon.logText.suffix(1500))")
        #expect(Harness.waitUntil(20) { socket.count("WATCHDOG=1") >= 3 })
        #expect(Harness.waitUntil(20) { socket.messages.contains { $0.text.hasPrefix("STATUS=") && $0.text.contains("msg/s") } },
                "\(socket.messages.map(\.text))")
        // Stall the loop for real: hold an exclusive lock on the table its next write needs.
        let locker = try PostgresConnection(stream.database)
        try locker.execute("BEGIN")
        try locker.execute("LOCK TABLE news_items IN ACCESS EXCLUSIVE MODE")
        try stream.produce(Harness.goodMessages(20, prefix: "stall"))
        Thread.sleep(forTimeInterval: 2.5)   // the loop reads the batch and blocks in its write
        let stalledFrom = monotonicSeconds()
        Thread.sleep(forTimeInterval: 5)
        let pingsWhileStalled = socket.messages.filter { $0.text == "WATCHDOG=1" && $0.at > stalledFrom }.count
        #expect(pingsWhileStalled == 0, "pings while the loop was blocked: \(pingsWhileStalled)")
        #expect(daemon.logText.contains("withholding the systemd watchdog ping"))
        try locker.execute("ROLLBACK")
        let released = monotonicSeconds()
        #expect(Harness.waitUntil(20) { socket.messages.contains { $0.text == "WATCHDOG=1" && $0.at > released } })
        #expect(try Harness.waitFor(stream.database, "SELECT count(*) FROM news_items", atLeast: 20, timeout: 30) == 20)
        daemon.kill(SIGTERM)
        #expect(daemon.wait(timeout: 30) == 0)
        #expect(socket.messages.contains { $0.text.contains("STOPPING=1") })
    }

    // MARK: Reload and secrets

    /// A daemon with a teacher (dev teacher demanding an API key), the metrics endpoint, and
    /// secrets in the configuration and the environment.
    struct SecretDaemon {
        static let pgPassword = "pg-SECRET-pass-5521", newPgPassword = "pg-SECRET-next-9034"
        static let apiKey = "sk-test-SECRET-teacher-7781"
        let stream: TestStream
        let teacher: DevTeacher
        let teacherURL: String
        let port: Int
        let configFile: URL
        let daemon: DaemonProcess

        init(name: String, rpm: Int = 600) async throws {
            stream = try TestStream(topic: name, partitions: 1)
            let fixture = TeacherFixture(count: 40, seed: 3)
            teacher = DevTeacher(book: try AnswerBook(table: fixture.table), apiKey: Self.apiKey)
            teacherURL = "http://127.0.0.1:\(try await teacher.start(port: 0))/v1"
            port = try Harness.freePort()
            configFile = Harness.temporaryDirectory().appendingPathComponent("newsd.toml")
            try Self.write(stream: stream, teacherURL: teacherURL, port: port, to: configFile, rpm: rpm, brokers: stream.cluster.bootstrapServers,
                           password: Self.pgPassword)
            daemon = try DaemonProcess(arguments: ["run", "--config", configFile.path], name: name,
                                       environment: ["NEWSD_TEACHER_API_KEY": Self.apiKey, "PGPASSWORD": "env-SECRET-pgpass-1200"])
        }

        /// The database URL with a password (the test cluster trusts loopback, so any works).
        static func url(_ database: String, password: String) -> String {
            database.replacingOccurrences(of: "postgresql://postgres@", with: "postgresql://postgres:\(password)@")
        }

        static func write(stream: TestStream, teacherURL: String, port: Int, to file: URL, rpm: Int, brokers: String, password: String) throws {
            var c = Harness.configuration(brokers: brokers, database: url(stream.database, password: password), topic: stream.topic)
            c.metrics.listen = "127.0.0.1:\(port)"
            _ = try Harness.writeConfig(c, logLevel: "debug", extra: """
                [teacher]
                base_url = "\(teacherURL)"
                requests_per_minute = \(rpm)
                cold_start_items = 20
                """, at: file)
        }

        func metric(_ name: String) -> Double? {
            guard let body = Harness.httpGet(port: UInt16(port), path: "/metrics")?.body else { return nil }
            return body.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap { Double($0.split(separator: " ")[1]) }
        }
    }

    @Test("SIGHUP: a changed rate limit takes effect without a restart; a changed broker list is reported and ignored")
    func sighupReload() async throws {
        let d = try await SecretDaemon(name: "ops-reload", rpm: 600)
        #expect(Harness.waitUntil(60) { d.metric("newsd_teacher_requests_per_minute_limit") == 600 }, "\(d.daemon.logText.suffix(1500))")
        try d.stream.produce(Harness.goodMessages(30, prefix: "before"))
        #expect(try Harness.waitFor(d.stream.database, "SELECT count(*) FROM news_items", atLeast: 30, timeout: 30) == 30)
        let pid = d.daemon.process.processIdentifier
        try SecretDaemon.write(stream: d.stream, teacherURL: d.teacherURL, port: d.port, to: d.configFile, rpm: 1234,
                               brokers: "127.0.0.1:1", password: SecretDaemon.pgPassword)
        d.daemon.kill(SIGHUP)
        #expect(Harness.waitUntil(20) { d.metric("newsd_teacher_requests_per_minute_limit") == 1234 }, "\(d.daemon.logText.suffix(2000))")
        #expect(d.daemon.process.isRunning && d.daemon.process.processIdentifier == pid)
        let log = d.daemon.logText
        #expect(log.contains("configuration change needs a restart; ignored") && log.contains("key=kafka.brokers"), "\(log.suffix(2000))")
        #expect(log.contains("teacher.requests_per_minute: 600 -> 1234"))
        // Still consuming from the brokers it started with.
        try d.stream.produce(Harness.goodMessages(30, prefix: "after"))
        #expect(try Harness.waitFor(d.stream.database, "SELECT count(*) FROM news_items", atLeast: 60, timeout: 30) == 60)
        #expect(d.metric("newsd_config_reloads_total{result=\"applied\"}") == 1)
        d.daemon.kill(SIGTERM)
        #expect(d.daemon.wait(timeout: 30) == 0)
    }

    @Test("secrets from the environment and the configuration never appear in any log line (debug level, errors, reloads)")
    func secretsNeverLogged() async throws {
        let d = try await SecretDaemon(name: "ops-secrets")
        try d.stream.produce(Harness.goodMessages(40, prefix: "secret") + ["{\"text\": \"x\", \"published_at\": \"never\"}"])
        #expect(try Harness.waitFor(d.stream.database, "SELECT count(*) FROM news_items", atLeast: 40, timeout: 30) == 40)
        // The teacher worker sends the key on every request.
        #expect(Harness.waitUntil(60) { d.teacher.totals.completions > 0 }, "\(d.daemon.logText.suffix(2000))")
        // A reload that changes the database URL (password included) is reported, never shown.
        try SecretDaemon.write(stream: d.stream, teacherURL: d.teacherURL, port: d.port, to: d.configFile, rpm: 600,
                               brokers: d.stream.cluster.bootstrapServers, password: SecretDaemon.newPgPassword)
        d.daemon.kill(SIGHUP)
        #expect(Harness.waitUntil(20) { d.daemon.logText.contains("configuration reloaded") })
        // A teacher outage: its error answers are logged, with the request's context.
        d.teacher.setOutage(true)
        try await Task.sleep(for: .seconds(1))
        d.daemon.kill(SIGTERM)
        #expect(d.daemon.wait(timeout: 30) == 0)
        let log = d.daemon.logText
        #expect(log.contains("level=debug") && log.contains("batch written") && log.contains("teacher verdict"), "expected a talkative debug log")
        #expect(log.contains("postgres.url") && log.contains("(hidden)"))
        for secret in [SecretDaemon.pgPassword, SecretDaemon.newPgPassword, SecretDaemon.apiKey, "env-SECRET-pgpass-1200"] {
            #expect(!log.contains(secret), "\(secret) appears in the log")
        }
        #expect(!log.contains("SECRET"))
    }

    // MARK: Idle connections

    @Test("10,000 idle connections to the metrics port: memory stays bounded and a scrape still works")
    func idleConnectionFlood() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let connections = min(10_000, Int(limit.rlim_max) - 200)
        let stream = try TestStream(topic: "ops-idle", partitions: 1)
        var c = Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic)
        let port = try Harness.freePort()
        c.metrics.listen = "127.0.0.1:\(port)"
        let config = try Harness.writeConfig(c, extra: "")
        // Idle connections are held for the whole test (the default closes them after 10 s).
        var text = try String(contentsOf: config, encoding: .utf8)
        text = text.replacingOccurrences(of: "[metrics]\n", with: "[metrics]\nidle_timeout_seconds = 120\n")
        try text.write(to: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(config: config, name: "ops-idle")
        #expect(Harness.waitUntil(60) { Harness.httpGet(port: UInt16(port), path: "/metrics")?.status.contains(" 200") == true })
        let pid = daemon.process.processIdentifier
        let before = Harness.residentBytes(pid)
        var idle: [Int32] = []
        defer { for fd in idle { close(fd) } }
        for _ in 0..<connections {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard s >= 0 else { break }
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
            let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            if ok != 0 { close(s); continue }
            idle.append(s)
        }
        #expect(idle.count == connections)
        // The daemon accepted them (descriptors held), and still answers a scrape.
        #expect(Harness.waitUntil(30) { Harness.openDescriptors(pid) >= connections })
        let scrape = Harness.httpGet(port: UInt16(port), path: "/metrics")
        #expect(scrape?.status.contains(" 200") == true)
        #expect(scrape?.body.contains("newsd_process_open_fds") == true)
        let after = Harness.residentBytes(pid)
        let perConnection = Double(after - before) / Double(connections)
        print("idle flood: \(connections) connections held; RSS \(before / 1_048_576) MiB -> \(after / 1_048_576) MiB (\(Int(perConnection)) bytes each)")
        #expect(after - before < 256 << 20, "RSS grew by \((after - before) >> 20) MiB")
        for fd in idle { close(fd) }
        idle.removeAll()
        daemon.kill(SIGTERM)
        #expect(daemon.wait(timeout: 30) == 0)
    }

    // MARK: Install and upgrade

    @Test("install.sh stages binary, units, config and state with safe permissions; uninstall.sh removes them; the units verify")
    func installAndUninstall() throws {
        let root = Harness.temporaryDirectory().appendingPathComponent("root")
        let scripts = Harness.packageRoot.appendingPathComponent("scripts")
        #expect(Harness.run(scripts.appendingPathComponent("install.sh").path, ["--destdir", root.path, "--binary", DaemonProcess.binary.path]) == 0)
        func mode(_ path: String) -> Int? {
            (try? FileManager.default.attributesOfItem(atPath: root.path + path)[.posixPermissions] as? Int) ?? nil
        }
        #expect(mode("/usr/local/bin/newsd") == 0o755)
        #expect(mode("/etc/newsd") == 0o750)
        #expect(mode("/etc/newsd/newsd.toml") == 0o640)
        #expect(mode("/etc/newsd/credentials") == 0o600)
        #expect(mode("/var/lib/newsd") == 0o750)
        #expect(mode("/etc/systemd/system/newsd.service") == 0o644)
        // A second run (an upgrade) keeps the operator's configuration.
        try "# edited\n".write(toFile: root.path + "/etc/newsd/newsd.toml", atomically: false, encoding: .utf8)
        #expect(Harness.run(scripts.appendingPathComponent("install.sh").path, ["--destdir", root.path, "--binary", DaemonProcess.binary.path]) == 0)
        #expect(try String(contentsOfFile: root.path + "/etc/newsd/newsd.toml", encoding: .utf8) == "# edited\n")
        // The units verify with the installed binary's path.
        for unit in ["newsd.service", "newsd-trainer.service"] {
            let text = try String(contentsOfFile: root.path + "/etc/systemd/system/" + unit, encoding: .utf8)
                .replacingOccurrences(of: "/usr/local/bin/newsd", with: root.path + "/usr/local/bin/newsd")
            let copy = Harness.temporaryDirectory().appendingPathComponent(unit)
            try text.write(to: copy, atomically: true, encoding: .utf8)
            #expect(Harness.run("/usr/bin/systemd-analyze", ["verify", copy.path]) == 0, "\(unit) does not verify")
        }
        #expect(Harness.run(scripts.appendingPathComponent("uninstall.sh").path, ["--destdir", root.path]) == 0)
        #expect(mode("/usr/local/bin/newsd") == nil && mode("/etc/systemd/system/newsd.service") == nil)
        #expect(mode("/etc/newsd/newsd.toml") != nil, "configuration kept without --purge")
        #expect(Harness.run(scripts.appendingPathComponent("uninstall.sh").path, ["--destdir", root.path, "--purge"]) == 0)
        #expect(mode("/etc/newsd") == nil && mode("/var/lib/newsd") == nil)
    }

    @Test("rolling upgrade: the new version migrates under the advisory lock while the old one keeps ingesting; the old one still starts; a breaking migration is refused by it")
    func rollingUpgrade() throws {
        let stream = try TestStream(topic: "ops-upgrade", partitions: 1)
        let old = Schema.migrations   // this build plays the running release; `upgrade` the next one
        let upgrade = Schema.migrations + [Schema.Migration(Schema.latestVersion + 1, "test: an additive column and table", """
            ALTER TABLE news_items ADD COLUMN IF NOT EXISTS upgrade_note text;
            CREATE TABLE upgrade_probe (id bigserial PRIMARY KEY, note text);
            """)]
        for m in upgrade where m.breaksBefore == nil {
            for word in Schema.breakingStatements { #expect(!m.sql.uppercased().contains(word), "migration \(m.version) is marked additive but has \(word)") }
        }
        _ = try Schema.migrate(try PostgresConnection(stream.database), migrations: old)
        // The old version ingests (its tables are a subset of the new ones) ...
        let c = Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic)
        let running = try RunningPipeline(c)
        try stream.produce(Harness.goodMessages(200, prefix: "during"))
        // ... while two new hosts migrate at once (one applies, the other waits on the lock).
        let results = LockedValue<[[Int]]>([])
        let group = DispatchGroup()
        for _ in 0..<2 {
            DispatchQueue.global().async(group: group) {
                let r = (try? Schema.migrate(try PostgresConnection(stream.database), migrations: upgrade)) ?? [-1]
                results.withLock { $0.append(r) }
            }
        }
        group.wait()
        let applied = results.value.sorted { $0.count > $1.count }
        #expect(applied[0] == [Schema.latestVersion + 1] && applied[1].isEmpty, "\(applied)")
        try stream.produce(Harness.goodMessages(200, prefix: "after"))
        #expect(try Harness.waitFor(stream.database, "SELECT count(*) FROM news_items", atLeast: 400, timeout: 60) == 400)
        #expect(running.stop())
        #expect(running.error == nil, "\(String(describing: running.error))")
        // The old binary starts again on the upgraded schema (it applies nothing) ...
        #expect(try Schema.migrate(try PostgresConnection(stream.database), migrations: old) == [])
        // ... unless a migration says it breaks binaries that old.
        let breaking = upgrade + [Schema.Migration(Schema.latestVersion + 2, "test: breaking", "ALTER TABLE upgrade_probe RENAME COLUMN note TO remark;",
                                                   breaksBefore: Schema.latestVersion + 2)]
        #expect(try Schema.migrate(try PostgresConnection(stream.database), migrations: breaking) == [Schema.latestVersion + 2])
        #expect(throws: PostgresError.self) { try Schema.migrate(try PostgresConnection(stream.database), migrations: old) }
        #expect(throws: PostgresError.self) { try Schema.migrate(try PostgresConnection(stream.database), migrations: upgrade) }
    }
}

/// A Prometheus server (Debian's `prometheus`) on loopback scraping one target every second.
final class PrometheusServer: @unchecked Sendable {
    let port: Int
    private let process = Process()
    private let directory = Harness.temporaryDirectory()

    init(target: String) throws {
        port = try Harness.freePort()
        let config = directory.appendingPathComponent("prometheus.yml")
        try """
        global:
          scrape_interval: 1s
          scrape_timeout: 1s
        scrape_configs:
          - job_name: newsd
            static_configs:
              - targets: ["\(target)"]
        """.write(to: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/prometheus")
        process.arguments = ["--config.file=\(config.path)", "--storage.tsdb.path=\(directory.appendingPathComponent("data").path)",
                             "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: {
            let log = directory.appendingPathComponent("prometheus.log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)   // a failure shows at the FileHandle
            return log
        }())
        try process.run()
    }

    deinit { if process.isRunning { process.terminate(); process.waitUntilExit() } }

    private func api(_ path: String) -> [String: Any]? {
        guard let r = Harness.httpGet(port: UInt16(port), path: path), r.status.contains(" 200") else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(r.body.utf8))) as? [String: Any]
    }

    /// The value of an instant query (the first sample), nil when empty.
    func value(_ query: String) -> Double? {
        let q = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        guard let data = api("/api/v1/query?query=\(q)")?["data"] as? [String: Any],
              let result = data["result"] as? [[String: Any]], let first = result.first,
              let pair = first["value"] as? [Any], pair.count == 2, let s = pair[1] as? String else { return nil }
        return Double(s)
    }

    /// Waits until the target is up (scraped successfully).
    func waitForTarget(timeout: Double) -> Bool { Harness.waitUntil(timeout) { value("up{job=\"newsd\"}") == 1 } }

    /// Every metric name Prometheus has.
    func metricNames() -> [String] { (api("/api/v1/label/__name__/values")?["data"] as? [String]) ?? [] }
}

/// A systemd notification socket: records every datagram with the time it arrived.
final class NotifySocket: @unchecked Sendable {
    struct Message: Sendable { var text: String; var at: Double }
    let path: String
    private let fd: Int32
    private let received = LockedValue<[Message]>([])
    private let stop = StopFlag()

    init() throws {
        path = Harness.temporaryDirectory().appendingPathComponent("notify.sock").path
        let sock = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        fd = sock
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(sock, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard ok == 0 else { throw TestFailure("cannot bind \(path)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let (fd, received, stop) = (sock, received, stop)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while !stop.isSet {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 {
                    let text = String(decoding: buffer[0..<n], as: UTF8.self)
                    received.withLock { $0.append(Message(text: text, at: monotonicSeconds())) }
                }
            }
            close(fd)
        }
    }

    deinit { stop.set() }

    var messages: [Message] { received.value }
    func count(_ text: String) -> Int { messages.filter { $0.text == text }.count }
}

extension Harness {
    /// A free TCP port on loopback below the ephemeral range (32768+), where mock brokers and
    /// clients take theirs.
    static func freePort() throws -> Int {
        for _ in 0..<200 {
            let port = Int.random(in: 20_000..<32_000)
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(port).bigEndian
            inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
            let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            close(s)
            if ok == 0 { return port }
        }
        throw TestFailure("no free port")
    }

    /// Resident set size of process `pid` in bytes.
    static func residentBytes(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) else { return 0 }
        return kb * 1024
    }

    /// Open descriptors of process `pid`.
    static func openDescriptors(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? 0
    }
}
