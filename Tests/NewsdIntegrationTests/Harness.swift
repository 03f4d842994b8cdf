import Foundation
import Logging
import NewsdDaemon
import NewsdDevTools
import NewsdDistill
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
#if canImport(Glibc)
import Glibc
#endif

/// A failed precondition of a test (not a product error).
struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Real parts for integration tests: a PostgreSQL server (started by scripts/test.sh on loopback,
/// URL in NEWSD_TEST_POSTGRES_URL), librdkafka's mock cluster, the newsd binary as a subprocess.
enum Harness {
    static var packageRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static var adminURL: String {
        ProcessInfo.processInfo.environment["NEWSD_TEST_POSTGRES_URL"] ?? "postgresql://postgres@127.0.0.1:54329/postgres"
    }

    /// A fresh, empty database on the test server; returns its URL.
    static func freshDatabase() throws -> String {
        let name = "newsd_test_\(UUID().uuidString.prefix(8).lowercased())"
        let admin = try PostgresConnection(adminURL)
        try admin.execute("CREATE DATABASE \(name)")
        let base = adminURL[..<adminURL.lastIndex(of: "/")!]
        return base + "/" + name
    }

    static func temporaryDirectory() -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("newsd-it-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }

    /// A tiny random student (the pipeline's mechanics are under test, not its accuracy).
    static let tinyModel: URL = {
        let dir = temporaryDirectory().appendingPathComponent("tiny-model")
        let vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "abcdefghijklmnopqrstuvwxyz0123456789.,".map(String.init)
            + ["profit", "rose", "fell", "sales", "the", "of", "to", "in", "and", "mn", "eur"]
        let config = BertConfig(vocabSize: vocab.count, hiddenSize: 16, numLayers: 2, numHeads: 2, intermediateSize: 32, maxPositions: 128)
        try! Checkpoint.writeRandom(to: dir, config: config, vocabulary: vocab, seed: 3)
        return dir
    }()

    static let portfolioFile: URL = {
        let url = temporaryDirectory().appendingPathComponent("portfolio.csv")
        try! PortfolioFile.csv(DemoData.portfolio).write(to: url, atomically: true, encoding: .utf8)
        return url
    }()

    /// Consumer properties that make group rejoins fast in tests (the 45 s default is for production).
    /// librdkafka's log level 2 (critical only): the faults the tests inject on purpose would fill the log.
    static let fastGroup = ["log_level": "2", "session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "topic.metadata.refresh.interval.ms": "1000",
                            "reconnect.backoff.max.ms": "1000"]

    static func configuration(brokers: String, database: String, topic: String, group: String = "it") -> NewsdConfiguration {
        var c = NewsdConfiguration()
        c.kafka.brokers = brokers
        c.kafka.topics = [topic]
        c.kafka.groupID = group
        c.kafka.sessionTimeoutMs = 6000
        c.postgres.url = database
        c.postgres.maxBackoffSeconds = 1
        c.model.dir = tinyModel.path
        c.model.threads = 1
        c.model.backfillShare = 1   // the backfill's correctness is under test, not its pacing
        c.portfolio.file = portfolioFile.path
        c.ingest.batchMaxMessages = 200
        c.ingest.batchMaxWaitMs = 100
        c.ingest.shutdownTimeoutSeconds = 8
        c.log.level = .warning
        c.metrics.listen = ""
        return c
    }

    /// Writes the configuration as TOML (for subprocess daemons).
    static func writeConfig(_ c: NewsdConfiguration, logLevel: String = "info", extra: String = "", at path: URL? = nil) throws -> URL {
        let url = path ?? temporaryDirectory().appendingPathComponent("newsd.toml")
        let text = """
        [kafka]
        brokers = "\(c.kafka.brokers)"
        topics = ["\(c.kafka.topics[0])"]
        group_id = "\(c.kafka.groupID)"
        session_timeout_ms = \(c.kafka.sessionTimeoutMs)
        [kafka.properties]
        "heartbeat.interval.ms" = "500"
        "topic.metadata.refresh.interval.ms" = "1000"
        "reconnect.backoff.max.ms" = "1000"
        "log_level" = "2"
        [postgres]
        url = "\(c.postgres.url)"
        max_backoff_seconds = 1
        [model]
        dir = "\(c.model.dir)"
        threads = 1
        backfill_share = \(c.model.backfillShare)
        [portfolio]
        file = "\(c.portfolio.file)"
        [ingest]
        batch_max_messages = \(c.ingest.batchMaxMessages)
        batch_max_wait_ms = \(c.ingest.batchMaxWaitMs)
        shutdown_timeout_seconds = \(c.ingest.shutdownTimeoutSeconds)
        [metrics]
        listen = "\(c.metrics.listen)"
        [log]
        level = "\(logLevel)"

        """ + extra
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// `count` good JSON messages with unique ids `prefix-i`.
    static func goodMessages(_ count: Int, prefix: String, seed: UInt64 = 1) -> [String] {
        DemoData.sentences(count: count, seed: seed).enumerated().map { i, s in
            var s = s
            s.id = "\(prefix)-\(i)"
            return DemoData.message(s, includeCompanies: i % 2 == 0)
        }
    }

    static func produce(_ messages: [String], brokers: String, topic: String) throws {
        let p = try KafkaProducer(brokers: brokers, properties: ["log_level": "2"])
        for (i, m) in messages.enumerated() { try p.send(topic: topic, key: Array("k\(i)".utf8), value: Array(m.utf8)) }
        try p.flush()
    }

    static func count(_ db: String, _ sql: String) throws -> Int {
        Int(try PostgresConnection(db).execute(sql).rows.first?.first??.description ?? "0") ?? 0
    }

    /// Waits until `sql` returns at least `target`, up to `timeout` seconds; returns the last value.
    @discardableResult
    static func waitFor(_ db: String, _ sql: String, atLeast target: Int, timeout: Double) throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        var last = 0
        while Date() < deadline {
            last = (try? count(db, sql)) ?? last
            if last >= target { return last }
            Thread.sleep(forTimeInterval: 0.2)
        }
        return last
    }

    /// The exactly-once check: every message stored once with one prediction, offsets complete.
    static func exactlyOnceReport(_ db: String, expected: Int) throws -> (items: Int, distinctIDs: Int, predictions: Int, itemsWithoutPrediction: Int) {
        let c = try PostgresConnection(db)
        let r = try c.execute("""
            SELECT (SELECT count(*) FROM news_items), (SELECT count(DISTINCT external_id) FROM news_items),
                   (SELECT count(*) FROM predictions),
                   (SELECT count(*) FROM news_items n WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.item_id = n.id))
            """).rows[0].map { Int($0 ?? "0") ?? 0 }
        return (r[0], r[1], r[2], r[3])
    }

    /// Runs a command and returns its exit status (posix_spawn + waitpid: Foundation's Process
    /// can miss the exit of a script whose children outlive it, like pg_ctl's server).
    static func run(_ path: String, _ arguments: [String]) -> Int32 {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        guard posix_spawn(&pid, path, &actions, nil, argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status >> 8) & 0xff
    }

    static let logger: Logger = {
        var l = Logger(label: "newsd-test")
        l.logLevel = .warning
        return l
    }()
}

/// An in-process pipeline on its own thread.
final class RunningPipeline: @unchecked Sendable {
    let pipeline: IngestPipeline
    private let done = DispatchSemaphore(value: 0)
    private(set) var error: Error?

    init(_ config: NewsdConfiguration) throws {
        pipeline = try Daemon.prepare(config, logger: Harness.logger, consumerProperties: Harness.fastGroup)
        let t = Thread { [self] in
            do { try pipeline.run() } catch { self.error = error }
            done.signal()
        }
        t.start()
    }

    /// Stops and waits; returns whether it ended within `timeout`.
    @discardableResult
    func stop(timeout: Double = 20) -> Bool {
        pipeline.requestStop()
        return done.wait(timeout: .now() + timeout) == .success
    }
}

/// The newsd binary as a child process.
final class DaemonProcess: @unchecked Sendable {
    let process = Process()
    let log: URL

    static var binary: URL {
        if let b = ProcessInfo.processInfo.environment["NEWSD_BINARY"] { return URL(fileURLWithPath: b) }
        return Harness.packageRoot.appendingPathComponent(".build/debug/newsd")
    }

    convenience init(config: URL, name: String) throws {
        try self.init(arguments: ["run", "--config", config.path], name: name)
    }

    /// Any newsd subcommand.
    init(arguments: [String], name: String, environment: [String: String] = [:], outputToLog: Bool = false) throws {
        log = Harness.temporaryDirectory().appendingPathComponent("\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)   // a failure shows at the FileHandle below
        process.executableURL = Self.binary
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardOutput = outputToLog ? try FileHandle(forWritingTo: log) : FileHandle.nullDevice
        try process.run()
    }

    func kill(_ signal: Int32) { Glibc.kill(process.processIdentifier, signal) }

    /// Waits for exit up to `timeout` seconds; returns the exit status, or nil if still running.
    func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        return process.isRunning ? nil : process.terminationStatus
    }

    var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    deinit { if process.isRunning { kill(SIGKILL); process.waitUntilExit() } }
}

extension Harness {
    /// A plain HTTP GET to 127.0.0.1:port; returns (status line, body).
    static func httpGet(port: UInt16, path: String) -> (status: String, body: String)? {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { return nil }
        defer { close(s) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
        let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard ok == 0 else { return nil }
        let request = "GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        _ = request.withCString { send(s, $0, strlen($0), 0) }
        var data = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true { let n = read(s, &buffer, buffer.count); if n <= 0 { break }; data += buffer[0..<n] }
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return nil }
        return (String(text[..<split.lowerBound].split(separator: "\r\n").first ?? ""), String(text[split.upperBound...]))
    }
}

/// One test's stream: a mock cluster with a topic, and a fresh database (kept alive together).
struct TestStream {
    let cluster: MockCluster
    let database: String
    let topic: String

    init(topic: String, partitions: Int) throws {
        cluster = try MockCluster(brokers: 1)
        try cluster.createTopic(topic, partitions: partitions)
        database = try Harness.freshDatabase()
        self.topic = topic
    }

    /// The test configuration, written as TOML for a subprocess daemon.
    func daemonConfig(group: String = "it") throws -> URL {
        try Harness.writeConfig(Harness.configuration(brokers: cluster.bootstrapServers, database: database, topic: topic, group: group))
    }

    func produce(_ messages: [String]) throws {
        try Harness.produce(messages, brokers: cluster.bootstrapServers, topic: topic)
    }
}

extension Harness {
    /// A fresh migrated database holding `labels` teacher verdicts (demo sentences of `seed`).
    static func labelledDatabase(labels: Int, seed: UInt64, database: String? = nil) throws -> (url: String, db: PostgresConnection) {
        let url = try database ?? freshDatabase()
        let db = try PostgresConnection(url)
        try Schema.migrate(db)
        try insertTeacherLabels(db, DemoData.sentences(count: labels, seed: seed))
        return (url, db)
    }

    /// `count` old items that only the untrained base classified (a cold start to backfill).
    static func insertColdStartItems(_ db: PostgresConnection, count: Int, topic: String) throws {
        try db.query("""
            INSERT INTO news_items (topic, partition, kafka_offset, text)
            SELECT \(topic), 0, g, 'profit rose ' || g || ' mn eur in sales of the ' || (g % 97) FROM generate_series(1, \(count)) g
            """)
        try db.query("INSERT INTO predictions (item_id, model_version, label, probabilities, margin, entropy) SELECT id, 'base', 'neutral', '{}'::jsonb, 0, 1 FROM news_items")
    }

    /// A private PostgreSQL cluster on `port` (scripts/pg.sh), for tests that stop or restart it
    /// without disturbing the suites that share the main one. Use a port below Linux's ephemeral
    /// range (32768-60999): a port in it may already be bound by another test's client or mock
    /// broker (seen: "Address already in use" on 54332). Returns a fresh database's URL and
    /// the control function (`start`, `stop`, `restart`); `removePrivatePostgres` cleans up.
    static func privatePostgres(port: Int) throws -> (url: String, control: (String) -> Int32) {
        let pg = packageRoot.appendingPathComponent("scripts/pg.sh").path
        let control: (String) -> Int32 = { run("/usr/bin/env", ["NEWSD_PG_PORT=\(port)", pg, $0]) }
        guard control("start") == 0 else { throw TestFailure("cannot start a private Postgres on port \(port)") }
        let admin = try PostgresConnection("postgresql://postgres@127.0.0.1:\(port)/postgres")
        let name = "private_\(UUID().uuidString.prefix(6).lowercased())"
        try admin.execute("CREATE DATABASE \(name)")
        return ("postgresql://postgres@127.0.0.1:\(port)/\(name)", control)
    }

    /// Stops and deletes the private cluster on `port`.
    static func removePrivatePostgres(port: Int) {
        _ = run("/usr/bin/env", ["NEWSD_PG_PORT=\(port)", packageRoot.appendingPathComponent("scripts/pg.sh").path, "stop"])
        try? FileManager.default.removeItem(atPath: "/tmp/newsd-pg-\(port)")
    }
}
