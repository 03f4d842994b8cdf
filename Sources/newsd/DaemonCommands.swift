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

/// Sets up structured logging to standard error (the journal, under systemd) as configured
/// (`log.level`, `log.format`), with the configuration's secrets registered for scrubbing.
func bootstrapLogging(_ log: NewsdConfiguration.Log, secretsOf configuration: NewsdConfiguration? = nil) -> Logger {
    if let configuration { SecretScrubber.register(configuration: configuration) }
    StructuredLogHandler.bootstrap(level: log.level, format: log.format)
    return Logger(label: "newsd")
}

/// Loads the configuration or exits with the key, value and reason.
func loadConfiguration(_ file: String?, requireModel: Bool = true) throws -> NewsdConfiguration {
    do { return try NewsdConfiguration.load(file: file, requireModel: requireModel) } catch {
        throw ValidationError("configuration: \(error)")
    }
}

/// `newsd run`: the daemon.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the daemon: Kafka -> student -> Postgres.")

    @Option(help: "Configuration file (TOML); NEWSD_<SECTION>_<KEY> variables override it.") var config: String?
    @Option(help: "Extra librdkafka consumer property KEY=VALUE (repeatable; for tests and tuning).") var kafkaProperty: [String] = []
    @Option(help: "Stop after this many messages were consumed (demo and benchmarks); 0 = never.") var stopAfter = 0

    func run() async throws {
        let cfg = try loadConfiguration(config)
        let logger = bootstrapLogging(cfg.log, secretsOf: cfg)
        raiseOpenFileLimit(logger: logger)
        var props: [String: String] = [:]
        for p in kafkaProperty {
            let parts = p.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--kafka-property \(p): expected KEY=VALUE") }
            props[parts[0]] = parts[1]
        }
        let pipeline = try Daemon.prepare(cfg, logger: logger, consumerProperties: props)
        pipeline.onReady = { SystemdNotifier.notify("READY=1\nSTATUS=consuming") }
        let services = try Daemon.Services(configuration: cfg, pipeline: pipeline, logger: logger, configurationFile: config)
        let extra: [ServiceGroupConfiguration.ServiceConfiguration] = stopAfter > 0
            ? [.init(service: StopAfterService(pipeline: pipeline, count: stopAfter), successTerminationBehavior: .gracefullyShutdownGroup)] : []
        try await services.run(logger: logger, shutdownTimeout: cfg.ingest.shutdownTimeoutSeconds, extra: extra)
        let s = pipeline.statistics
        logger.info("stopped", metadata: ["consumed": "\(s.consumed)", "stored": "\(s.stored)", "rejected": "\(s.rejected)", "batches": "\(s.batches)"])
        if let path = ProcessInfo.processInfo.environment["NEWSD_STATS_FILE"] {
            try JSONText.data(RunSummary(s)).write(to: URL(fileURLWithPath: path))
        }
    }
}

/// The figures `NEWSD_STATS_FILE` receives when `newsd run` ends (benchmarks read them).
struct RunSummary: Encodable {
    let consumed: Int, stored: Int, rejected: Int, batches: Int
    let pollSeconds: Double, parseSeconds: Double, classifySeconds: Double, writeSeconds: Double, busySeconds: Double
    let databaseFailures: Int, p50BatchMs: Double, p99BatchMs: Double, sustainedPerSecond: Double, peakRssMb: Int

    init(_ s: IngestStatistics) {
        consumed = s.consumed; stored = s.stored; rejected = s.rejected; batches = s.batches
        pollSeconds = s.pollSeconds; parseSeconds = s.parseSeconds; classifySeconds = s.classifySeconds; writeSeconds = s.writeSeconds
        busySeconds = s.parseSeconds + s.classifySeconds + s.writeSeconds + s.pollSeconds
        databaseFailures = s.databaseFailures
        p50BatchMs = s.latencyMilliseconds(0.5); p99BatchMs = s.latencyMilliseconds(0.99)
        sustainedPerSecond = s.sustainedRate; peakRssMb = peakResidentBytes() / 1_048_576
    }

