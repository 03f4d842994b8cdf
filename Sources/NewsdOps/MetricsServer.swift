import Foundation
import Logging
import NewsdHTTP
import NewsdPostgres
import NewsdSystem
import ServiceLifecycle

/// The operators' endpoint: `GET /metrics` (Prometheus text format) and `GET /health` (200 while
/// consuming and Postgres answers, 503 otherwise), served by `HTTPServer` on its own threads. It is
/// meant for a scraper on a private interface, not for the internet.
public final class MetricsServer: Service, Sendable {
    private let server: HTTPServer
    /// The bound port (useful when asked for port 0).
    public var port: UInt16 { server.port }

    /// Binds `host:port` (IPv4 literal or `localhost`); throws with the reason if it cannot.
    public init(listen: String, logger: Logger, render: @escaping @Sendable () -> (metrics: String, healthy: Bool, health: String)) throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let p = UInt16(parts[1]) else { throw ConfigurationError("metrics.listen = \(listen): expected host:port") }
        let host = parts[0] == "localhost" ? "127.0.0.1" : String(parts[0])
        // The handler reports the server's own connection counts; it is built before the server.
        let serverBox = LockedValue<HTTPServer?>(nil)
        do {
            server = try HTTPServer(host: host, port: p, idleTimeout: 5, maxConnections: 64) { request in
                let close = "Connection: close"
                func text(_ status: Int, _ type: String, _ body: String) -> ServerReply {
                    .respond(status: status, headers: ["Content-Type: \(type)", close], body: Array(body.utf8))
                }
                switch (request.method, request.path) {
                case ("GET", "/metrics"):
                    var body = render().metrics
                    if let c = serverBox.value?.connectionCounts {
                        body += "# HELP newsd_http_connections_open Connections open to this endpoint.\n# TYPE newsd_http_connections_open gauge\nnewsd_http_connections_open \(c.open)\n"
                        body += "# HELP newsd_http_connections_refused_total Connections refused (over the cap of 64, or out of file descriptors).\n# TYPE newsd_http_connections_refused_total counter\nnewsd_http_connections_refused_total \(c.refused)\n"
                    }
                    return text(200, "text/plain; version=0.0.4", body)
                case ("GET", "/health"), ("GET", "/healthz"):
                    let r = render()
                    return text(r.healthy ? 200 : 503, "text/plain", r.health + "\n")
                default: return text(404, "text/plain", "try /metrics or /health\n")
                }
            }
        } catch let e as HTTPError {
            throw ConfigurationError("metrics.listen = \(listen): \(e.message)")
        }
        serverBox.withLock { $0 = server }
    }

    /// Serves until graceful shutdown or cancellation, then stops accepting.
    public func run() async throws {
        try? await gracefulShutdown()
        server.stop()
    }
}
