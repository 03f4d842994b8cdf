import Foundation
import NewsdHTTP

/// Everything the teacher client needs; `NewsdService` builds it from the `[teacher]` configuration.
public struct TeacherSettings: Sendable {
    /// Base URL of an OpenAI-compatible API; requests go to `{baseURL}/chat/completions`.
    public var baseURL: String
    /// Model name sent with each request.
    public var model = "teacher"
    /// Bearer token (from `NEWSD_TEACHER_API_KEY` or the credentials file); never logged.
    public var apiKey: String?
    /// Allowed labels, lower-case.
    public var labels = ["negative", "neutral", "positive"]
    /// The prompt.
    public var prompt = PromptTemplate.investorSentiment
    /// Samples per item (k).
    public var samples = 3
    /// Extra samples at most when the first k have no majority (m).
    public var extraSamples = 2
    /// Sampling temperature.
    public var temperature = 0.8
    /// Nucleus sampling.
    public var topP = 0.9
    /// Completion tokens per sample at most.
    public var maxTokens = 256
    /// Ask for several samples in one request (`n`); falls back to one request per sample when the
    /// server returns fewer choices than asked.
    public var useN = true
    /// Requests in flight at most.
    public var concurrency = 16
    /// Requests per minute (0 = unlimited).
    public var requestsPerMinute = 600
    /// Tokens per minute (0 = unlimited).
    public var tokensPerMinute = 0
    /// Seconds to connect at most.
    public var connectTimeout = 10.0
    /// Seconds per request at most.
    public var timeout = 60.0
    /// Retries per request after the first attempt.
    public var maxRetries = 6
    /// First backoff in seconds (doubles per retry, with jitter, up to `maxBackoff`).
    public var backoff = 0.5
    /// Largest backoff in seconds.
    public var maxBackoff = 30.0
    /// US dollars per million prompt tokens.
    public var inputPricePerMillion = 0.0
    /// US dollars per million completion tokens.
    public var outputPricePerMillion = 0.0
    /// US dollars per UTC day (0 = unlimited).
    public var dailyBudget = 0.0
    /// Consecutive failures that open the circuit breaker.
    public var breakerThreshold = 5
    /// First cool-down of the open breaker, seconds.
    public var breakerCooldown = 5.0

    /// Settings for a server at `baseURL`.
    public init(baseURL: String) { self.baseURL = baseURL }

    /// The cost of a request with this usage.
    public func cost(promptTokens: Int, completionTokens: Int) -> Double {
        (Double(promptTokens) * inputPricePerMillion + Double(completionTokens) * outputPricePerMillion) / 1_000_000
    }
}

/// One HTTP request to the teacher, as recorded for spend and audit.
public struct TeacherRequestRecord: Sendable {
    /// Index of the first sample this request was for (0-based).
    public var sample: Int
    /// Samples asked for (`n`).
    public var samples: Int
    /// `ok`, `http_429`, `http_500`, ..., `timeout`, `connection`, `bad_response`.
    public var status: String
    /// HTTP status when there was a response.
    public var httpStatus: Int?
    /// Tokens the server reported.
    public var promptTokens = 0, completionTokens = 0
    /// Cost in US dollars from the reported usage and the configured prices.
    public var cost = 0.0
    /// Seconds from start to the end of the attempt.
    public var latency: Double
    /// When it started (wall clock).
    public var startedAt: Date
    /// What went wrong, if anything (never contains the API key).
    public var error: String?
}

/// The teacher's verdict on one text.
public struct TeacherLabel: Sendable {
    /// `labelled` or `ambiguous`.
    public var status: String
    /// The majority label; nil when ambiguous.
    public var label: String?
    /// Vote shares over the labels (the soft label; FAILs excluded).
    public var distribution: [String: Double]
    /// Every sample's answer, in order.
    public var answers: [TeacherAnswer]

    /// The label per sample (`FAIL` for none).
    public var votes: [String] { answers.map { $0.label ?? "FAIL" } }
    /// The reason per sample (the parse failure for FAILs).
    public var reasons: [String] {
        answers.map { a in
            switch a {
            case let .label(_, reason, _): return reason ?? ""
            case let .fail(why): return "FAIL: " + why
            }
        }
    }
}

/// The contents of one request of a group of concurrent requests.
struct SampleBatch: Sendable {
    var index: Int
    var contents: [String]
}

