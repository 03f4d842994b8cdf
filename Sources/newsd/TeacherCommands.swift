import ArgumentParser
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
import ServiceLifecycle

/// `newsd dev-teacher`: an OpenAI-compatible server replaying recorded teacher answers.
struct DevTeacherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-teacher",
        abstract: "Serve OpenAI-compatible chat completions from recorded teacher answers (development and tests).",
        discussion: """
        The answers CSV has a text column and either sc_iter1..k (optional reason_iter1..k) or one label column.
        The i-th answered request for a text gets sample i (cycling); an injected fault does not use up a
        sample. Prints the base URL (teacher.base_url) on standard output; GET /stats returns the totals served.
        """)
    @Option(help: "Recorded answers (CSV).") var answers: String
    @Option(help: "Port (0 = any free port).") var port: UInt16 = 8089
    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Write the base URL to this file once listening.") var urlFile: String?
    @Option(help: "Latency added to every answer, milliseconds.") var latencyMs = 0
    @Option(name: .customLong("rate-429"), help: "Share of requests answered 429 with Retry-After: 1.") var rate429 = 0.0
    @Option(name: .customLong("rate-500"), help: "Share of requests answered 500.") var rate500 = 0.0
    @Option(help: "Share of requests never answered.") var rateHang = 0.0
    @Option(help: "Share of answers whose content is not the JSON asked for, or empty.") var rateMalformed = 0.0
    @Option(help: "Texts with no recorded answer: label:LABEL, fail or error.") var unknown = "label:neutral"
    @Option(help: "Prompt template the client uses (to find the text in a request).") var promptFile: String?
    @Option(help: "Require this bearer token (name of an environment variable holding it).") var apiKeyEnv: String?
    @Option(help: "Seed of the fault injection.") var seed: UInt64 = 1

    func validate() throws {
        for (name, v) in [("--rate-429", rate429), ("--rate-500", rate500), ("--rate-hang", rateHang), ("--rate-malformed", rateMalformed)] where !(0...1).contains(v) {
            throw ValidationError("\(name) \(v): a rate between 0 and 1")
        }
        if latencyMs < 0 { throw ValidationError("--latency-ms \(latencyMs): must be >= 0") }
    }

    func run() async throws {
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: answers))
        let book = try AnswerBook(table: table, source: answers)
        var faults = FaultRates()
        faults.latencyMilliseconds = latencyMs
        faults.rate429 = rate429; faults.rate500 = rate500; faults.rateHang = rateHang; faults.rateMalformed = rateMalformed
        let prompt = try promptFile.map { try PromptTemplate(file: $0) } ?? .investorSentiment
        let key = apiKeyEnv.flatMap { ProcessInfo.processInfo.environment[$0] }
        let teacher = DevTeacher(book: book, faults: faults, unknown: try UnknownTextRule(parsing: unknown), prompt: prompt, apiKey: key, seed: seed)
        let bound = try await teacher.start(host: host, port: port)
        let url = "http://\(host):\(bound)/v1"
        if let urlFile { try (url + "\n").write(toFile: urlFile, atomically: true, encoding: .utf8) }
        print(url)
        fflushStandardOutput()
        note("dev-teacher: \(book.texts.count) texts, \(book.samples.first?.count ?? 0) samples each; faults: latency \(latencyMs) ms, 429 \(rate429), 500 \(rate500), hang \(rateHang), malformed \(rateMalformed)")
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

