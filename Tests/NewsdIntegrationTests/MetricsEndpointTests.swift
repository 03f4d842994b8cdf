import Foundation
import NewsdOps
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The operators' endpoint survives a flood of idle connections: a bounded number is kept (the
/// idlest closed to make room), so memory stays bounded and a scrape still gets through.
@Suite("Metrics endpoint under idle-connection floods")
struct MetricsEndpointTests {
    /// Before: a thread per connection with no cap; 10,000 idle connections took 1.64 GB and
    /// running out of descriptors killed the accept thread silently.
    @Test("500 idle connections: at most 64 are kept, scraping still works, the closed ones are counted")
    func idleFloodIsBounded() throws {
        let server = try MetricsServer(listen: "127.0.0.1:0", logger: Harness.logger) { ("newsd_up 1\n", true, "ok") }
        var idle: [Int32] = []
        defer { for fd in idle { close(fd) } }
        for _ in 0..<500 {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = server.port.bigEndian
            inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr)
            let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(ok == 0)
            idle.append(s)
        }
        Thread.sleep(forTimeInterval: 0.5)
        let scrape = Harness.httpGet(port: server.port, path: "/metrics")
        #expect(scrape?.status.contains("200") == true, "\(String(describing: scrape))")
        let body = scrape?.body ?? ""
        #expect(body.contains("newsd_up 1"))
        let open = body.split(separator: "\n").first { $0.hasPrefix("newsd_http_connections_open ") }.flatMap { Int($0.split(separator: " ")[1]) }
        let refused = body.split(separator: "\n").first { $0.hasPrefix("newsd_http_connections_refused_total ") }.flatMap { Int($0.split(separator: " ")[1]) }
        #expect((open ?? 999) <= 64, "\(body)")
        #expect((refused ?? 0) >= 500 - 64, "\(body)")
    }
}
