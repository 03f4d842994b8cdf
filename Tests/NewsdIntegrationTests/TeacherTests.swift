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
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A generated answers file (no shared data in tests): texts with three recorded samples each —
/// unanimous, 2-1 splits, three-way splits and non-labels — and the verdict each must get.
struct TeacherFixture {
    let table: CSVTable
    /// Expected label per text; nil = ambiguous.
    let expected: [String: String?]
    /// Texts whose samples all agree (their label survives any injected fault).
    let unanimous: Set<String>

    init(count: Int, seed: UInt64 = 7) {
        let labels = ["positive", "negative", "neutral"]
        var rows: [[String]] = []
        var expected: [String: String?] = [:]
        var unanimous = Set<String>()
        for i in 0..<count {
            let a = labels[i % 3], b = labels[(i + 1) % 3], c = labels[(i + 2) % 3]
            let samples: [String]
            let verdict: String?
            switch i % 6 {
            case 0, 1, 2: samples = [a, a, a]; verdict = a
            case 3: samples = [a, b, a]; verdict = a
            case 4: samples = [a, b, c]; verdict = nil                        // three-way split
            default: samples = [a, "cannot be labeled", b]; verdict = nil       // FAIL + 1-1
            }
            let text = "Fixture sentence \(i) (seed \(seed)): quarterly figures of company \(i % 17) were reported ."
            rows.append([text] + samples + samples.map { "because of sample \($0)" })
            expected[text] = verdict
            if i % 6 < 3 { unanimous.insert(text) }
        }
        table = CSVTable(header: ["text", "sc_iter1", "sc_iter2", "sc_iter3", "reason_iter1", "reason_iter2", "reason_iter3"], rows: rows)
        self.expected = expected
        self.unanimous = unanimous
    }

    var texts: [String] { table.rows.map { $0[0] } }

    func write() throws -> URL {
        let url = Harness.temporaryDirectory().appendingPathComponent("answers.csv")
        try table.csvText().write(to: url, atomically: true, encoding: .utf8)
        return url
    }
}

/// A migrated fresh database and an in-process dev teacher (a real HTTP server on loopback).
struct TeacherBench {
    let database: String
    let teacher: DevTeacher
    let baseURL: String
    let fixture: TeacherFixture

    init(items: Int, faults: FaultRates = FaultRates(), seed: UInt64 = 7) async throws {
        database = try Harness.freshDatabase()
        try Schema.migrate(try PostgresConnection(database))
        fixture = TeacherFixture(count: items, seed: seed)
        teacher = DevTeacher(book: try AnswerBook(table: fixture.table), faults: faults, seed: seed)
        baseURL = "http://127.0.0.1:\(try await teacher.start(port: 0))/v1"
    }

    func configuration() -> NewsdConfiguration {
        var c = NewsdConfiguration()
        c.postgres.url = database
        c.model.dir = Harness.tinyModel.path
        c.teacher.baseURL = baseURL
        c.teacher.model = "dev"
        c.teacher.inputPricePerMillion = 0.6
        c.teacher.outputPricePerMillion = 1.8
        c.teacher.dailyBudgetUSD = 0
        return c
    }

    func enqueueAll() throws -> Int {
        try TeacherQueue.enqueue(try PostgresConnection(database), texts: fixture.texts, reason: "manual")
    }

    /// Runs an in-process worker until the queue is empty.
    func drain(_ c: NewsdConfiguration) async throws -> TeacherWorkerStatistics {
        let client = try TeacherClient(settings: try TeacherSettings(configuration: c.teacher))
        defer { client.shutdown() }
        let worker = TeacherWorker(configuration: c, client: client, logger: Harness.logger, stopWhenEmpty: true)
        try await worker.run()
        return worker.statistics
    }