/// `newsd label`: batch labelling of a CSV by the teacher, no database needed.
struct LabelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "label",
        abstract: "Label the texts of a CSV with the teacher (k samples, majority vote); resumable.",
        discussion: """
        Writes the input columns plus teacher_label (empty when ambiguous), teacher_status (labelled or
        ambiguous), teacher_votes (JSON: label per sample), teacher_reasons (JSON) and teacher_soft_label
        (JSON vote shares). Rows already in the output are skipped, so an interrupted run resumes.
        """)
    @Option(name: .customLong("in"), help: "Input CSV.") var input: String
    @Option(help: "Column with the text.") var textColumn = "text"
    @Option(help: "Output CSV.") var out: String
    @Option(help: "Configuration file ([teacher] section); NEWSD_TEACHER_* variables override it.") var config: String?

    func run() async throws {
        let cfg = try loadConfiguration(config, requireModel: false)
        guard !cfg.teacher.baseURL.isEmpty else { throw ValidationError("teacher.base_url is not set (configuration or NEWSD_TEACHER_BASE_URL)") }
        let settings = try TeacherSettings(configuration: cfg.teacher)
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: input))
        let column = try table.column(textColumn)
        let extra = ["teacher_label", "teacher_status", "teacher_votes", "teacher_reasons", "teacher_soft_label"]
        let done = try Self.resume(out: out, header: table.header + extra, textColumn: textColumn)
        var pending: [String: [[String]]] = [:]
        var order: [String] = []
        for row in table.rows where !done.contains(row[column]) {
            if pending[row[column]] == nil { order.append(row[column]) }
            pending[row[column], default: []].append(row)
        }
        note("label: \(table.rows.count) rows, \(done.count) texts already in \(out), \(order.count) to label")
        guard let handle = FileHandle(forWritingAtPath: out) else { throw ValidationError("cannot write \(out)") }
        handle.seekToEndOfFile()
        let client = try TeacherClient(settings: settings)
        defer { client.shutdown() }
        let totals = LockedCounter()
        let progress = ProgressReporter()
        let start = Date()
        var finished = 0, labelled = 0, ambiguous = 0, failed = 0
        var budgetSpent = false
        try await withThrowingTaskGroup(of: LabelOutcome.self) { group in
            var next = 0, inFlight = 0
            while next < order.count || inFlight > 0 {
                while !budgetSpent && inFlight < settings.concurrency && next < order.count {
                    let text = order[next]
                    next += 1; inFlight += 1
                    group.addTask {
                        do { return LabelOutcome(text: text, verdict: try await client.label(text) { totals.add($0) }, error: nil) } catch {
                            return LabelOutcome(text: text, verdict: nil, error: error as? TeacherError ?? TeacherError("\(error)", retriable: true))
                        }
                    }
                }
                guard inFlight > 0, let outcome = try await group.next() else { break }
                inFlight -= 1
                let text = outcome.text
                if let v = outcome.verdict {
                    if v.label == nil { ambiguous += 1 } else { labelled += 1 }
                    var lines = ""
                    for row in pending[text] ?? [] {
                        lines += (row + [v.label ?? "", v.status, Self.json(v.votes), Self.json(v.reasons), Self.json(v.distribution)])
                            .map(CSVTable.quote).joined(separator: ",") + "\n"
                    }
                    handle.write(Data(lines.utf8))
                } else if let e = outcome.error {
                    failed += 1
                    if e.kind == .budgetExhausted {
                        if !budgetSpent { note("label: the daily budget of $\(settings.dailyBudgetUSD) is spent; stopping (run again tomorrow to resume)") }
                        budgetSpent = true
                    } else {
                        note("label: not labelled (a rerun retries it): \(e)")
                    }
                }
                finished += 1
                let t = totals.value
                progress.update(fraction: Double(finished) / Double(max(order.count, 1)), label: "labelling",
                                details: "\(finished)/\(order.count) texts, \(t.requests) requests, $\(String(format: "%.4f", t.cost))")
            }
        }
        try handle.synchronize()
        try handle.close()
        let seconds = Date().timeIntervalSince(start)
        let t = totals.value
        print(formatTable([
            ["texts labelled", "ambiguous", "not labelled", "requests", "failed requests", "prompt tokens", "completion tokens", "cost USD", "seconds", "texts/s"],
            [String(labelled), String(ambiguous), String(failed), String(t.requests), String(t.failedRequests), String(t.promptTokens),
             String(t.completionTokens), String(format: "%.4f", t.cost), String(format: "%.1f", seconds),
             String(format: "%.1f", Double(labelled + ambiguous) / max(seconds, 1e-9))],
        ]))
        if failed > 0 { throw ExitCode(3) }
    }

    /// Texts already in the output; creates it with the header when absent; cuts a torn last line.
    static func resume(out: String, header: [String], textColumn: String) throws -> Set<String> {
        guard FileManager.default.fileExists(atPath: out) else {
            try (header.map(CSVTable.quote).joined(separator: ",") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
            return []
        }
        var text = try String(contentsOfFile: out, encoding: .utf8)
        if !text.hasSuffix("\n"), let cut = text.lastIndex(of: "\n") {
            text = String(text[...cut])
            try text.write(toFile: out, atomically: true, encoding: .utf8)
        }
        let existing = try CSVTable(parsing: text, source: out)
        guard existing.header == header else { throw ValidationError("\(out) exists with other columns; choose another --out or remove it") }
        let c = try existing.column(textColumn)
        return Set(existing.rows.map { $0[c] })
    }

    static func json<T: Encodable>(_ value: T) -> String { jsonLine(value) }
}

