import Foundation
import Logging
import NewsdDistill
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
import ServiceLifecycle
import UnixSignals

/// Start-up of the daemon: configuration, model, schema, portfolio; then the services.
public enum Daemon {
    /// Loads everything `newsd run` needs, failing early with a clear message.
    public static func prepare(_ config: NewsdConfiguration, logger: Logger,
                               consumerProperties: [String: String] = [:]) throws -> IngestPipeline {
        var model = try Artifact.load(directory: URL(fileURLWithPath: config.model.dir),
                                      baseDirectory: config.model.baseDir.isEmpty ? nil : URL(fileURLWithPath: config.model.baseDir),
                                      threads: config.model.threads)
        logger.info("student loaded", metadata: ["version": "\(model.version)", "labels": "\(model.labels)", "dir": "\(config.model.dir)"])
        let companies = config.portfolio.file.isEmpty ? [] : try PortfolioFile.load(config.portfolio.file)
        try withDatabase(config) { db in
            let applied = try Schema.migrate(db)
            if !applied.isEmpty { logger.info("schema migrated", metadata: ["versions": "\(applied)"]) }
            if !companies.isEmpty { try PortfolioFile.store(companies, into: db) }
            // A registered active model wins over model.dir: a host that starts later serves
            // what the others serve.
            if let active = try ModelRegistry.active(db), active.version != model.version {
                do {
                    model = try ModelWatcher.load(db, version: active.version, configuration: config)
                    logger.info("active model loaded from the registry", metadata: ["version": "\(active.version)", "seq": "v\(active.seq)"])
                } catch {
                    logger.error("active model refused; serving model.dir instead", metadata: ["version": "\(active.version)", "error": "\(error)"])
                }
            }
        }
        logger.info("portfolio loaded", metadata: ["companies": "\(companies.count)"])
        var settings = IngestPipeline.Settings(configuration: config)
        settings.consumerProperties = consumerProperties
        return IngestPipeline(settings: settings, model: model, companies: companies, logger: logger)
    }

    /// What `newsd check-config` checks beyond the values themselves, without connecting to
    /// anything: the Postgres URL parses, the model directory holds a verified artifact or a
    /// complete checkpoint, the portfolio file reads, the prompt template parses. Each error says
    /// which key is at fault.
    public static func checkFiles(_ c: NewsdConfiguration) throws {
        do { try PostgresConnection.validate(c.postgres.url) } catch {
            throw ConfigurationError(key: "postgres.url", value: "(not shown: it may hold a password)", reason: "\(error)")
        }
        if !c.model.dir.isEmpty {
            let dir = URL(fileURLWithPath: c.model.dir)
            do {
                if FileManager.default.fileExists(atPath: dir.appendingPathComponent("manifest.json").path) {
                    _ = try Artifact.verifiedManifest(directory: dir)
                } else {
                    for name in ["config.json", "model.safetensors", "vocab.txt"] where !FileManager.default.fileExists(atPath: dir.appendingPathComponent(name).path) {
                        throw ModelError.missingFile(dir.appendingPathComponent(name).path, underlying: "no such file")
                    }
                    _ = try BertConfig(huggingFace: dir.appendingPathComponent("config.json"))
                }
            } catch {
                throw ConfigurationError(key: "model.dir", value: "\"\(c.model.dir)\"", reason: "\(error)")
            }
        }
        if !c.portfolio.file.isEmpty {
            do { _ = try PortfolioFile.load(c.portfolio.file) } catch {
                throw ConfigurationError(key: "portfolio.file", value: "\"\(c.portfolio.file)\"", reason: "\(error)")
            }
        }
        if !c.teacher.promptFile.isEmpty {
            do { _ = try PromptTemplate(file: c.teacher.promptFile) } catch {
                throw ConfigurationError(key: "teacher.prompt_file", value: "\"\(c.teacher.promptFile)\"", reason: "\(error)")
            }
        }
    }

    /// Runs `body` with a fresh connection, retrying transient failures (the database starting
    /// up with the host) for up to a minute with the shared backoff; each retry is logged with its
    /// cause.
    public static func withDatabase<T>(_ config: NewsdConfiguration, logger: Logger? = nil, _ body: (PostgresConnection) throws -> T) throws -> T {
        let deadline = Date().addingTimeInterval(60)
        return try retry(RetryPolicy(initialDelay: 0.2, maxDelay: 5), deadline: { deadline }, onRetry: { r in
            logger?.warning("postgres not reachable at start-up, retrying", metadata: ["error": "\(r.error)", "retry_in_s": "\(String(format: "%.1f", r.delay))"])
        }) {
            try body(try PostgresConnection(config.postgres.url))
        }
    }

