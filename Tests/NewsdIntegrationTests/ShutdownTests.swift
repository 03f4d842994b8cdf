import Foundation
import NewsdDevTools
import NewsdDistill
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM ends `newsd run` with status 0 within `ingest.shutdown_timeout_seconds` whatever is
/// down or in progress, and loses no committed work.
@Suite("Shutdown: within the bound whatever is down or running", .serialized)
struct ShutdownTests {
    static let bound = 8.0

    /// A daemon configuration with the sections these tests need (TOML for a subprocess).
    static func config(_ stream: TestStream, database: String? = nil, model: URL = Harness.tinyModel, extra: String = "") throws -> URL {
        let url = Harness.temporaryDirectory().appendingPathComponent("newsd.toml")
        try """
        [kafka]
        brokers = "\(stream.cluster.bootstrapServers)"
        topics = ["\(stream.topic)"]
        group_id = "shutdown"
        session_timeout_ms = 6000
        [kafka.properties]
        "heartbeat.interval.ms" = "500"
        "log_level" = "2"
        [postgres]
        url = "\(database ?? stream.database)"
        max_backoff_seconds = 1
        [model]
        dir = "\(model.path)"
        threads = 1
        backfill_share = 1
        cache_dir = "\(Harness.temporaryDirectory().path)"
        [portfolio]
        file = "\(Harness.portfolioFile.path)"
        [ingest]
        batch_max_messages = 200
        batch_max_wait_ms = 100
        shutdown_timeout_seconds = \(bound)
        [metrics]
        listen = ""
        [log]
        level = "info"
        \(extra)
        """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// A database with an active trained model (of the slow test encoder) and `items` items that
    /// only the untrained base has scored: a daemon started on it backfills them. False (with an
    /// issue recorded) if no model was promoted.
    static func activeModelAndColdStartItems(_ stream: TestStream, items: Int, seed: UInt64) throws -> Bool {
        let db = try Harness.labelledDatabase(labels: 300, seed: seed, database: stream.database).db
        var c = NewsdConfiguration()
        c.postgres.url = stream.database
        c.model.dir = LifecycleTests.slowModel.path
        c.model.cacheDir = Harness.temporaryDirectory().path
        c.trainer.trainable = "head"
        c.trainer.epochs = 1
        c.trainer.minSteps = 0
        c.trainer.shadowItems = 0
        guard case .promoted = try Distiller.runOnce(c, logger: Harness.logger, force: true) else { Issue.record("no model"); return false }
        try Harness.insertColdStartItems(db, count: items, topic: "old")
        return true
    }

    /// SIGTERM, then the exit status and the seconds it took.
    static func terminate(_ daemon: DaemonProcess) -> (status: Int32?, seconds: Double) {
        let start = Date()
        daemon.kill(SIGTERM)
        let status = daemon.wait(timeout: 60)
        return (status, Date().timeIntervalSince(start))
    }

    /// Before: with the teacher worker on, SIGTERM while Postgres was down hung forever and
    /// further signals were ignored.
    @Test("Postgres down, teacher worker on: SIGTERM exits 0 within the bound; after a restart nothing is lost or doubled")
    func postgresDownWithTeacherWorker() async throws {
        let port = 31_331
        let (database, pgctl) = try Harness.privatePostgres(port: port)
        defer { Harness.removePrivatePostgres(port: port) }
        let stream = try TestStream(topic: "pgdown", partitions: 2)
        let messages = Harness.goodMessages(3000, prefix: "p")
        let fixture = TeacherFixture(count: 30)
        let teacher = DevTeacher(book: try AnswerBook(table: fixture.table), faults: { var f = FaultRates(); f.latencyMilliseconds = 300; return f }())
        let teacherURL = "http://127.0.0.1:\(try await teacher.start(port: 0))/v1"
        let config = try Self.config(stream, database: database, extra: """
            [teacher]
            base_url = "\(teacherURL)"
            cold_start_items = 3000
            concurrency = 4
            """)
        try stream.produce(Array(messages[..<1500]))
        let daemon = try DaemonProcess(config: config, name: "pgdown")
        try Harness.waitFor(database, "SELECT count(*) FROM teacher_requests", atLeast: 3, timeout: 60)
        #expect(pgctl("stop") == 0)
        try await Task.sleep(for: .seconds(2))
        let (status, seconds) = Self.terminate(daemon)
        #expect(status == 0, "exit status \(String(describing: status)); log:\n\(daemon.logText.suffix(2000))")
        #expect(seconds < Self.bound + 3, "stopped in \(seconds) s; the bound is \(Self.bound) s")
        // Postgres back, a new daemon: every message stored once.
        #expect(pgctl("start") == 0)
        try stream.produce(Array(messages[1500...]))
        let again = try DaemonProcess(config: config, name: "pgdown-2")
        try Harness.waitFor(database, "SELECT count(*) FROM news_items", atLeast: 3000, timeout: 120)
        #expect(Self.terminate(again).status == 0)
        let r = try Harness.exactlyOnceReport(database, expected: 3000)
        #expect(r.items == 3000 && r.distinctIDs == 3000 && r.predictions == 3000, "\(r)")
    }

    /// Before: 61-85 s instead of the configured bound while training (a run could not be
    /// interrupted, and the services stopped one after another).
    @Test("mid-training: SIGTERM exits 0 within the bound and registers nothing")
    func midTraining() throws {
        let stream = try TestStream(topic: "train", partitions: 1)
        let db = try Harness.labelledDatabase(labels: 3000, seed: 21, database: stream.database).db
        let config = try Self.config(stream, model: LifecycleTests.slowModel, extra: """
            [trainer]
            mode = "daemon"
            trainable = "all"
            epochs = 20
            threads = 1
            min_labels = 10
            min_new_labels = 10
            check_seconds = 0.5
            shadow_items = 0
            """)
        let daemon = try DaemonProcess(config: config, name: "train")
        #expect(Harness.waitUntil(60) { daemon.logText.contains("training a candidate") }, "\(daemon.logText.suffix(2000))")
        Thread.sleep(forTimeInterval: 1)
        let (status, seconds) = Self.terminate(daemon)
        #expect(status == 0, "exit status \(String(describing: status)); log:\n\(daemon.logText.suffix(2000))")
        #expect(seconds < Self.bound + 2, "stopped in \(seconds) s; the bound is \(Self.bound) s")
        #expect(try ModelRegistry.list(db).isEmpty)
    }

    /// Before: SIGTERM during the cold-start backfill crashed inside OpenBLAS (SIGSEGV, exit 139):
    /// the process exited while the backfill thread was still classifying.
    @Test("mid-backfill: SIGTERM exits 0 within the bound; the next start finishes the backfill exactly once")
    func midBackfill() throws {
        let stream = try TestStream(topic: "backfill", partitions: 1)
        let items = 60_000
        guard try Self.activeModelAndColdStartItems(stream, items: items, seed: 22) else { return }
        // A host whose model.dir is the bare base loads the active model at start and backfills.
        let config = try Self.config(stream, model: LifecycleTests.slowModel)
        func rescored() throws -> Int { try Harness.count(stream.database, "SELECT count(*) FROM predictions WHERE rescored") }
        let daemon = try DaemonProcess(config: config, name: "backfill")
        #expect(try Harness.waitUntil(120) { try rescored() > 0 }, "\(daemon.logText.suffix(2000))")
        let (status, seconds) = Self.terminate(daemon)
        #expect(status == 0, "exit status \(String(describing: status)); log:\n\(daemon.logText.suffix(2000))")
        #expect(seconds < Self.bound + 2, "stopped in \(seconds) s; the bound is \(Self.bound) s")
        let partial = try rescored()
        #expect(partial > 0 && partial < items, "\(partial) of \(items) rescored before the stop")
        let again = try DaemonProcess(config: config, name: "backfill-2")
        #expect(try Harness.waitUntil(300) { try rescored() == items }, "\(again.logText.suffix(2000))")
        #expect(Self.terminate(again).status == 0)
        #expect(try Harness.count(stream.database, "SELECT count(*) FROM (SELECT item_id FROM predictions WHERE rescored GROUP BY 1 HAVING count(*) > 1) d") == 0)
    }

    /// Before: a backfill statement that took long (a plan quadratic in the rows rescored, right
    /// after a swap) held the watcher past the bound, and ServiceLifecycle ended the process
    /// with "Cancellation took longer than allowed" (SIGILL, exit 132). A stop now cancels the
    /// statement in flight. Here the statement waits on a lock another session holds.
    @Test("a statement waiting on a lock: SIGTERM exits 0 within the bound")
    func statementWaitingOnALock() throws {
        let stream = try TestStream(topic: "locked", partitions: 1)
        guard try Self.activeModelAndColdStartItems(stream, items: 20_000, seed: 23) else { return }
        let config = try Self.config(stream, model: LifecycleTests.slowModel)
        let daemon = try DaemonProcess(config: config, name: "locked")
        #expect(try Harness.waitUntil(120) { try Harness.count(stream.database, "SELECT count(*) FROM predictions WHERE rescored") > 0 },
                "\(daemon.logText.suffix(2000))")
        // Another session takes the items table: the backfill's next statement waits on it.
        try Self.terminateWhileLocked(daemon, database: stream.database) {}
    }

