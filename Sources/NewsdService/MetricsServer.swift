import Foundation
import Logging
import NewsdHTTP
#if canImport(Glibc)
import Glibc
#endif

/// The operators' endpoint: `GET /metrics` (Prometheus text format) and `GET /health` (200 while
/// consuming and Postgres answers, 503 otherwise), served by `HTTPServer` on its own threads. It is
/// meant for a scraper on a private interface, not for the internet.
public final class MetricsServer: @unchecked Sendable {
    private let server: HTTPServer
    /// The bound port (useful when asked for port 0).
    public var port: UInt16 { server.port }

    /// Binds `host:port` (IPv4 literal or `localhost`); throws with the reason if it cannot.
    public init(listen: String, logger: Logger, render: @escaping @Sendable () -> (metrics: String, healthy: Bool, health: String)) throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let p = UInt16(parts[1]) else { throw ServiceError("metrics.listen = \(listen): expected host:port") }
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
            throw ServiceError("metrics.listen = \(listen): \(e.message)")
        }
    }
}

/// Errors of `NewsdService` start-up: what is wrong, never retriable by waiting.
public struct ServiceError: Error, CustomStringConvertible {
    /// The message.
    public var description: String
    /// Always false.
    public var isRetriable: Bool { false }
    init(_ description: String) { self.description = description }
}

extension IngestPipeline {
    /// The pipeline's figures in Prometheus text format.
    public func prometheusText() -> String {
        let s = statistics
        let model = activeModel
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(String, Double)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for (labels, v) in samples { out += "\(name)\(labels) \(v)\n" }
        }
        metric("newsd_messages_consumed_total", "counter", "Kafka messages consumed.", [("", Double(s.consumed))])
        metric("newsd_items_stored_total", "counter", "News items stored with a prediction.", [("", Double(s.stored))])
        metric("newsd_messages_rejected_total", "counter", "Messages stored in rejected_messages.", [("", Double(s.rejected))])
        metric("newsd_batches_total", "counter", "Micro-batches written.", [("", Double(s.batches))])
        metric("newsd_database_failures_total", "counter", "Postgres failures (each retried).", [("", Double(s.databaseFailures))])
        metric("newsd_stage_seconds_total", "counter", "Seconds spent per ingest stage.",
               [("{stage=\"poll\"}", s.pollSeconds), ("{stage=\"parse\"}", s.parseSeconds),
                ("{stage=\"classify\"}", s.classifySeconds), ("{stage=\"write\"}", s.writeSeconds)])
        metric("newsd_batch_latency_seconds", "summary", "Batch latency from first message to commit (last 10,000 batches).",
               [("{quantile=\"0.5\"}", s.latencyMilliseconds(0.5) / 1000), ("{quantile=\"0.99\"}", s.latencyMilliseconds(0.99) / 1000)])
        metric("newsd_model_info", "gauge", "The student model serving.", [("{version=\"\(model.version)\"}", 1)])
        metric("newsd_model_swaps_total", "counter", "Models swapped in while running.", [("", Double(s.modelSwaps))])
        metric("newsd_model_swap_failures_total", "counter", "Promoted models refused by this host (corrupt or unloadable); it kept its model.", [("", Double(s.modelSwapFailures))])
        metric("newsd_teacher_items_queued_total", "counter", "Items this host put on the teacher queue.", [("", Double(s.queuedForTeacher))])
        metric("newsd_kafka_up", "gauge", "1 unless librdkafka reports the brokers unreachable.", [("", health.kafkaUp ? 1 : 0)])
        metric("newsd_postgres_up", "gauge", "1 unless the last Postgres attempt failed.", [("", health.postgresUp ? 1 : 0)])
        metric("newsd_assigned_partitions", "gauge", "Partitions assigned to this host.", [("", Double(health.assignedPartitions))])
        return out
    }

    /// Health for `/health`: consuming (subscribed, brokers reachable) and Postgres answering.
    public func healthReport() -> (healthy: Bool, text: String) {
        let h = health
        let healthy = h.running && h.kafkaUp && h.postgresUp
        return (healthy, "running=\(h.running) kafka_up=\(h.kafkaUp) postgres_up=\(h.postgresUp) partitions=\(h.assignedPartitions) model=\(activeModel.version)")
    }
}
