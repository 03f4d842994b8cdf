import Foundation
import NewsdDevTools
import NewsdKafka
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Every fault of the matrix in docs/reliability.md, one after another on one stream, with the
/// teacher worker labelling beside ingest: kill -9, Postgres restart, broker down, teacher outage,
/// topic recreation. Nothing is lost and nothing is duplicated, neither news items nor verdicts.
@Suite("Fault matrix: one stream through every fault", .serialized)
struct FaultMatrixTests {
    @Test("kill -9, Postgres restart, broker down, teacher outage, topic recreation: 0 lost, 0 duplicated")
    func everyFaultOnOneStream() async throws {
        // A private Postgres, so restarting it disturbs no other suite.
        let port = 31_332
        let (database, pgctl) = try Harness.privatePostgres(port: port)
        defer { Harness.removePrivatePostgres(port: port) }

        let stream = try TestStream(topic: "matrix", partitions: 4)
        let fixture = TeacherFixture(count: 60)
        let teacher = DevTeacher(book: try AnswerBook(table: fixture.table), faults: { var f = FaultRates(); f.latencyMilliseconds = 50; return f }())
        let teacherURL = "http://127.0.0.1:\(try await teacher.start(port: 0))/v1"
        func config(brokers: String) throws -> URL {
            var c = Harness.configuration(brokers: brokers, database: database, topic: stream.topic, group: "matrix")
            c.ingest.shutdownTimeoutSeconds = 8
            let url = try Harness.writeConfig(c)
            // The fixture's texts go to the teacher (cold start covers them all); the queue drains
            // beside ingest. Short leases: the items the killed worker held are taken up again soon.
            try (String(contentsOf: url, encoding: .utf8) + """

                [teacher]
                base_url = "\(teacherURL)"
                cold_start_items = 100000
                concurrency = 8
                requests_per_minute = 0
                max_retries = 3
                max_attempts = 50
                timeout_seconds = 5
                lease_seconds = 10
                """).write(to: url, atomically: true, encoding: .utf8)
            return url
        }
        // News: demo sentences, plus the fixture's texts as messages (so the teacher has work).
        var messages = Harness.goodMessages(2000, prefix: "m")
        for (i, text) in fixture.texts.enumerated() {
            messages.insert(try JSONText.encode(["id": "t-\(i)", "text": text]), at: i * 30)
        }
        let total = messages.count
        func stored() -> Int { (try? Harness.count(database, "SELECT count(*) FROM news_items")) ?? 0 }
        var cfg = try config(brokers: stream.cluster.bootstrapServers)
        var produced = 0
        func produce(_ n: Int, brokers: String) throws {
            try Harness.produce(Array(messages[produced..<min(total, produced + n)]), brokers: brokers, topic: stream.topic)
            produced = min(total, produced + n)
        }

        // 1. kill -9 mid-stream, then restart.
        try produce(600, brokers: stream.cluster.bootstrapServers)
        var daemon = try DaemonProcess(config: cfg, name: "matrix-1")
        _ = Harness.waitUntil(60) { stored() >= 150 }
        daemon.kill(SIGKILL)
        _ = daemon.wait(timeout: 10)
        daemon = try DaemonProcess(config: cfg, name: "matrix-2")
        // 2. Postgres restarts mid-stream.
        try produce(500, brokers: stream.cluster.bootstrapServers)
        _ = Harness.waitUntil(60) { stored() >= 750 }
        #expect(pgctl("restart") == 0)
        // 3. The broker goes down for 3 s.
        try produce(500, brokers: stream.cluster.bootstrapServers)
        try stream.cluster.setBroker(1, up: false)
        try await Task.sleep(for: .seconds(3))
        try stream.cluster.setBroker(1, up: true)
        // 4. The teacher is out for 5 s (ingest goes on; the queue waits, then drains).
        teacher.setOutage(true)
        try await Task.sleep(for: .seconds(5))
        teacher.setOutage(false)
        _ = Harness.waitUntil(120) { stored() >= produced }
        #expect(stored() == produced, "\(stored()) of \(produced) stored before the topic recreation")
        #expect(ShutdownTests.terminate(daemon).status == 0)
        // 5. The topic is recreated (here: a cluster that lost everything); the rest arrives there.
        let recreated = try MockCluster(brokers: 1)
        try recreated.createTopic(stream.topic, partitions: 4)
        cfg = try config(brokers: recreated.bootstrapServers)
        try produce(total - produced, brokers: recreated.bootstrapServers)
        daemon = try DaemonProcess(config: cfg, name: "matrix-3")
        let done = Harness.waitUntil(180) {
            stored() >= total
                && ((try? Harness.count(database, "SELECT count(*) FROM teacher_queue WHERE status = 'pending'")) ?? 1) == 0
        }
        #expect(done, "\(stored()) of \(total) stored; log:\n\(daemon.logText.suffix(1500))")
        #expect(ShutdownTests.terminate(daemon).status == 0)

        // Nothing lost, nothing duplicated: every message id once, one prediction each.
        let r = try Harness.exactlyOnceReport(database, expected: total)
        #expect(r.items == total && r.distinctIDs == total && r.itemsWithoutPrediction == 0, "\(r)")
        // One prediction per item from ingest (the cold-start backfill adds rescored ones beside it).
        #expect(try Harness.count(database, "SELECT count(*) FROM predictions WHERE NOT rescored") == total)
        #expect(try Harness.count(database, "SELECT count(*) FROM rejected_messages") == 0)
        // Every text the teacher saw got exactly one verdict, the expected one for fixture texts.
        let verdicts = try PostgresConnection(database).query("SELECT text, label FROM teacher_labels").typed
        #expect(Set(try verdicts.map { try $0.decode("text", as: String.self) }).count == verdicts.count)
        for v in verdicts {
            let text: String = try v.decode("text")
            guard let want = fixture.expected[text] else { continue }
            #expect(try v.decode("label", as: String?.self) == want, "\(text)")
        }
        // Every queued text was labelled (none failed, none left), and the teacher saw fixture texts.
        let labelled = Set(try verdicts.map { try $0.decode("text", as: String.self) })
        let queued: [String] = try PostgresConnection(database).query("SELECT text FROM teacher_queue").typed.map { try $0.decode("text") }
        #expect(Set(queued).isSubset(of: labelled), "\(Set(queued).subtracting(labelled).count) queued texts without a verdict")
        #expect(try Harness.count(database, "SELECT count(*) FROM teacher_queue WHERE status <> 'done'") == 0)
        #expect(!labelled.isDisjoint(with: fixture.texts))
    }
}