    /// Takes `news_items` in another session, runs `meanwhile` (more messages), waits until a
    /// newsd statement waits on the lock, sends SIGTERM and expects a clean exit within the bound.
    static func terminateWhileLocked(_ daemon: DaemonProcess, database: String, meanwhile: () throws -> Void) throws {
        let holder = try PostgresConnection(database)
        try holder.execute("BEGIN")
        try holder.execute("LOCK TABLE news_items IN ACCESS EXCLUSIVE MODE")
        try meanwhile()
        #expect(try Harness.waitUntil(30) {
            try Harness.count(database, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'newsd'") > 0
        })
        let (status, seconds) = terminate(daemon)
        try holder.execute("ROLLBACK")
        #expect(status == 0, "exit status \(String(describing: status)); log:\n\(daemon.logText.suffix(2000))")
        #expect(seconds < bound + 2, "stopped in \(seconds) s; the bound is \(bound) s")
    }

    @Test("an ingest write waiting on a lock: SIGTERM exits 0 within the bound; after a restart nothing is lost or doubled")
    func ingestWriteWaitingOnALock() throws {
        let stream = try TestStream(topic: "lockedwrite", partitions: 2)
        let messages = Harness.goodMessages(2000, prefix: "l")
        let config = try Self.config(stream)
        try stream.produce(Array(messages[..<1000]))
        let daemon = try DaemonProcess(config: config, name: "lockedwrite")
        try Harness.waitFor(stream.database, "SELECT count(*) FROM news_items", atLeast: 1000, timeout: 60)
        try Self.terminateWhileLocked(daemon, database: stream.database) { try stream.produce(Array(messages[1000...])) }
        let again = try DaemonProcess(config: config, name: "lockedwrite-2")
        try Harness.waitFor(stream.database, "SELECT count(*) FROM news_items", atLeast: 2000, timeout: 120)
        #expect(Self.terminate(again).status == 0)
        let r = try Harness.exactlyOnceReport(stream.database, expected: 2000)
        #expect(r.items == 2000 && r.distinctIDs == 2000 && r.predictions == 2000, "\(r)")
    }
}