    /// Every queue row done, one verdict per text, verdicts as expected.
    func checkVerdicts(file: String = #fileID, line: Int = #line) throws {
        let db = try PostgresConnection(database)
        let queue = try db.execute("SELECT status, count(*) FROM teacher_queue GROUP BY 1").rows
        #expect(queue.count == 1 && queue[0][0] == "done", "queue states: \(queue)")
        let rows = try db.execute("SELECT text, label, status FROM teacher_labels").rows
        #expect(rows.count == fixture.texts.count)
        #expect(Set(rows.map { $0[0]! }).count == rows.count)
        var wrong: [String] = []
        for r in rows {
            guard let want = fixture.expected[r[0]!] else { wrong.append("unknown text"); continue }
            if let want, r[1] != want { wrong.append("\(r[0]!.prefix(24)): \(r[1] ?? "ambiguous") != \(want)") }
            if want == nil && r[2] != "ambiguous" {
                // With malformed answers injected a split can gain a majority only by chance of the
                // replayed cycle; never for a three-way split.
                wrong.append("\(r[0]!.prefix(24)): expected ambiguous, got \(r[1] ?? "-")")
            }
        }
        #expect(wrong.isEmpty, "\(wrong)")
    }
}

@Suite("Teacher queue, client and CLI against a real HTTP teacher and Postgres", .serialized)
struct TeacherTests {
    @Test("with 429s, 500s, malformed answers, hangs and 1 s latency every item ends once; limits and spend hold")
    func faultsEveryItemEndsOnce() async throws {
        var faults = FaultRates()
        faults.latencyMilliseconds = 1000
        faults.rate429 = 0.2
        faults.rate500 = 0.1
        faults.rateMalformed = 0.05
        faults.rateHang = 0.02
        let bench = try await TeacherBench(items: 48, faults: faults)
        #expect(try bench.enqueueAll() == 48)
        var c = bench.configuration()
        c.teacher.concurrency = 8
        c.teacher.requestsPerMinute = 480      // 8 per second at most
        c.teacher.timeoutSeconds = 3
        c.teacher.leaseSeconds = 30
        c.teacher.maxRetries = 10
        c.teacher.extraSamples = 4
        let stats = try await bench.drain(c)
        #expect(stats.labelled + stats.ambiguous == 48)

        let db = try PostgresConnection(bench.database)
        let rows = try db.execute("SELECT text, label, status FROM teacher_labels").rows
        #expect(rows.count == 48 && Set(rows.map { $0[0]! }).count == 48)
        #expect(try db.execute("SELECT count(*) FROM teacher_queue WHERE status <> 'done'").rows[0][0] == "0")
        // Unanimous texts keep their label whatever the faults (a FAIL only costs extra samples).
        for r in rows where bench.fixture.unanimous.contains(r[0]!) {
            #expect(r[1] == bench.fixture.expected[r[0]!]!, "\(r[0]!)")
        }
        // The request rate never exceeded the limit: in every 1 s window at most 8 starts, in every
        // 60 s window at most 480.
        let starts = try db.execute("SELECT extract(epoch FROM started_at)::double precision FROM teacher_requests ORDER BY 1").rows.compactMap { $0[0].flatMap(Double.init) }
        var j = 0, worstSecond = 0
        for i in starts.indices {
            while starts[i] - starts[j] >= 1.0 { j += 1 }
            worstSecond = max(worstSecond, i - j + 1)
        }
        #expect(worstSecond <= 8, "\(worstSecond) requests started within one second")
        #expect(starts.count > 48)
        // Faults happened and were recorded.
        let byStatus = Dictionary(uniqueKeysWithValues: try db.execute("SELECT status, count(*) FROM teacher_requests GROUP BY 1").rows.map { ($0[0]!, Int($0[1]!)!) })
        #expect((byStatus["http_429"] ?? 0) > 0 && (byStatus["http_500"] ?? 0) > 0, "\(byStatus)")
        // Recorded tokens and cost add up to what the server reported.
        let totals = bench.teacher.totals
        let sums = try db.execute("SELECT sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) FROM teacher_requests").rows[0]
        #expect(Int(sums[0]!) == totals.promptTokens)
        #expect(Int(sums[1]!) == totals.completionTokens)
        let expectedCost = (Double(totals.promptTokens) * 0.6 + Double(totals.completionTokens) * 1.8) / 1_000_000
        #expect(abs(Double(sums[2]!)! - expectedCost) < 1e-9)
        #expect(totals.completions == byStatus["ok"])
        // What `newsd teacher stats` reports adds up to the same records.
        let reported = try TeacherStatistics.read(db)
        #expect(reported.requests == starts.count && reported.okRequests == byStatus["ok"] && reported.labelled + reported.ambiguous == 48)
        #expect(reported.promptTokens == totals.promptTokens && abs(reported.cost - expectedCost) < 1e-9 && reported.queueByStatus == ["done": 48])
        #expect(reported.report(prices: (0.6, 1.8)).contains("FAIL rate"))
    }

