import Foundation
import NewsdSystem
#if canImport(Glibc)
import Glibc
#endif

/// A request as the server read it.
public struct ServerRequest: Sendable {
    /// `GET`, `POST`, ...
    public var method: String
    /// Path with query.
    public var path: String
    /// Headers, names lower-cased.
    public var headers: [String: String]
    /// Body (by `Content-Length`).
    public var body: [UInt8]
    /// A request (the server builds these; tests call handlers directly).
    public init(method: String, path: String, headers: [String: String], body: [UInt8]) {
        self.method = method; self.path = path; self.headers = headers; self.body = body
    }
}

/// What the handler answers.
public enum ServerReply: Sendable {
    /// A response: status, extra header lines, body (JSON unless a Content-Type header says otherwise).
    case respond(status: Int, headers: [String], body: [UInt8])
    /// Never answer (a hung upstream, for fault injection): the connection stays open, silent,
    /// until the client gives up and closes it.
    case hang
}

/// A small HTTP/1.1 server for development stand-ins (the dev teacher): one thread per connection,
/// keep-alive, `Content-Length` bodies only. It is for loopback tests and demos, not the internet.
/// Owns its listening socket.
public final class HTTPServer: Sendable {
    private let fd: Int32
    private let handler: @Sendable (ServerRequest) -> ServerReply
    /// The bound port (useful when asked for port 0).
    public let port: UInt16

    /// Binds `host:port` (IPv4) and starts accepting; the error names the address and the reason.
    private let idleTimeout: Int
    /// Requests larger than this are refused (connection closed).
    static let maxRequestBytes = 1 << 20

    /// Connections served at once at most (a thread per connection must not let idle clients
    /// exhaust memory or file descriptors). At the cap, the connection idle longest is closed to
    /// make room, so a flood of idle connections cannot lock a scraper out.
    public let maxConnections: Int
    private struct Connections: Sendable {
        /// Open connections: descriptor -> monotonic time of its last request.
        var lastActive: [Int32: Double] = [:]
        /// Connections closed to make room, or not accepted for lack of descriptors.
        var refused = 0
    }
    private let connections = LockedValue(Connections())

    /// Connections open now, and closed to make room or refused so far.
    public var connectionCounts: (open: Int, refused: Int) { connections.withLock { ($0.lastActive.count, $0.refused) } }