    enum CodingKeys: String, CodingKey {
        case consumed, stored, rejected, batches, pollSeconds = "poll_seconds", parseSeconds = "parse_seconds"
        case classifySeconds = "classify_seconds", writeSeconds = "write_seconds", busySeconds = "busy_seconds"
        case databaseFailures = "database_failures", p50BatchMs = "p50_batch_ms", p99BatchMs = "p99_batch_ms"
        case sustainedPerSecond = "sustained_per_second", peakRssMb = "peak_rss_mb"
    }
}

/// Ends the group once the pipeline consumed `count` messages (demo, benchmarks).
struct StopAfterService: Service {
    let pipeline: IngestPipeline
    let count: Int
    func run() async throws {
        while pipeline.statistics.consumed < count {
            try await Task.sleep(for: .milliseconds(100))
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
        }
    }
}

/// `newsd check-config`.
struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate a configuration file (and the environment overrides).")
    @Option(help: "Configuration file.") var config: String?
    func run() throws {
        let c = try loadConfiguration(config)
        do { try Daemon.checkFiles(c) } catch { throw ValidationError("configuration: \(error)") }
        print("configuration OK: kafka \(c.kafka.brokers) topics \(c.kafka.topics) group \(c.kafka.groupID); model \(c.model.dir); portfolio \(c.portfolio.file.isEmpty ? "(none)" : c.portfolio.file)")
    }
}

/// `newsd migrate`.
struct MigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "migrate", abstract: "Apply database migrations (also done at start).")
    @Option(help: "Configuration file.") var config: String?
    @Option(help: "Postgres URL (overrides the configuration).") var postgres: String?
    func run() throws {
        var url = postgres
        if url == nil { url = try loadConfiguration(config, requireModel: false).postgres.url }
        let db = try PostgresConnection(url!)
        let applied = try Schema.migrate(db)
        print(applied.isEmpty ? "schema up to date (version \(Schema.latestVersion))" : "applied migrations \(applied)")
    }
}

/// `newsd dev-broker`: librdkafka's mock cluster on loopback, with fault commands on stdin.
struct DevBrokerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dev-broker",
        abstract: "Run a development Kafka cluster (librdkafka mock cluster) on loopback.",
        discussion: """
        Prints the bootstrap servers. Fault commands, one per line on standard input:
          down BROKER | up BROKER | rtt BROKER MS | errors API_KEY COUNT ERROR_CODE | topic NAME PARTITIONS | quit
        (e.g. "errors 1 5 7": the next 5 Fetch requests fail with REQUEST_TIMED_OUT).
        """)
    @Option(help: "Number of brokers.") var brokers = 1
    @Option(help: "Topic to create, NAME:PARTITIONS (repeatable).") var topic: [String] = ["news:4"]
    @Option(help: "Write the bootstrap servers to this file.") var bootstrapFile: String?

    func run() throws {
        let cluster = try MockCluster(brokers: brokers)
        for t in topic {
            let parts = t.split(separator: ":")
            guard parts.count == 2, let n = Int(parts[1]), n > 0 else { throw ValidationError("--topic \(t): expected NAME:PARTITIONS") }
            try cluster.createTopic(String(parts[0]), partitions: n)
        }
        if let bootstrapFile { try (cluster.bootstrapServers + "\n").write(toFile: bootstrapFile, atomically: true, encoding: .utf8) }
        print(cluster.bootstrapServers)
        fflushStandardOutput()
        // Fault commands from standard input; at its end the cluster keeps serving until a signal
        // (SIGTERM/SIGINT end the process: a development broker keeps nothing worth saving).
        while let line = readLine() {
            let w = line.split(separator: " ").map(String.init)
            guard let cmd = w.first else { continue }
            do {
                switch (cmd, w.count) {
                case ("down", 2): try cluster.setBroker(Int32(w[1]) ?? 1, up: false)
                case ("up", 2): try cluster.setBroker(Int32(w[1]) ?? 1, up: true)
                case ("rtt", 3): try cluster.setLatency(broker: Int32(w[1]) ?? 1, milliseconds: Int(w[2]) ?? 0)
                case ("errors", 4): cluster.pushRequestErrors(apiKey: Int16(w[1]) ?? 1, count: Int(w[2]) ?? 1, error: Int32(w[3]) ?? 7)
                case ("topic", 3): try cluster.createTopic(w[1], partitions: Int(w[2]) ?? 1)
                case ("quit", _): return
                default: FileHandle.standardError.write(Data("unknown command: \(line)\n".utf8)); continue
                }
                FileHandle.standardError.write(Data("ok \(line)\n".utf8))
            } catch {
                FileHandle.standardError.write(Data("error \(line): \(error)\n".utf8))
            }
        }
        while true { sleep(3600) }
    }
}