/// An OpenAI-compatible chat-completions client for labelling: k samples per text (in one request
/// with `n` where the server supports it), parsed strictly-then-tolerantly, majority vote with up
/// to m extra samples; retries with exponential backoff and jitter on 429, 5xx, timeouts and
/// connection errors, honouring Retry-After; a circuit breaker; requests- and tokens-per-minute
/// limits; a daily spend budget. Every HTTP attempt is reported to `onRequest`.
public final class TeacherClient: @unchecked Sendable {
    /// The settings.
    public let settings: TeacherSettings
    /// The rate limits.
    public let limiter: RateLimiter
    /// The breaker.
    public let breaker: CircuitBreaker
    /// Today's spend.
    public let ledger: SpendLedger
    private let http: HTTPClient
    private let parser: AnswerParser
    private let endpoint: String
    private let supportsN = NSLock()
    private var nSupported: Bool?

    /// A client; throws if the URL is unusable.
    public init(settings: TeacherSettings) throws {
        guard let url = URL(string: settings.baseURL), let scheme = url.scheme, ["http", "https"].contains(scheme.lowercased()) else {
            throw TeacherError("teacher.base_url = \"\(settings.baseURL)\": expected an http:// or https:// URL")
        }
        self.settings = settings
        endpoint = settings.baseURL.hasSuffix("/") ? settings.baseURL + "chat/completions" : settings.baseURL + "/chat/completions"
        http = try HTTPClient(maxConcurrent: settings.concurrency, userAgent: "newsd-teacher")
        parser = AnswerParser(labels: settings.labels)
        limiter = RateLimiter(requestsPerMinute: settings.requestsPerMinute, tokensPerMinute: settings.tokensPerMinute)
        breaker = CircuitBreaker(threshold: settings.breakerThreshold, cooldown: settings.breakerCooldown,
                                 probeTimeout: settings.timeout * 2 + settings.connectTimeout)
        ledger = SpendLedger(dailyBudget: settings.dailyBudget)
    }

    /// Stops the HTTP thread.
    public func shutdown() { http.shutdown() }

    /// Labels one text: k samples, majority vote, extra samples on ties and FAILs. Throws when a
    /// request could not be answered after every retry (retriable: try the item later) or the
    /// budget is spent.
    public func label(_ text: String, onRequest: @escaping @Sendable (TeacherRequestRecord) -> Void = { _ in }) async throws -> TeacherLabel {
        let messages = settings.prompt.render(text: text, labels: settings.labels)
        var answers: [TeacherAnswer] = []
        while true {
            switch SelfConsistency.decide(answers, k: settings.samples, extra: settings.extraSamples) {
            case let .askMore(n):
                let contents = try await samples(messages, count: n, first: answers.count, onRequest: onRequest)
                answers += contents.map { parser.parse($0) }
            case let .labelled(label, distribution):
                return TeacherLabel(status: "labelled", label: label, distribution: distribution, answers: answers)
            case let .ambiguous(distribution):
                return TeacherLabel(status: "ambiguous", label: nil, distribution: distribution, answers: answers)
            }
        }
    }

    /// `count` sample contents: one request with `n` when the server supports it, else one request
    /// per sample, concurrently.
    func samples(_ messages: [ChatMessage], count: Int, first: Int, onRequest: @escaping @Sendable (TeacherRequestRecord) -> Void) async throws -> [String] {
        var contents: [String] = []
        if count > 1 && settings.useN && nSupportedValue != false {
            contents = try await complete(messages, n: count, sample: first, onRequest: onRequest)
            if contents.count >= count { nSupportedValue = true; return Array(contents.prefix(count)) }
            nSupportedValue = false
        }
        let have = contents.count
        let rest = try await withThrowingTaskGroup(of: SampleBatch.self) { group in
            for i in have..<count {
                group.addTask { SampleBatch(index: i, contents: try await self.complete(messages, n: 1, sample: first + i, onRequest: onRequest)) }
            }
            var out: [SampleBatch] = []
            for try await r in group { out.append(r) }
            return out.sorted { $0.index < $1.index }.flatMap { $0.contents.prefix(1) }
        }
        return contents + rest
    }

    private var nSupportedValue: Bool? {
        get { supportsN.lock(); defer { supportsN.unlock() }; return nSupported }
        set { supportsN.lock(); nSupported = newValue; supportsN.unlock() }
    }