    /// `idleTimeout`: seconds a connection may stay silent before it is closed; `maxConnections`:
    /// connections served at once at most.
    public init(host: String = "127.0.0.1", port: UInt16, idleTimeout: Int = 120, maxConnections: Int = 256,
                handler: @escaping @Sendable (ServerRequest) -> ServerReply) throws {
        self.idleTimeout = idleTimeout
        self.maxConnections = max(1, maxConnections)
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw HTTPError(code: 0, message: "socket: \(String(cString: strerror(errno)))", isRetriable: false) }
        var yes: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            close(s); throw HTTPError(code: 0, message: "\(host) is not an IPv4 address", isRetriable: false)
        }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(s, 128) == 0 else {
            let reason = String(cString: strerror(errno))
            close(s)
            throw HTTPError(code: 0, message: "cannot listen on \(host):\(port): \(reason)", isRetriable: false)
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) } }
        self.port = UInt16(bigEndian: actual.sin_port)
        fd = s
        self.handler = handler
        let t = Thread { [self] in acceptLoop() }
        t.name = "newsd-http-accept"
        t.start()
    }

    private let stopped = StopFlag()

    deinit { close(fd) }

    /// Stops accepting (connections being served finish on their own). Idempotent.
    public func stop() {
        guard !stopped.isSet else { return }
        stopped.set()
        shutdown(fd, Int32(SHUT_RDWR))
    }

    private func acceptLoop() {
        while !stopped.isSet {
            let client = accept(fd, nil, nil)
            if client < 0 {
                if stopped.isSet { return }
                switch errno {
                case EINTR, ECONNABORTED: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory: never let the accept thread die; wait for
                    // connections to close (the client waits in the listen backlog meanwhile).
                    connections.withLock { $0.refused += 1 }
                    Thread.sleep(forTimeInterval: 0.1)
                    continue
                default: return
                }
            }
            let cap = maxConnections
            connections.withLock { c in
                if c.lastActive.count >= cap, let idlest = c.lastActive.min(by: { $0.value < $1.value })?.key {
                    // Its thread sees end-of-file and closes it (after removing it from this table,
                    // so the descriptor number is never reused while listed here).
                    shutdown(idlest, Int32(SHUT_RDWR))
                    c.lastActive[idlest] = .infinity
                    c.refused += 1
                }
                c.lastActive[client] = monotonicSeconds()
            }
            var one: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            var timeout = timeval(tv_sec: idleTimeout, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let t = Thread { [self] in
                serve(client)
                connections.withLock { _ = $0.lastActive.removeValue(forKey: client) }
                close(client)
            }
            t.name = "newsd-http-conn"
            t.stackSize = 256 << 10
            t.start()
        }
    }

    private func serve(_ client: Int32) {
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            // Read one request: headers to the blank line, then Content-Length bytes.
            var headerEnd: Int?
            var scanned = 0   // bytes already searched for the blank line: each read scans only what is new
            while headerEnd == nil {
                if let r = Self.find(buffer, [13, 10, 13, 10], from: max(0, scanned - 3)) { headerEnd = r; break }
                scanned = buffer.count
                let n = read(client, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[0..<n])
                if buffer.count > Self.maxHeaderBytes && Self.find(buffer, [13, 10, 13, 10], from: max(0, scanned - 3)) == nil { return }
            }
            let head = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
            var lines = head.components(separatedBy: "\r\n")
            let requestLine = lines.removeFirst().split(separator: " ")
            guard requestLine.count >= 2 else { return }
            var headers: [String: String] = [:]
            for l in lines {
                guard let c = l.firstIndex(of: ":") else { continue }
                headers[l[..<c].lowercased()] = l[l.index(after: c)...].trimmingCharacters(in: .whitespaces)
            }
            guard let length = Int(headers["content-length"] ?? "0"), (0...Self.maxRequestBytes).contains(length) else { return }
            let bodyStart = headerEnd! + 4
            while buffer.count < bodyStart + length {
                let n = read(client, &chunk, chunk.count)
                if n <= 0 { return }
                buffer.append(contentsOf: chunk[0..<n])
            }
            let request = ServerRequest(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers,
                                        body: Array(buffer[bodyStart..<(bodyStart + length)]))
            connections.withLock { if $0.lastActive[client] != .infinity { $0.lastActive[client] = monotonicSeconds() } }
            buffer.removeFirst(bodyStart + length)
            switch handler(request) {
            case .hang:
                // Stay silent until the client closes the connection.
                while read(client, &chunk, chunk.count) > 0 {}
                return
            case let .respond(status, extra, body):
                var text = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Length: \(body.count)\r\n"
                if !extra.contains(where: { $0.lowercased().hasPrefix("content-type:") }) { text += "Content-Type: application/json\r\n" }
                for h in extra { text += h + "\r\n" }
                text += "\r\n"
                let bytes = Array(text.utf8) + body
                var sent = 0
                while sent < bytes.count {
                    // MSG_NOSIGNAL: a client gone mid-write must not SIGPIPE the process.
                    let n = bytes[sent...].withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if n <= 0 { return }
                    sent += n
                }
                if headers["connection"]?.lowercased() == "close" || extra.contains(where: { $0.lowercased() == "connection: close" }) { return }
            }
        }
    }

    /// Headers larger than this are refused (connection closed).
    static let maxHeaderBytes = 64 << 10

    static func find(_ haystack: [UInt8], _ needle: [UInt8], from start: Int = 0) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        for i in start...(haystack.count - needle.count) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 400: return "Bad Request"
        case 401: return "Unauthorized"
        case 404: return "Not Found"
        case 429: return "Too Many Requests"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }
}
