import Foundation
import Logging
import NewsdHTTP
import NewsdSystem
import ServiceLifecycle

/// One condition of `/readyz` or `/healthz`.
public struct HealthCheck: Sendable, Equatable, Codable {
    /// `model`, `partitions`, `postgres`, `shutdown`, ...
    public var name: String
    /// Whether it holds.
    public var ok: Bool
    /// What was seen (shown either way).
    public var detail: String

    /// A check.
    public init(_ name: String, ok: Bool, _ detail: String) { self.name = name; self.ok = ok; self.detail = detail }
}

/// The body of `/healthz` and `/readyz`: the verdict and every check with its reason.
public struct HealthReport: Sendable, Equatable, Codable {
    /// `ok` or `fail`.
    public var status: String
    /// The checks, in a fixed order.
    public var checks: [HealthCheck]

    /// The report of these checks: ok when all hold.
    public init(_ checks: [HealthCheck]) {
        self.checks = checks
        status = checks.allSatisfy(\.ok) ? "ok" : "fail"
    }

    /// Whether every check holds.
    public var ok: Bool { status == "ok" }
}

/// The operators' HTTP endpoint: `GET /metrics` (Prometheus text format), `GET /healthz`
/// (alive: the process answers and its ingest loop turns) and `GET /readyz` (model loaded,
/// partitions assigned, Postgres reachable, not shutting down), each health body a small JSON
/// document with its reasons. Served by `HTTPService` (Hummingbird) with a connection cap and an
/// idle timeout; meant for a scraper on a private interface.
public final class OpsEndpoint: Service, Sendable {
    private let service: HTTPService
    private let logger: Logger
    private let listen: String

    /// What the endpoint asks the daemon on each request.
    public struct Sources: Sendable {
        /// The metrics (rendered per scrape).
        public var metrics: NewsdMetrics
        /// Called before each scrape to refresh gauges that are read, not counted (RSS, fds).
        public var beforeScrape: @Sendable () -> Void
        /// Liveness checks.
        public var liveness: @Sendable () async -> HealthReport
        /// Readiness checks.
        public var readiness: @Sendable () async -> HealthReport

        /// Sources for an endpoint.
        public init(metrics: NewsdMetrics, beforeScrape: @escaping @Sendable () -> Void = {},
                    liveness: @escaping @Sendable () async -> HealthReport, readiness: @escaping @Sendable () async -> HealthReport) {
            self.metrics = metrics; self.beforeScrape = beforeScrape; self.liveness = liveness; self.readiness = readiness
        }
    }

    /// An endpoint for `configuration` (`metrics.listen`, `metrics.max_connections`,
    /// `metrics.idle_timeout_seconds`); it binds when run.
    public init(configuration: NewsdConfiguration.Metrics, sources: Sources, logger: Logger) throws {
        let parts = configuration.listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else {
            throw ConfigurationError(key: "metrics.listen", value: "\"\(configuration.listen)\"", reason: "expected host:port")
        }
        var settings = HTTPService.Settings()
        settings.host = String(parts[0])
        settings.port = port
        settings.maxConnections = configuration.maxConnections
        settings.idleTimeoutSeconds = configuration.idleTimeoutSeconds.value
        settings.requestTimeoutSeconds = 10
        settings.maxBodyBytes = 4096
        listen = configuration.listen
        self.logger = logger
        service = HTTPService(settings: settings, logger: logger) { request in
            guard request.method == "GET" || request.method == "HEAD" else { return .text(405, "GET only\n") }
            switch request.path {
            case "/metrics":
                sources.beforeScrape()
                return HTTPServiceReply(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: sources.metrics.render())
            case "/healthz", "/health":
                return Self.reply(await sources.liveness())
            case "/readyz":
                let report = await sources.readiness()
                sources.metrics.set("newsd_ready", report.ok ? 1 : 0)
                return Self.reply(report)
            default:
                return .text(404, "try /metrics, /healthz or /readyz\n")
            }
        }
    }

    private static func reply(_ report: HealthReport) -> HTTPServiceReply {
        let body = (try? JSONText.data(report)).map { Array($0) + [10] } ?? Array("{\"status\":\"fail\"}\n".utf8)
        return HTTPServiceReply(status: report.ok ? 200 : 503, contentType: "application/json", body: body)
    }

    /// The bound port, once listening.
    public func waitUntilBound() async throws -> UInt16 { try await service.waitUntilBound() }

    /// Serves until graceful shutdown. If the address cannot be bound the daemon keeps running
    /// without the endpoint (ingest matters more than its figures), and says so at error level.
    public func run() async throws {
        do {
            try await service.run()
        } catch {
            logger.error("metrics and health endpoint not started; running without it", metadata: ["listen": "\(listen)", "error": "\(error)"])
            try? await gracefulShutdown()
        }
    }
}
