import CCurl
import Foundation
import NewsdSystem

/// The one error type of `NewsdHTTP`: libcurl's code, its message, and whether trying again can
/// help (timeouts and connection errors can; a malformed URL or a TLS verification failure cannot).
public struct HTTPError: Error, RetryClassifiable, CustomStringConvertible, Sendable {
    /// libcurl's `CURLcode` (0 when the error is ours).
    public var code: Int32
    /// What went wrong.
    public var message: String
    /// Whether a retry can succeed.
    public var isRetriable: Bool
    /// The transfer hit its connect or total timeout.
    public var isTimeout: Bool

    /// Creates an error.
    public init(code: Int32, message: String, isRetriable: Bool, isTimeout: Bool = false) {
        self.code = code; self.message = message; self.isRetriable = isRetriable; self.isTimeout = isTimeout
    }

    /// `message (curl code N)`.
    public var description: String { code == 0 ? message : "\(message) (curl code \(code))" }

    init(curl code: CURLcode, detail: String) {
        let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let timeout = code == CURLE_OPERATION_TIMEDOUT
        let retriable = timeout || [CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_SEND_ERROR, CURLE_RECV_ERROR,
                                    CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_HTTP2, CURLE_HTTP2_STREAM, CURLE_SSL_CONNECT_ERROR]
            .contains(code)
        self.init(code: Int32(code.rawValue), message: text, isRetriable: retriable, isTimeout: timeout)
    }
}

/// One HTTP request.
public struct HTTPRequest: Sendable {
    /// Absolute URL (`http://` or `https://`).
    public var url: String
    /// `GET` or `POST`.
    public var method: String
    /// Header lines `Name: value`.
    public var headers: [String]
    /// Request body (sent for POST).
    public var body: [UInt8]
    /// Seconds to establish the connection (TCP + TLS) at most.
    public var connectTimeout: Double
    /// Seconds for the whole transfer at most (a server that never answers ends here).
    public var timeout: Double

    /// A request; by default a POST with 10 s to connect and 60 s in all.
    public init(url: String, method: String = "POST", headers: [String] = [], body: [UInt8] = [],
                connectTimeout: Double = 10, timeout: Double = 60) {
        self.url = url; self.method = method; self.headers = headers; self.body = body
        self.connectTimeout = connectTimeout; self.timeout = timeout
    }
}

/// One HTTP response (any status: deciding what a 429 or 500 means is the caller's job).
public struct HTTPResponse: Sendable {
    /// Status code.
    public var status: Int
    /// Headers, names lower-cased (the last value of a repeated header wins).
    public var headers: [String: String]
    /// Body bytes.
    public var body: [UInt8]
    /// Seconds from sending to the complete response.
    public var seconds: Double
}

/// An HTTP client over libcurl's multi interface: one thread drives every transfer, many requests
/// are in flight at once (at most `maxConcurrent`, the rest wait in order), connections are kept
/// alive and reused, TLS peers and host names are verified. `send` is async and never blocks a
/// Swift concurrency thread. Owns its multi handle.
///
/// `@unchecked Sendable`: `waiting`, `active`, `stopped` and `thread` are guarded by `lock`; the
/// multi handle and the transfers' easy handles are touched only by the transfer thread, except
/// `curl_multi_wakeup`, which libcurl allows from any thread.
public final class HTTPClient: @unchecked Sendable {
    private let multi: UnsafeMutableRawPointer
    private let maxConcurrent: Int
    private let userAgent: String
    private let lock = NSLock()
    private var waiting: [Transfer] = []
    private var active: [Transfer] = []
    private var stopped = false
    private var thread: Thread?
    private let finished = DispatchSemaphore(value: 0)

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    /// A client with at most `maxConcurrent` transfers in flight.
    public init(maxConcurrent: Int, userAgent: String = "newsd") throws {
        _ = Self.globalInit
        guard let m = curl_multi_init() else { throw HTTPError(code: 0, message: "curl_multi_init failed", isRetriable: false) }
        multi = m
        self.maxConcurrent = max(1, maxConcurrent)
        self.userAgent = userAgent
        _ = newsd_curl_multi_setopt_long(m, CURLMOPT_MAX_HOST_CONNECTIONS, self.maxConcurrent)
        _ = newsd_curl_multi_setopt_long(m, CURLMOPT_MAXCONNECTS, self.maxConcurrent)
        let t = Thread { [unowned self] in loop() }
        t.name = "newsd-http"
        thread = t
        t.start()
    }