    @Test("a worker killed mid-run and restarted: no item lost, none labelled twice")
    func killedWorkerLosesNothing() async throws {
        var faults = FaultRates()
        faults.latencyMilliseconds = 300
        let bench = try await TeacherBench(items: 90, faults: faults, seed: 11)
        _ = try bench.enqueueAll()
        var c = bench.configuration()
        c.kafka.brokers = "127.0.0.1:9"
        let config = try Harness.writeConfig(c)
        let env = ["NEWSD_TEACHER_BASE_URL": bench.baseURL, "NEWSD_TEACHER_CONCURRENCY": "4", "NEWSD_TEACHER_LEASE_SECONDS": "4",
                   "NEWSD_TEACHER_TIMEOUT_SECONDS": "3", "NEWSD_TEACHER_DAILY_BUDGET_USD": "0", "NEWSD_TEACHER_REQUESTS_PER_MINUTE": "0"]
        let first = try DaemonProcess(arguments: ["teacher", "work", "--config", config.path], name: "worker1", environment: env)
        let done = try Harness.waitFor(bench.database, "SELECT count(*) FROM teacher_labels", atLeast: 20, timeout: 60)
        #expect(done >= 20, "\(first.logText.suffix(2000))")
        first.kill(SIGKILL)
        _ = first.wait(timeout: 10)
        let leased = try Harness.count(bench.database, "SELECT count(*) FROM teacher_queue WHERE status = 'pending' AND lease_owner IS NOT NULL")
        #expect(leased > 0, "the kill should leave claimed items behind")
        let second = try DaemonProcess(arguments: ["teacher", "work", "--config", config.path, "--stop-when-empty"], name: "worker2", environment: env)
        #expect(second.wait(timeout: 120) == 0, "\(second.logText.suffix(2000))")
        try bench.checkVerdicts()
    }

    @Test("newsd label: k samples and majority, ambiguous marked, budget stop, resumable")
    func labelCommandResumes() async throws {
        let bench = try await TeacherBench(items: 60, seed: 5)
        let input = try bench.fixture.write()
        let out = input.deletingLastPathComponent().appendingPathComponent("labelled.csv")
        let binary = DaemonProcess.binary.path
        // A budget that runs out part-way: the run stops with status 3, what it wrote stays.
        var env = ["NEWSD_TEACHER_BASE_URL": bench.baseURL, "NEWSD_TEACHER_DAILY_BUDGET_USD": "0.004",
                   "NEWSD_TEACHER_INPUT_PRICE_PER_MILLION": "10", "NEWSD_TEACHER_OUTPUT_PRICE_PER_MILLION": "10",
                   "NEWSD_TEACHER_CONCURRENCY": "2", "NEWSD_TEACHER_REQUESTS_PER_MINUTE": "0"]
        let partial = try DaemonProcess(arguments: ["label", "--in", input.path, "--out", out.path], name: "label1", environment: env)
        #expect(partial.wait(timeout: 120) == 3, "\(partial.logText.suffix(1500))")
        let firstRows = try CSVTable(contentsOf: out).rows.count
        #expect(firstRows > 0 && firstRows < 60, "\(firstRows) rows after the budget stop")
        env["NEWSD_TEACHER_DAILY_BUDGET_USD"] = "0"
        let rest = try DaemonProcess(arguments: ["label", "--in", input.path, "--out", out.path], name: "label2", environment: env)
        #expect(rest.wait(timeout: 120) == 0, "\(rest.logText.suffix(1500))")
        let table = try CSVTable(contentsOf: out)
        #expect(table.header.suffix(5) == ["teacher_label", "teacher_status", "teacher_votes", "teacher_reasons", "teacher_soft_label"])
        #expect(table.rows.count == 60)
        let text = try table.column("text"), label = try table.column("teacher_label"), status = try table.column("teacher_status")
        let votes = try table.column("teacher_votes"), soft = try table.column("teacher_soft_label")
        #expect(Set(table.rows.map { $0[text] }).count == 60)
        for row in table.rows {
            let want = bench.fixture.expected[row[text]]!
            #expect(row[label] == (want ?? ""), "\(row[text])")
            #expect(row[status] == (want == nil ? "ambiguous" : "labelled"))
            let v = try JSONSerialization.jsonObject(with: Data(row[votes].utf8)) as? [String]
            #expect((v?.count ?? 0) >= 3)
            let s = try JSONSerialization.jsonObject(with: Data(row[soft].utf8)) as? [String: Double]
            #expect(abs((s?.values.reduce(0, +) ?? 0) - 1) < 1e-9 || s?.isEmpty == true)
        }
        _ = binary
    }

