import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 endpoint for operators: `GET /metrics` (Prometheus text format) and
/// `GET /health` (200 while consuming and Postgres answers, 503 otherwise). It serves one short
/// request at a time on its own thread; it is meant for a scraper on a private interface, not
/// for the internet. Owns its listening socket.
public final class MetricsServer: @unchecked Sendable {
    private let fd: Int32
    private let render: @Sendable () -> (metrics: String, healthy: Bool, health: String)
    private let logger: Logger
    /// The bound port (useful when asked for port 0).
    public let port: UInt16

    /// Binds `host:port` (IPv4 literal or `localhost`); throws with the reason if it cannot.
    public init(listen: String, logger: Logger, render: @escaping @Sendable () -> (metrics: String, healthy: Bool, health: String)) throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let p = UInt16(parts[1]) else { throw ServiceError("metrics.listen = \(listen): expected host:port") }
        let host = parts[0] == "localhost" ? "127.0.0.1" : String(parts[0])
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw ServiceError("metrics: socket: \(String(cString: strerror(errno)))") }
        var yes: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = p.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { close(s); throw ServiceError("metrics.listen = \(listen): \(host) is not an IPv4 address") }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, Glibc.listen(s, 16) == 0 else {
            let reason = String(cString: strerror(errno))
            close(s)
            throw ServiceError("metrics.listen = \(listen): \(reason)")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) } }
        port = UInt16(bigEndian: actual.sin_port)
        fd = s
        self.render = render
        self.logger = logger
        let thread = Thread { [self] in serve() }
        thread.name = "newsd-metrics"
        thread.start()
    }

    deinit { close(fd) }

    private func serve() {
        while true {
            let client = accept(fd, nil, nil)
            if client < 0 { if errno == EINTR { continue }; return }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = read(client, &buffer, buffer.count)
            let request = n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
            let path = request.split(separator: " ").dropFirst().first.map(String.init) ?? ""
            let (status, type, body): (String, String, String)
            switch (request.hasPrefix("GET "), path) {
            case (true, "/metrics"):
                status = "200 OK"; type = "text/plain; version=0.0.4"; body = render().metrics
            case (true, "/health"), (true, "/healthz"):
                let r = render()
                status = r.healthy ? "200 OK" : "503 Service Unavailable"; type = "text/plain"; body = r.health + "\n"
            default:
                status = "404 Not Found"; type = "text/plain"; body = "try /metrics or /health\n"
            }
            let response = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
            _ = response.withCString { send(client, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            close(client)
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