    deinit {
        shutdown()
        curl_multi_cleanup(multi)
    }

    /// Stops the transfer thread; transfers still in flight fail with a non-retriable error.
    public func shutdown() {
        lock.lock()
        if stopped { lock.unlock(); return }
        stopped = true
        lock.unlock()
        curl_multi_wakeup(multi)
        finished.wait()
    }

    /// Sends a request and returns its response; throws `HTTPError` on transport failures.
    public func send(_ request: HTTPRequest) async throws -> HTTPResponse {
        try await withCheckedThrowingContinuation { continuation in
            let transfer = Transfer(request: request, continuation: continuation)
            lock.lock()
            if stopped {
                lock.unlock()
                continuation.resume(throwing: HTTPError(code: 0, message: "HTTP client stopped", isRetriable: false))
                return
            }
            waiting.append(transfer)
            lock.unlock()
            curl_multi_wakeup(multi)
        }
    }

    /// Transfers in flight and waiting (for metrics).
    public var load: (active: Int, waiting: Int) { lock.lock(); defer { lock.unlock() }; return (active.count, waiting.count) }

    private func loop() {
        var running: Int32 = 0
        while true {
            lock.lock()
            let stop = stopped
            var starting: [Transfer] = []
            while !stop && active.count < maxConcurrent && !waiting.isEmpty {
                let t = waiting.removeFirst()
                active.append(t)
                starting.append(t)
            }
            lock.unlock()
            if stop { break }
            for t in starting {
                if let error = t.start(userAgent: userAgent) {
                    remove(t)
                    t.complete(.failure(error))
                } else {
                    curl_multi_add_handle(multi, t.easy)
                }
            }
            curl_multi_perform(multi, &running)
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
                let code = message.pointee.data.result
                var privateData: UnsafeMutableRawPointer?
                _ = newsd_curl_getinfo_pointer(easy, CURLINFO_PRIVATE, &privateData)
                curl_multi_remove_handle(multi, easy)
                guard let privateData else { continue }
                let t = Unmanaged<Transfer>.fromOpaque(privateData).takeUnretainedValue()
                remove(t)
                t.finish(code)
            }
            curl_multi_poll(multi, nil, 0, 1000, nil)
        }
        // Stopping: fail everything still here.
        lock.lock()
        let left = active + waiting
        active.removeAll(); waiting.removeAll()
        lock.unlock()
        for t in left {
            if t.started { curl_multi_remove_handle(multi, t.easy) }
            t.complete(.failure(HTTPError(code: 0, message: "HTTP client stopped", isRetriable: false)))
        }
        finished.signal()
    }

    private func remove(_ t: Transfer) {
        lock.lock()
        active.removeAll { $0 === t }
        lock.unlock()
    }
}

/// One transfer: owns its easy handle and header list; collects the response.
private final class Transfer {
    let request: HTTPRequest
    let easy: UnsafeMutableRawPointer
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var continuation: CheckedContinuation<HTTPResponse, Error>?
    var responseBody: [UInt8] = []
    var responseHeaders: [String: String] = [:]
    /// libcurl writes its error text here during the transfer (it must outlive the transfer).
    private let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    var started = false
    private var startedAt = Date()

    init(request: HTTPRequest, continuation: CheckedContinuation<HTTPResponse, Error>) {
        self.request = request
        self.continuation = continuation
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        easy = curl_easy_init()!
    }

    deinit {
        curl_easy_cleanup(easy)
        if let headerList { curl_slist_free_all(headerList) }
        errorBuffer.deallocate()
    }