/// One finished text of a labelling run.
struct LabelOutcome: Sendable {
    var text: String
    var verdict: TeacherLabel?
    var error: TeacherError?
}

/// Request totals of a labelling run.
final class LockedCounter: Sendable {
    struct Totals: Sendable { var requests = 0, failedRequests = 0, promptTokens = 0, completionTokens = 0; var cost = 0.0 }
    private let totals = LockedValue(Totals())
    func add(_ r: TeacherRequestRecord) {
        totals.withLock { t in
            t.requests += 1
            if r.status != "ok" { t.failedRequests += 1 }
            t.promptTokens += r.promptTokens; t.completionTokens += r.completionTokens; t.cost += r.cost
        }
    }
    var value: Totals { totals.value }
}

/// `newsd teacher ...`: the labelling queue.
struct TeacherCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "teacher", abstract: "The teacher queue: stats, a standalone worker, manual enqueue.",
                                                    subcommands: [TeacherStatsCommand.self, TeacherWorkCommand.self, TeacherEnqueueCommand.self])
}

/// `newsd teacher work`.
struct TeacherWorkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "work", abstract: "Drain the teacher queue (a worker without ingest).")
    @Option(help: "Configuration file.") var config: String?
    @Flag(help: "Exit once the queue is empty.") var stopWhenEmpty = false

    func run() async throws {
        let cfg = try loadConfiguration(config, requireModel: false)
        let logger = bootstrapLogging(cfg.log, secretsOf: cfg)
        guard !cfg.teacher.baseURL.isEmpty else { throw ValidationError("teacher.base_url is not set") }
        try Daemon.withDatabase(cfg) { db in _ = try Schema.migrate(db) }
        let client = try TeacherClient(settings: try TeacherSettings(configuration: cfg.teacher))
        defer { client.shutdown() }
        let worker = TeacherWorker(configuration: cfg, client: client, logger: logger, stopWhenEmpty: stopWhenEmpty)
        logger.info("teacher worker started", metadata: ["worker": "\(worker.workerID)", "teacher": "\(Redaction.url(cfg.teacher.baseURL))", "model": "\(cfg.teacher.model)"])
        let group = ServiceGroup(configuration: .init(services: [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        let s = worker.statistics
        logger.info("teacher worker stopped", metadata: ["labelled": "\(s.labelled)", "ambiguous": "\(s.ambiguous)", "released": "\(s.released)",
                                                         "requests": "\(s.requests)", "cost_usd": "\(s.cost)"])
    }
}

/// `newsd teacher enqueue`.
struct TeacherEnqueueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "enqueue", abstract: "Put the texts of a CSV on the teacher queue (already labelled texts are skipped).")
    @Option(help: "Configuration file.") var config: String?
    @Option(name: .customLong("in"), help: "Input CSV.") var input: String
    @Option(help: "Column with the text.") var textColumn = "text"

    func run() throws {
        let cfg = try loadConfiguration(config, requireModel: false)
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: input))
        let texts = try table.values(textColumn)
        let n = try Daemon.withDatabase(cfg) { db -> Int in
            _ = try Schema.migrate(db)
            return try TeacherQueue.enqueue(db, texts: texts, reason: "manual")
        }
        print("queued \(n) of \(texts.count) texts")
    }
}

/// `newsd teacher stats`.
struct TeacherStatsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stats", abstract: "Teacher calls, tokens, spend, FAIL and ambiguous rates, live accuracy of the student.")
    @Option(help: "Configuration file.") var config: String?
    @Flag(help: "JSON output.") var json = false

    func run() throws {
        let cfg = try loadConfiguration(config, requireModel: false)
        let stats = try Daemon.withDatabase(cfg) { db in try TeacherStatistics.read(db) }
        if json { print(try JSONText.encode(stats)); return }
        print(stats.report(prices: (cfg.teacher.inputPricePerMillion, cfg.teacher.outputPricePerMillion)))
    }
}