/// Flushes C stdout (print is buffered when piped).
func fflushStandardOutput() { fflush(nil) }

/// `newsd produce`: replays a file of JSON or text lines into a topic.
struct ProduceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "produce", abstract: "Send the lines of a file (JSON or text) to a topic.")
    @Option(help: "Bootstrap servers.") var brokers: String
    @Option(help: "Topic.") var topic: String
    @Option(help: "File with one message per line.") var file: String
    @Option(help: "Messages per second (0 = as fast as possible).") var rate = 0.0
    @Option(help: "Partition (default: the partitioner spreads them by key).") var partition: Int32?

    func run() throws {
        let producer = try KafkaProducer(brokers: brokers)
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let start = Date()
        var n = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if rate > 0 {
                let due = start.addingTimeInterval(Double(n) / rate)
                let wait = due.timeIntervalSinceNow
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
            }
            try producer.send(topic: topic, partition: partition, key: Array("k\(n)".utf8), value: Array(line.utf8))
            n += 1
        }
        try producer.flush()
        FileHandle.standardError.write(Data("produced \(n) messages to \(topic) in \(String(format: "%.1f", Date().timeIntervalSince(start))) s\n".utf8))
    }
}

/// `newsd demo-data`: a synthetic news stream about a demo portfolio, with known labels.
struct DemoDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo-data", abstract: "Write a synthetic news stream (JSON lines), its labels (CSV) and the demo portfolio.")
    @Option(help: "Output file of JSON lines.") var out: String
    @Option(help: "Number of sentences.") var count = 2000
    @Option(help: "Seed.") var seed: UInt64 = 1
    @Option(help: "Also write the teacher's answer book here: text, its votes sc_iter1..3, and the truth (label, company, domain, kind).")
    var labels: String?
    @Option(help: "Also write the demo portfolio CSV here.") var portfolio: String?
    @Option(help: "realistic (numbers, negations, hedges, mixed news, a change of domain, a fallible teacher) or easy (plain templates, a perfect teacher).")
    var style = "realistic"
    @Option(help: "Share of the stream after which the news turns from wire sentences to social posts (realistic; 1 = never).") var shiftAt = 0.5
    @Option(help: "Share of items the demo teacher labels wrong (realistic).") var teacherErrorRate = 0.07

    func run() throws {
        guard (0...1).contains(shiftAt) else { throw ValidationError("--shift-at \(shiftAt): must be between 0 and 1") }
        guard (0..<1).contains(teacherErrorRate) else { throw ValidationError("--teacher-error-rate \(teacherErrorRate): must be in [0, 1)") }
        let sentences: [DemoData.Sentence]
        switch style {
        case "realistic": sentences = DemoData.realistic(count: count, seed: seed, shiftAt: shiftAt, teacherErrorRate: teacherErrorRate)
        case "easy": sentences = DemoData.sentences(count: count, seed: seed)
        default: throw ValidationError("--style \(style): expected realistic or easy")
        }
        let lines = sentences.enumerated().map { i, s in DemoData.message(s, includeCompanies: i % 3 == 0) }
        try (lines.joined(separator: "\n") + "\n").write(toFile: out, atomically: true, encoding: .utf8)
        if let labels { try DemoData.answerTable(sentences).csvText().write(toFile: labels, atomically: true, encoding: .utf8) }
        if let portfolio { try PortfolioFile.csv(DemoData.portfolio).write(toFile: portfolio, atomically: true, encoding: .utf8) }
        FileHandle.standardError.write(Data("wrote \(count) messages to \(out)\n".utf8))
    }
}

/// Raises the soft limit on open files to the hard limit (systemd's `LimitNOFILE=`): a flood of
/// connections to the metrics port must meet the connection cap, not `EMFILE`.
func raiseOpenFileLimit(logger: Logger) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
    let before = limit.rlim_cur
    limit.rlim_cur = limit.rlim_max
    if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 {
        logger.debug("open file limit raised", metadata: ["from": "\(before)", "to": "\(limit.rlim_cur)"])
    }
}
