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
        do {
            server = try HTTPServer(host: host, port: p, idleTimeout: 5) { request in
                let close = "Connection: close"
                func text(_ status: Int, _ type: String, _ body: String) -> ServerReply {
                    .respond(status: status, headers: ["Content-Type: \(type)", close], body: Array(body.utf8))
                }
                switch (request.method, request.path) {
                case ("GET", "/metrics"): return text(200, "text/plain; version=0.0.4", render().metrics)
                case ("GET", "/health"), ("GET", "/healthz"):
                    let r = render()
                    return text(r.healthy ? 200 : 503, "text/plain", r.health + "\n")
                default: return text(404, "text/plain", "try /metrics or /health\n")
                }
            }
        } catch let e as HTTPError {
            throw ConfigurationError("metrics.listen = \(listen): \(e.message)")
        }
    }

    /// Serves until graceful shutdown or cancellation, then stops accepting.
    public func run() async throws {
        try? await gracefulShutdown()
        server.stop()
    }
}
