import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NewsdSystem
import ServiceLifecycle

/// A request as `HTTPService` handlers see it.
public struct HTTPServiceRequest: Sendable {
    /// `GET`, `POST`, ...
    public var method: String
    /// The path without the query.
    public var path: String
    /// Header values by lower-cased name.
    public var headers: [String: String]
    /// The body (at most `HTTPService.Settings.maxBodyBytes`).
    public var body: [UInt8]

    /// A request (handlers are called with these; tests build them directly).
    public init(method: String, path: String, headers: [String: String], body: [UInt8]) {
        self.method = method; self.path = path; self.headers = headers; self.body = body
    }
}

/// A reply of an `HTTPService` handler.
public struct HTTPServiceReply: Sendable {
    /// HTTP status code.
    public var status: Int
    /// `Content-Type`.
    public var contentType: String
    /// Extra headers (name, value).
    public var headers: [(String, String)]
    /// The body.
    public var body: [UInt8]

    /// A reply.
    public init(status: Int, contentType: String = "text/plain; charset=utf-8", headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status; self.contentType = contentType; self.headers = headers; self.body = body
    }

    /// A text reply.
    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPServiceReply {
        HTTPServiceReply(status: status, contentType: contentType, body: Array(text.utf8))
    }
}

/// A small HTTP/1.1 server on Hummingbird (SwiftNIO): the operators' endpoint and the dev teacher.
/// Bounded by design: at most `maxConnections` connections are accepted at once (the rest wait in
/// the kernel's backlog), a connection idle for `idleTimeoutSeconds` is closed, a handler that
/// takes longer than `requestTimeoutSeconds` is answered 503, and bodies are capped. Its event
/// loop threads are NIO's own, off the cooperative pool. A `Service`: it stops with the group.
public final class HTTPService: Service, Sendable {
    /// Limits and address.
    public struct Settings: Sendable {
        /// IPv4 literal or `localhost`.
        public var host = "127.0.0.1"
        /// 0 picks a free port (see `boundPort`).
        public var port = 0
        /// Connections served at once.
        public var maxConnections = 16_384
        /// A connection with no request for this long is closed.
        public var idleTimeoutSeconds = 10.0
        /// A handler still running after this long is answered 503 (0 = no limit).
        public var requestTimeoutSeconds = 0.0
        /// Request bodies larger than this are refused (413).
        public var maxBodyBytes = 4 << 20
        /// Defaults.
        public init() {}
    }

    /// The handler of every request.
    public typealias Handler = @Sendable (HTTPServiceRequest) async -> HTTPServiceReply

    private let settings: Settings
    private let handler: Handler
    private let logger: Logger
    private let bound = LockedValue<Result<UInt16, HTTPError>?>(nil)
    private let waiters = LockedValue<[CheckedContinuation<UInt16, any Error>]>([])
    private let background = LockedValue<Task<Void, Never>?>(nil)
    /// The server's tasks (connections, handlers) run here, off the cooperative pool.
    private static let executor = DedicatedTaskExecutor(label: "newsd-http")

    /// A server that will listen on `settings.host:settings.port` once run.
    public init(settings: Settings, logger: Logger, handler: @escaping Handler) {
        self.settings = settings
        self.handler = handler
        var quiet = logger
        quiet.logLevel = max(logger.logLevel, .warning)   // no per-connection lines in the journal
        self.logger = quiet
    }

    /// The port once bound (nil before, or when binding failed).
    public var boundPort: UInt16? { if case let .success(p)? = bound.value { return p } else { return nil } }

    /// Serves until graceful shutdown or cancellation. A bind failure (port taken, bad address) is
    /// thrown, with the address in the message.
    public func run() async throws {
        let host = settings.host == "localhost" ? "127.0.0.1" : settings.host
        let responder = CallbackResponder<BasicRequestContext> { [handler, settings] request, _ in
            var request = request
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            let body: [UInt8]
            do {
                var buffer = try await request.collectBody(upTo: settings.maxBodyBytes)
                body = buffer.readBytes(length: buffer.readableBytes) ?? []
            } catch {
                return Self.response(.text(413, "request body over \(settings.maxBodyBytes) bytes\n"))
            }
            let incoming = HTTPServiceRequest(method: request.method.rawValue, path: request.uri.path, headers: headers, body: body)
            guard settings.requestTimeoutSeconds > 0 else { return Self.response(await handler(incoming)) }
            let reply = await withTaskGroup(of: HTTPServiceReply?.self) { group in
                group.addTask { await handler(incoming) }
                group.addTask { try? await Task.sleep(for: .seconds(settings.requestTimeoutSeconds)); return nil }
                let first = await group.next() ?? nil
                group.cancelAll()
                return first
            }
            return Self.response(reply ?? .text(503, "handler timed out\n"))
        }
        let app = Application(
            responder: responder,
            server: .http1(configuration: .init(idleTimeout: .nanoseconds(Int64(settings.idleTimeoutSeconds * 1e9)))),
            configuration: ApplicationConfiguration(address: .hostname(host, port: settings.port), serverName: nil, backlog: 1024,
                                                    availableConnectionsDelegate: MaximumAvailableConnections(settings.maxConnections, logger: logger)),
            onServerRunning: { [self] channel in resolve(.success(UInt16(channel.localAddress?.port ?? 0))) },
            logger: logger)
        do {
            try await withTaskExecutorPreference(Self.executor) { try await app.run() }
        } catch {
            let failure = HTTPError(code: 0, message: "cannot serve on \(host):\(settings.port): \(error)", isRetriable: false)
            resolve(.failure(failure))
            throw failure
        }
        resolve(.failure(HTTPError(code: 0, message: "server stopped", isRetriable: false)))
    }

    private func resolve(_ result: Result<UInt16, HTTPError>) {
        let first = bound.withLock { current -> Bool in
            guard current == nil else { return false }
            current = result
            return true
        }
        guard first else { return }
        for w in waiters.withLock({ w in defer { w.removeAll() }; return w }) { w.resume(with: result.mapError { $0 }) }
    }

    /// Waits until the server listens (returns the port) or failed to (throws).
    public func waitUntilBound() async throws -> UInt16 {
        try await withCheckedThrowingContinuation { c in
            let now = bound.withLock { current -> Result<UInt16, HTTPError>? in
                if current == nil { waiters.withLock { $0.append(c) } }
                return current
            }
            if let now { c.resume(with: now.mapError { $0 }) }
        }
    }

    /// Runs the server in the background (outside any service group: tools and tests); returns
    /// the bound port.
    public func start() async throws -> UInt16 {
        let task = Task { [self] in
            _ = try? await withGracefulShutdownHandler { try? await self.run() } onGracefulShutdown: {}
        }
        background.withLock { $0 = task }
        return try await waitUntilBound()
    }

    /// Stops a server started with `start`.
    public func stop() async {
        guard let task = background.withLock({ t in defer { t = nil }; return t }) else { return }
        task.cancel()
        await task.value
    }

    private static func response(_ reply: HTTPServiceReply) -> Response {
        var fields = HTTPFields()
        fields[.contentType] = reply.contentType
        for (name, value) in reply.headers {
            if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) }
        }
        return Response(status: .init(code: reply.status), headers: fields,
                        body: ResponseBody(byteBuffer: ByteBuffer(bytes: reply.body)))
    }
}