    /// Configures the handle; returns an error if an option is refused.
    func start(userAgent: String) -> HTTPError? {
        started = true
        startedAt = Date()
        let me = Unmanaged.passUnretained(self).toOpaque()
        var codes: [CURLcode] = []
        codes.append(newsd_curl_setopt_string(easy, CURLOPT_URL, request.url))
        codes.append(newsd_curl_setopt_pointer(easy, CURLOPT_PRIVATE, me))
        codes.append(newsd_curl_setopt_long(easy, CURLOPT_NOSIGNAL, 1))
        codes.append(newsd_curl_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 1))
        codes.append(newsd_curl_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 2))
        codes.append(newsd_curl_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"))
        codes.append(newsd_curl_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout * 1000)))
        codes.append(newsd_curl_setopt_long(easy, CURLOPT_TIMEOUT_MS, Int(request.timeout * 1000)))
        codes.append(newsd_curl_setopt_string(easy, CURLOPT_USERAGENT, userAgent))
        codes.append(newsd_curl_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, ""))
        codes.append(newsd_curl_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer))
        codes.append(newsd_curl_setopt_callback(easy, CURLOPT_WRITEFUNCTION, transferWriteBody))
        codes.append(newsd_curl_setopt_pointer(easy, CURLOPT_WRITEDATA, me))
        codes.append(newsd_curl_setopt_callback(easy, CURLOPT_HEADERFUNCTION, transferWriteHeader))
        codes.append(newsd_curl_setopt_pointer(easy, CURLOPT_HEADERDATA, me))
        for h in request.headers { headerList = curl_slist_append(headerList, h) }
        // Without this curl sends "Expect: 100-continue" for larger bodies and waits for it.
        headerList = curl_slist_append(headerList, "Expect:")
        codes.append(newsd_curl_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList))
        if request.method == "POST" {
            codes.append(newsd_curl_setopt_long(easy, CURLOPT_POST, 1))
            codes.append(newsd_curl_setopt_size(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)))
            // COPYPOSTFIELDS: libcurl keeps its own copy, so no Swift buffer has to stay pinned.
            if request.body.isEmpty {
                codes.append(newsd_curl_setopt_string(easy, CURLOPT_COPYPOSTFIELDS, ""))
            } else {
                codes.append(request.body.withUnsafeBytes { newsd_curl_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: $0.baseAddress!)) })
            }
        } else if request.method != "GET" {
            codes.append(newsd_curl_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method))
        }
        if let bad = codes.first(where: { $0 != CURLE_OK }) { return HTTPError(curl: bad, detail: "") }
        return nil
    }

    func finish(_ code: CURLcode) {
        if code == CURLE_OK {
            var status = 0
            _ = newsd_curl_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status)
            complete(.success(HTTPResponse(status: status, headers: responseHeaders, body: responseBody,
                                           seconds: Date().timeIntervalSince(startedAt))))
        } else {
            let detail = String(cString: errorBuffer)
            complete(.failure(HTTPError(curl: code, detail: detail)))
        }
    }

    func complete(_ result: Result<HTTPResponse, Error>) {
        guard let c = continuation else { return }
        continuation = nil
        c.resume(with: result)
    }
}

/// libcurl write callback: appends the body chunk to the transfer (user data is the transfer).
private let transferWriteBody: newsd_curl_data_callback = { data, size, count, user in
    let n = size * count
    guard let data, let user else { return n }
    let t = Unmanaged<Transfer>.fromOpaque(user).takeUnretainedValue()
    data.withMemoryRebound(to: UInt8.self, capacity: n) { t.responseBody.append(contentsOf: UnsafeBufferPointer(start: $0, count: n)) }
    return n
}

/// libcurl header callback: one header line per call; a new status line (after a redirect or
/// `100 Continue`) starts the set again.
private let transferWriteHeader: newsd_curl_data_callback = { data, size, count, user in
    let n = size * count
    guard let data, let user else { return n }
    let t = Unmanaged<Transfer>.fromOpaque(user).takeUnretainedValue()
    let line = data.withMemoryRebound(to: UInt8.self, capacity: n) { String(decoding: UnsafeBufferPointer(start: $0, count: n), as: UTF8.self) }
    if line.hasPrefix("HTTP/") { t.responseHeaders.removeAll(); return n }
    if let colon = line.firstIndex(of: ":") {
        let name = line[..<colon].lowercased()
        let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
        t.responseHeaders[name] = value
    }
    return n
}