    /// One chat completion with retries; returns the choices' contents (possibly fewer than `n`).
    func complete(_ messages: [ChatMessage], n: Int, sample: Int, onRequest: @Sendable (TeacherRequestRecord) -> Void) async throws -> [String] {
        var body: [String: Any] = [
            "model": settings.model, "messages": messages.map { ["role": $0.role, "content": $0.content] },
            "temperature": settings.temperature, "top_p": settings.topP, "max_tokens": settings.maxTokens,
        ]
        if n > 1 { body["n"] = n }
        let payload = Array(try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]))
        var headers = ["Content-Type: application/json", "Accept: application/json"]
        if let key = settings.apiKey, !key.isEmpty { headers.append("Authorization: Bearer \(key)") }
        let request = HTTPRequest(url: endpoint, headers: headers, body: payload, connectTimeout: settings.connectTimeout, timeout: settings.timeout)
        let estimate = messages.reduce(0) { $0 + $1.content.utf8.count / 4 } + n * settings.maxTokens
        var attempt = 0
        while true {
            if ledger.isExhausted {
                throw TeacherError("daily teacher budget of $\(settings.dailyBudget) is spent", retriable: true, kind: .budgetExhausted)
            }
            // The rate slot first, then the breaker: once admitted (possibly as the half-open
            // probe), nothing but the request itself stands before its success or failure report.
            let reservation = try await limiter.acquire(estimatedTokens: estimate)
            try await breaker.admit()
            let startedAt = Date(), t0 = monotonicSeconds()
            var record = TeacherRequestRecord(sample: sample, samples: n, status: "ok", latency: 0, startedAt: startedAt)
            var retryAfter: Double?
            var failure: TeacherError
            do {
                let response = try await http.send(request)
                record.latency = monotonicSeconds() - t0
                record.httpStatus = response.status
                if response.status == 200 {
                    if let parsed = Self.parseCompletion(response.body) {
                        record.promptTokens = parsed.promptTokens
                        record.completionTokens = parsed.completionTokens
                        record.cost = settings.cost(promptTokens: parsed.promptTokens, completionTokens: parsed.completionTokens)
                        ledger.add(record.cost)
                        limiter.correct(reservation, actualTokens: parsed.promptTokens + parsed.completionTokens)
                        breaker.success()
                        onRequest(record)
                        return parsed.contents
                    }
                    record.status = "bad_response"
                    failure = TeacherError("the teacher's response is not a chat completion", retriable: true, kind: .badResponse)
                    breaker.failure()
                } else {
                    record.status = "http_\(response.status)"
                    let detail = String(decoding: response.body.prefix(300), as: UTF8.self)
                    let retriable = response.status == 429 || response.status == 408 || response.status >= 500
                    failure = TeacherError("teacher answered HTTP \(response.status): \(detail)", retriable: retriable, kind: .http(response.status))
                    if let ra = response.headers["retry-after"].flatMap(Self.retryAfterSeconds) { retryAfter = ra; limiter.pause(seconds: ra) }
                    if response.status >= 500 { breaker.failure() } else { breaker.success() }
                }
            } catch let e as HTTPError {
                record.latency = monotonicSeconds() - t0
                record.status = e.isTimeout ? "timeout" : "connection"
                failure = TeacherError("teacher request failed: \(e)", retriable: e.isRetriable, kind: .transport)
                breaker.failure()
            }
            record.error = failure.description
            onRequest(record)
            attempt += 1
            guard failure.isRetriable, attempt <= settings.maxRetries else { throw failure }
            let delay = min(settings.backoff * pow(2, Double(attempt - 1)), settings.maxBackoff) * Double.random(in: 0.5...1.0)
            try await Task.sleep(nanoseconds: UInt64(max(delay, retryAfter ?? 0) * 1e9))
        }
    }

    /// Contents and usage of a chat-completions response body; nil if it is not one.
    static func parseCompletion(_ body: [UInt8]) -> (contents: [String], promptTokens: Int, completionTokens: Int)? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
              let choices = object["choices"] as? [[String: Any]] else { return nil }
        let ordered = choices.enumerated().sorted { ($0.element["index"] as? Int ?? $0.offset) < ($1.element["index"] as? Int ?? $1.offset) }
        let contents = ordered.map { (($0.element["message"] as? [String: Any])?["content"] as? String) ?? "" }
        let usage = object["usage"] as? [String: Any]
        return (contents, usage?["prompt_tokens"] as? Int ?? 0, usage?["completion_tokens"] as? Int ?? 0)
    }

    /// Retry-After as seconds (delta-seconds or an HTTP date).
    static func retryAfterSeconds(_ value: String) -> Double? {
        if let s = Double(value.trimmingCharacters(in: .whitespaces)) { return max(0, min(s, 300)) }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f.date(from: value).map { max(0, min($0.timeIntervalSinceNow, 300)) }
    }
}