    @Test("ingest queues its cold-start items in the same transaction, once per text")
    func ingestQueuesColdStart() throws {
        let stream = try TestStream(topic: "teach", partitions: 2)
        var c = Harness.configuration(brokers: stream.cluster.bootstrapServers, database: stream.database, topic: stream.topic)
        c.teacher.baseURL = "http://127.0.0.1:9/v1"
        c.teacher.coldStartItems = 40
        let messages = Harness.goodMessages(120, prefix: "t")
        try stream.produce(messages)
        let running = try RunningPipeline(c)
        try Harness.waitFor(stream.database, "SELECT count(*) FROM news_items", atLeast: 120, timeout: 60)
        #expect(running.stop())
        let db = try PostgresConnection(stream.database)
        let queued = try db.execute("""
            SELECT count(*), count(*) FILTER (WHERE q.reason = 'cold_start'), count(DISTINCT q.text_hash),
                   count(*) FILTER (WHERE n.id IS NULL)
            FROM teacher_queue q LEFT JOIN news_items n ON n.id = q.item_id
            """).rows[0].map { Int($0!)! }
        // Duplicate texts in the stream are queued once, so at most 40 cold-start items. Once
        // they are queued, the untrained student's uncertain items may follow (how many depends
        // on how the stream was cut into batches), each text once as well.
        #expect(queued[1] > 0 && queued[1] <= 40 && queued[2] == queued[0] && queued[3] == 0, "\(queued)")
    }

    @Test("acceptance: dev-teacher replaying the shared CSV gives the recorded majority for every row that has one")
    func sharedDataReplay() async throws {
        let shared = Harness.packageRoot.deletingLastPathComponent().appendingPathComponent("shared/data/fpb-mixtral-train.csv")
        guard FileManager.default.fileExists(atPath: shared.path) else { return }   // the shared data sits beside CI's clone
        let table = try CSVTable(contentsOf: shared)
        let teacher = DevTeacher(book: try AnswerBook(table: table))
        let url = "http://127.0.0.1:\(try await teacher.start(port: 0))/v1"
        let out = Harness.temporaryDirectory().appendingPathComponent("fpb-labelled.csv")
        let run = try DaemonProcess(arguments: ["label", "--in", shared.path, "--out", out.path], name: "label-fpb",
                                    environment: ["NEWSD_TEACHER_BASE_URL": url, "NEWSD_TEACHER_REQUESTS_PER_MINUTE": "0", "NEWSD_TEACHER_CONCURRENCY": "16"])
        #expect(run.wait(timeout: 600) == 0, "\(run.logText.suffix(1500))")
        let result = try CSVTable(contentsOf: out)
        #expect(result.rows.count == 1811)
        let s = try (1...3).map { try result.column("sc_iter\($0)") }
        let majority = try result.column("label_llm_cot_multiple"), label = try result.column("teacher_label"), status = try result.column("teacher_status")
        var mismatches = 0, ambiguous = 0
        for row in result.rows {
            let counts = Dictionary(s.map { (row[$0], 1) }, uniquingKeysWith: +)
            if let (top, n) = counts.max(by: { $0.value < $1.value }), n >= 2, ["positive", "negative", "neutral"].contains(top) {
                if row[label] != row[majority] { mismatches += 1 }
            } else {
                ambiguous += 1
                #expect(row[status] == "ambiguous")
            }
        }
        #expect(mismatches == 0)
        #expect(ambiguous == 9)
    }
}
