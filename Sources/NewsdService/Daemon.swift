import Foundation
import Logging
import NewsdCore
import NewsdModel
import NewsdPostgres
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The ingest path as a `Service`: runs the blocking `IngestPipeline` on a dedicated thread and
/// stops it on graceful shutdown (SIGTERM/SIGINT through the `ServiceGroup`).
public final class IngestService: Service, @unchecked Sendable {
    /// The pipeline it runs.
    public let pipeline: IngestPipeline
    private let logger: Logger

    /// Wraps a pipeline.
    public init(pipeline: IngestPipeline, logger: Logger) {
        self.pipeline = pipeline
        self.logger = logger
    }

    /// Runs until the pipeline ends; graceful shutdown asks it to finish its batch and stop.
    public func run() async throws {
        let pipeline = self.pipeline
        try await withGracefulShutdownHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, Error>) in
                let thread = Thread {
                    do { try pipeline.run(); continuation.resume() } catch { continuation.resume(throwing: error) }
                }
                thread.name = "newsd-ingest"
                thread.stackSize = 8 << 20
                thread.start()
            }
        } onGracefulShutdown: { [logger] in
            logger.info("shutdown requested: finishing the batch in flight")
            SystemdNotifier.notify("STOPPING=1")
            pipeline.requestStop()
        }
    }
}

/// systemd's notification protocol (`Type=notify`): datagrams to `$NOTIFY_SOCKET`.
public enum SystemdNotifier {
    /// Sends a state string such as `READY=1`, `STOPPING=1` or `STATUS=...`; does nothing when
    /// not started by systemd.
    public static func notify(_ state: String) {
        guard var path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        if path.hasPrefix("@") { path = "\0" + path.dropFirst() }   // abstract namespace
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in raw.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
        _ = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                state.withCString { sendto(fd, $0, strlen($0), 0, sa, length) }
            }
        }
    }
}

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
            if !companies.isEmpty { try Schema.loadPortfolio(companies, into: db) }
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

    /// Runs `body` with a fresh connection, retrying the connection for up to a minute at start-up.
    public static func withDatabase<T>(_ config: NewsdConfiguration, _ body: (PostgresConnection) throws -> T) throws -> T {
        var delay = 0.2
        let deadline = Date().addingTimeInterval(60)
        while true {
            do { return try body(try PostgresConnection(config.postgres.url)) } catch let e as PostgresError where e.isRetriable && Date() < deadline {
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 5)
            }
        }
    }
}