    /// The long-lived parts of `newsd run`, assembled into one `ServiceGroup`: ingest, the teacher
    /// worker, the trainer (in `daemon` mode), the model watcher (hot swap), the metrics endpoint,
    /// and a shutdown broadcast that starts every part stopping at once on the first signal.
    public struct Services: Sendable {
        /// The ingest service (its pipeline holds the statistics).
        public let ingest: IngestService
        /// The teacher worker, when the teacher is configured and `teacher.worker` is on.
        public let teacherWorker: TeacherWorker?
        /// The trainer, in `trainer.mode = "daemon"`.
        public let trainer: TrainerService?
        /// Hot swap.
        public let watcher: ModelWatcher
        /// `/metrics` and `/health`, unless `metrics.listen` is empty.
        public let metrics: MetricsServer?
        /// Fans the stop out.
        public let broadcast: ShutdownBroadcast
        private let teacherClient: TeacherClient?

        /// Builds the services for `pipeline` (from `prepare`).
        public init(configuration cfg: NewsdConfiguration, pipeline: IngestPipeline, logger: Logger) throws {
            ingest = IngestService(pipeline: pipeline, logger: logger)
            if !cfg.teacher.baseURL.isEmpty && cfg.teacher.worker {
                let client = try TeacherClient(settings: try TeacherSettings(configuration: cfg.teacher))
                teacherClient = client
                teacherWorker = TeacherWorker(configuration: cfg, client: client, logger: logger)
                logger.info("teacher worker enabled", metadata: ["teacher": "\(Redaction.url(cfg.teacher.baseURL))", "model": "\(cfg.teacher.model)",
                                                               "selection": "\(cfg.teacher.selection)", "samples": "\(cfg.teacher.samples)"])
            } else {
                teacherClient = nil
                teacherWorker = nil
            }
            trainer = cfg.trainer.mode == .daemon ? TrainerService(configuration: cfg, logger: logger) : nil
            watcher = ModelWatcher(configuration: cfg, serving: pipeline.serving, logger: logger)
            var server: MetricsServer?
            if !cfg.metrics.listen.isEmpty {
                do {
                    let worker = teacherWorker
                    server = try MetricsServer(listen: cfg.metrics.listen, logger: logger) {
                        let h = pipeline.healthReport()
                        return (pipeline.prometheusText() + (worker?.prometheusText() ?? ""), h.healthy, h.text)
                    }
                    logger.info("metrics and health served", metadata: ["listen": "\(cfg.metrics.listen)", "port": "\(server!.port)"])
                } catch {
                    logger.error("metrics endpoint not started; running without it", metadata: ["error": "\(error)"])
                }
            }
            metrics = server
            broadcast = ShutdownBroadcast()
            let (ingest, worker, trainer, watcher, client) = (ingest, teacherWorker, trainer, watcher, teacherClient)
            broadcast.onStop { ingest.requestStop() }
            broadcast.onStop { worker?.requestStop() }
            broadcast.onStop { trainer?.requestStop() }
            broadcast.onStop { watcher.requestStop() }
            _ = client
        }

        /// The group's service list; the broadcast is last, so it hears the shutdown first.
        /// Every service returns only once stopped (the broadcast stops them all at once, so they
        /// finish in any order); a return therefore shuts the group down gracefully, and an error
        /// cancels it.
        public func configurations(extra: [ServiceGroupConfiguration.ServiceConfiguration] = []) -> [ServiceGroupConfiguration.ServiceConfiguration] {
            var services: [any Service] = [ingest]
            if let teacherWorker { services.append(teacherWorker) }
            if let trainer { services.append(trainer) }
            services.append(watcher)
            if let metrics { services.append(metrics) }
            return services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) }
                + extra + [.init(service: broadcast, successTerminationBehavior: .gracefullyShutdownGroup)]
        }

        /// Runs everything until a signal (or a service ends the group), then stops every part at
        /// once; returns when all have stopped.
        public func run(logger: Logger, signals: [UnixSignal] = [.sigterm, .sigint], shutdownTimeout: Seconds,
                        extra: [ServiceGroupConfiguration.ServiceConfiguration] = []) async throws {
            var config = ServiceGroupConfiguration(services: configurations(extra: extra), gracefulShutdownSignals: signals, logger: logger)
            // After the bound, the group cancels what is still running (cancellation is honoured
            // by every service too).
            config.maximumGracefulShutdownDuration = shutdownTimeout.duration
            config.maximumCancellationDuration = .seconds(5)
            defer { teacherClient?.shutdown() }
            try await ServiceGroup(configuration: config).run()
        }
    }
}
