import Foundation
import Logging
import NewsdAlerts
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
                               consumerProperties: [String: String] = [:], metrics: NewsdMetrics = NewsdMetrics()) throws -> IngestPipeline {
        let precision = try ModelWatcher.precision(config)
        var model = try Artifact.load(directory: URL(fileURLWithPath: config.model.dir),
                                      baseDirectory: config.model.baseDir.isEmpty ? nil : URL(fileURLWithPath: config.model.baseDir),
                                      threads: config.model.threads, precision: precision, cacheCapacity: config.model.cacheEntries,
                                      earlyExit: config.model.earlyExit, servingOnly: true)
        logger.info("student loaded", metadata: ["version": "\(model.version)", "labels": "\(model.labels)", "dir": "\(config.model.dir)",
                                                 "precision": "\(model.runner.precision)", "cpu_features": "\(CPUFeatures.host)",
                                                 "weights_mb": "\(model.runner.residentBytes / 1_048_576)", "blas_core": "\(BLASCore.current)",
                                                 "blas_core_replaced": "\(BLASCore.replaced ?? "no")",
                                                 "early_exit": "\(model.earlyExitSummary)"])
        if let warning = BLASCore.weakerKernelsWarning { logger.warning("\(warning)") }
        let companies = config.portfolio.file.isEmpty ? [] : try PortfolioFile.load(config.portfolio.file)
        try withDatabase(config) { db in
            let applied = try Schema.migrate(db)
            if !applied.isEmpty { logger.info("schema migrated", metadata: ["versions": "\(applied)"]) }
            if !companies.isEmpty { try PortfolioFile.store(companies, into: db) }
            // A registered active model wins over model.dir: a host that starts later serves
            // what the others serve.
            if let active = try ModelRegistry.active(db), active.version != model.version {
                do {
                    model = try ModelWatcher.load(db, version: active.version, configuration: config, serving: true)
                    logger.info("active model loaded from the registry", metadata: ["version": "\(active.version)", "seq": "v\(active.seq)"])
                } catch {
                    logger.error("active model refused; serving model.dir instead", metadata: ["version": "\(active.version)", "error": "\(error)"])
                }
            }
        }
        logger.info("portfolio loaded", metadata: ["companies": "\(companies.count)"])
        var settings = IngestPipeline.Settings(configuration: config)
        settings.consumerProperties = consumerProperties
        return IngestPipeline(settings: settings, model: model, companies: companies, logger: logger, metrics: metrics)
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
    /// worker, the trainer (in `daemon` mode), the model watcher (hot swap), the operators'
    /// endpoint, the database monitor (readiness, group-wide gauges), the systemd supervisor
    /// (watchdog, status), SIGHUP reload, and a shutdown broadcast that starts every part
    /// stopping at once on the first signal.
    public struct Services: Sendable {
        /// The ingest service (its pipeline holds the statistics).
        public let ingest: IngestService
        /// The teacher worker, when the teacher is configured and `teacher.worker` is on.
        public let teacherWorker: TeacherWorker?
        /// The trainer, in `trainer.mode = "daemon"`.
        public let trainer: TrainerService?
        /// Hot swap.
        public let watcher: ModelWatcher
        /// `/metrics`, `/healthz`, `/readyz`, unless `metrics.listen` is empty.
        public let endpoint: OpsEndpoint?
        /// Postgres reachability and group-wide gauges.
        public let monitor: DatabaseMonitor
        /// Negative-shift alerts (detector, verification, delivery) and the analysts' rollups.
        public let alerts: AlertService
        /// Watchdog and status line.
        public let supervisor: SystemdSupervisor
        /// SIGHUP.
        public let reloader: ReloadService
        /// Fans the stop out.
        public let broadcast: ShutdownBroadcast
        /// The metrics of every part.
        public let metrics: NewsdMetrics
        private let teacherClient: TeacherClient?

        /// Builds the services for `pipeline` (from `prepare`); `configurationFile` is re-read on
        /// SIGHUP.
        public init(configuration cfg: NewsdConfiguration, pipeline: IngestPipeline, logger: Logger, configurationFile: String? = nil) throws {
            let metrics = pipeline.metrics
            self.metrics = metrics
            ingest = IngestService(pipeline: pipeline, logger: logger)
            if !cfg.teacher.baseURL.isEmpty && cfg.teacher.worker {
                let client = try TeacherClient(settings: try TeacherSettings(configuration: cfg.teacher))
                teacherClient = client
                teacherWorker = TeacherWorker(configuration: cfg, client: client, logger: logger, metrics: metrics)
                logger.info("teacher worker enabled", metadata: ["teacher": "\(Redaction.url(cfg.teacher.baseURL))", "model": "\(cfg.teacher.model)",
                                                               "selection": "\(cfg.teacher.selection)", "samples": "\(cfg.teacher.samples)"])
            } else {
                teacherClient = nil
                teacherWorker = nil
            }
            trainer = cfg.trainer.mode == .daemon ? TrainerService(configuration: cfg, logger: logger, metrics: metrics) : nil
            watcher = ModelWatcher(configuration: cfg, serving: pipeline.serving, logger: logger)
            monitor = DatabaseMonitor(url: cfg.postgres.url, metrics: metrics, logger: logger)
            alerts = try AlertService(configuration: cfg, logger: logger, metrics: metrics)
            supervisor = SystemdSupervisor(pipeline: pipeline, worker: teacherWorker, metrics: metrics, logger: logger)
            broadcast = ShutdownBroadcast()
            let broadcast = broadcast
            if !cfg.metrics.listen.isEmpty {
                let monitor = monitor
                let startedAt = monotonicSeconds()
                let progress = LockedValue((value: pipeline.progress, at: startedAt))
                let sources = OpsEndpoint.Sources(
                    metrics: metrics,
                    beforeScrape: {
                        metrics.set("newsd_process_resident_bytes", Double(ProcessFigures.residentBytes()))
                        metrics.set("newsd_process_open_fds", Double(ProcessFigures.openDescriptors()))
                    },
                    liveness: {
                        // Alive while the ingest loop turns (it turns at least twice a second).
                        let now = monotonicSeconds(), current = pipeline.progress
                        let seen = progress.withLock { p -> Double in
                            if p.value != current { p = (current, now) }
                            return now - p.at
                        }
                        let running = pipeline.health.running
                        return HealthReport([HealthCheck("ingest_loop", ok: !running || seen < 60,
                                                         running ? "last turn \(String(format: "%.1f", seen)) s ago" : "starting or stopping")])
                    },
                    readiness: {
                        let h = pipeline.health
                        let stopping = broadcast.isStopping || pipeline.isStopping
                        return HealthReport([
                            HealthCheck("model", ok: true, "serving \(pipeline.activeModel.version)"),
                            HealthCheck("consumer", ok: h.running, h.running ? "consuming" : "not consuming yet"),
                            HealthCheck("partitions", ok: h.assignedPartitions > 0, "\(h.assignedPartitions) assigned"),
                            monitor.reachable,
                            HealthCheck("shutdown", ok: !stopping, stopping ? "shutting down" : "running"),
                        ])
                    })
                endpoint = try OpsEndpoint(configuration: cfg.metrics, sources: sources, logger: logger)
                logger.info("metrics and health served", metadata: ["listen": "\(cfg.metrics.listen)"])
            } else {
                endpoint = nil
            }
            let running = LockedValue(cfg)
            let worker = teacherWorker
            let alerts = alerts
            reloader = ReloadService {
                await Daemon.reload(file: configurationFile, running: running, pipeline: pipeline, worker: worker, alerts: alerts,
                                    metrics: metrics, logger: logger)
            }
            let (ingest, trainer, watcher, monitor, supervisor) = (ingest, trainer, watcher, monitor, supervisor)
            broadcast.onStop { alerts.requestStop() }
            broadcast.onStop { ingest.requestStop() }
            broadcast.onStop { worker?.requestStop() }
            broadcast.onStop { trainer?.requestStop() }
            broadcast.onStop { watcher.requestStop() }
            broadcast.onStop { supervisor.requestStop() }
            _ = monitor
        }

        /// The group's service list; the broadcast is last, so it hears the shutdown first.
        /// Every service returns only once stopped (the broadcast stops them all at once, so they
        /// finish in any order); a return therefore shuts the group down gracefully, and an error
        /// cancels it.
        public func configurations(extra: [ServiceGroupConfiguration.ServiceConfiguration] = []) -> [ServiceGroupConfiguration.ServiceConfiguration] {
            var services: [any Service] = [monitor, ingest]
            if let teacherWorker { services.append(teacherWorker) }
            if let trainer { services.append(trainer) }
            services.append(alerts)
            services.append(watcher)
            services.append(supervisor)
            services.append(reloader)
            if let endpoint { services.append(endpoint) }
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

    /// SIGHUP: re-reads `file` (and the environment), applies what can change while running,
    /// reports and ignores what needs a restart; a configuration that does not load is reported
    /// and nothing changes. systemd hears `RELOADING=1` then `READY=1`.
    static func reload(file: String?, running: LockedValue<NewsdConfiguration>, pipeline: IngestPipeline, worker: TeacherWorker?,
                       alerts: AlertService?, metrics: NewsdMetrics, logger: Logger) async {
        SystemdNotifier.notify("RELOADING=1\nMONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds)")
        defer { SystemdNotifier.notify("READY=1") }
        do {
            let reread = try NewsdConfiguration.load(file: file)
            SecretScrubber.register(configuration: reread)   // a new password must not show either
            let plan = try ReloadPlan(running: running.value, reread: reread)
            for change in plan.needsRestart {
                logger.warning("configuration change needs a restart; ignored", metadata: ["key": "\(change.key)", "running": "\(change.old)", "read": "\(change.new)"])
            }
            let new = plan.result
            // The portfolio file is re-read on every reload (its content may change under the same name).
            if !new.portfolio.file.isEmpty {
                let companies = try PortfolioFile.load(new.portfolio.file)
                try await runOnDedicatedThread("newsd-reload") { try withDatabase(new) { try PortfolioFile.store(companies, into: $0) } }
                pipeline.setPortfolio(companies)
                logger.info("portfolio reloaded", metadata: ["companies": "\(companies.count)", "file": "\(new.portfolio.file)"])
            }
            pipeline.setTeacherPolicy(new.teacher)
            if let client = worker?.teacherClient {
                client.limiter.setLimits(requestsPerMinute: new.teacher.requestsPerMinute, tokensPerMinute: new.teacher.tokensPerMinute)
                client.ledger.setDailyBudget(new.teacher.dailyBudgetUSD)
                worker?.publishGauges()
            }
            alerts?.setDetector(new.alerts.detector, companies: new.alerts.companies)
            StructuredLogHandler.level.withLock { $0 = Logger.Level(rawValue: new.log.level.rawValue) ?? .info }
            running.withLock { $0 = new }
            metrics.increment("newsd_config_reloads_total", [("result", plan.applied.isEmpty ? "unchanged" : "applied")])
            logger.notice("configuration reloaded", metadata: ["applied": "\(plan.applied.map(\.description))",
                                                              "ignored_need_restart": "\(plan.needsRestart.map(\.key))"])
        } catch {
            metrics.increment("newsd_config_reloads_total", [("result", "failed")])
            logger.error("configuration reload failed; nothing changed", metadata: ["error": "\(error)"])
        }
    }
}
