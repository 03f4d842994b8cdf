import Foundation
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// What the teacher client needs: the `[teacher]` configuration (the one definition of every key
/// and its default, read through dynamic member lookup: `settings.samples`), the API key and the
/// prompt, and the client's own retry and breaker constants.
@dynamicMemberLookup
public struct TeacherSettings: Sendable {
    /// The `[teacher]` configuration.
    public var configuration: NewsdConfiguration.Teacher
    /// Bearer token (from `NEWSD_TEACHER_API_KEY` or the credentials file); never logged.
    public var apiKey: String?
    /// The prompt (`teacher.prompt_file`, else the built-in investor-sentiment prompt).
    public var prompt = PromptTemplate.investorSentiment
    /// Backoff between retries of one request (429, 5xx, timeouts, connection errors);
    /// `Retry-After` from the server wins when longer.
    public var retry = RetryPolicy(initialDelay: 0.5, multiplier: 2, maxDelay: 30, jitter: 0.25)
    /// Times a reply whose every sample fails to parse is asked again before its FAILs count as
    /// votes (a bad reply is a fault, not an answer).
    public var failedReplyRetries = 2
    /// Consecutive failures that open the circuit breaker.
    public var breakerThreshold = 5
    /// First cool-down of the open breaker, seconds.
    public var breakerCooldown = 5.0

    /// Settings from the `[teacher]` configuration; the API key from `NEWSD_TEACHER_API_KEY` or
    /// the credentials file (`TEACHER_API_KEY=...`) unless given.
    public init(configuration: NewsdConfiguration.Teacher, apiKey: String? = Secrets.value("TEACHER_API_KEY")) throws {
        self.configuration = configuration
        self.configuration.labels = configuration.labels.map { $0.lowercased() }
        self.apiKey = apiKey
        if !configuration.promptFile.isEmpty { prompt = try PromptTemplate(file: configuration.promptFile) }
    }

    /// The default configuration pointed at `baseURL`, with no API key (tests, tools).
    public init(baseURL: String) {
        configuration = NewsdConfiguration.Teacher()
        configuration.baseURL = baseURL
    }

    /// Reads and sets configuration keys directly: `settings.samples = 5`.
    public subscript<T>(dynamicMember key: WritableKeyPath<NewsdConfiguration.Teacher, T>) -> T {
        get { configuration[keyPath: key] }
        set { configuration[keyPath: key] = newValue }
    }

    /// The cost of a request with this usage.
    public func cost(promptTokens: Int, completionTokens: Int) -> Double {
        (Double(promptTokens) * configuration.inputPricePerMillion + Double(completionTokens) * configuration.outputPricePerMillion) / 1_000_000
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
public final class TeacherClient: Sendable {
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
    /// Whether the server honours `n` (nil: not known yet).
    private let nSupported = LockedValue<Bool?>(nil)

    /// A client; throws if the URL is unusable.
    public init(settings: TeacherSettings) throws {
        guard let url = URL(string: settings.baseURL), let scheme = url.scheme, ["http", "https"].contains(scheme.lowercased()) else {
            throw TeacherError("teacher.base_url = \"\(Redaction.url(settings.baseURL))\": expected an http:// or https:// URL")
        }
        self.settings = settings
        endpoint = settings.baseURL.hasSuffix("/") ? settings.baseURL + "chat/completions" : settings.baseURL + "/chat/completions"
        http = try HTTPClient(maxConcurrent: settings.concurrency, userAgent: "newsd-teacher")
        parser = AnswerParser(labels: settings.labels)
        limiter = RateLimiter(requestsPerMinute: settings.requestsPerMinute, tokensPerMinute: settings.tokensPerMinute)
        breaker = CircuitBreaker(threshold: settings.breakerThreshold, cooldown: settings.breakerCooldown,
                                 probeTimeout: settings.timeoutSeconds.value * 2 + settings.connectTimeoutSeconds.value)
        ledger = SpendLedger(dailyBudget: settings.dailyBudgetUSD)
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
                // A reply none of whose samples names a label (empty, truncated, prose) is a bad
                // reply, not the model's doubt: it is asked again, up to `failedReplyRetries` times,
                // before its FAILs count as votes. So a fault costs samples, never a clear answer.
                var parsed: [TeacherAnswer] = []
                for retry in 0...settings.failedReplyRetries {
                    let contents = try await samples(messages, count: n, first: answers.count + retry * n, onRequest: onRequest)
                    parsed = contents.map { parser.parse($0) }
                    if parsed.contains(where: { $0.label != nil }) { break }
                }
                answers += parsed
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
        get { nSupported.value }
        set { nSupported.withLock { $0 = newValue } }
    }

    /// One chat completion with retries; returns the choices' contents (possibly fewer than `n`).
    func complete(_ messages: [ChatMessage], n: Int, sample: Int, onRequest: @Sendable (TeacherRequestRecord) -> Void) async throws -> [String] {
        let body = ChatCompletionRequest(model: settings.model, messages: messages, temperature: settings.temperature,
                                         topP: settings.topP, maxTokens: settings.maxTokens, n: n > 1 ? n : nil)
        let payload = Array(try Self.encoder.encode(body))
        var headers = ["Content-Type: application/json", "Accept: application/json"]
        if let key = settings.apiKey, !key.isEmpty { headers.append("Authorization: Bearer \(key)") }
        let request = HTTPRequest(url: endpoint, headers: headers, body: payload, connectTimeout: settings.connectTimeoutSeconds.value, timeout: settings.timeoutSeconds.value)
        let estimate = messages.reduce(0) { $0 + $1.content.utf8.count / 4 } + n * settings.maxTokens
        var policy = settings.retry
        policy.maxAttempts = settings.maxRetries + 1
        // A spent budget ends the item at once (the worker gives it back); everything else that
        // is retriable (429, 408, 5xx, timeouts, connection errors, bad responses) is retried with
        // the shared backoff, `Retry-After` winning when longer.
        return try await retry(policy, isRetriable: { e in (e as? TeacherError).map { $0.isRetriable && $0.kind != .budgetExhausted } ?? false }) {
            if ledger.isExhausted {
                throw TeacherError("daily teacher budget of $\(ledger.dailyBudget) is spent", retriable: true, kind: .budgetExhausted)
            }
            // The rate slot first, then the breaker: once admitted (possibly as the half-open
            // probe), nothing but the request itself stands before its success or failure report.
            let reservation = try await limiter.acquire(estimatedTokens: estimate)
            try await breaker.admit()
            let startedAt = Date(), t0 = monotonicSeconds()
            var record = TeacherRequestRecord(sample: sample, samples: n, status: "ok", latency: 0, startedAt: startedAt)
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
                    if let ra = response.headers["retry-after"].flatMap(Self.retryAfterSeconds) { failure.retryAfterSeconds = ra; limiter.pause(seconds: ra) }
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
            throw failure
        }
    }

    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }()

    /// Contents and usage of a chat-completions response body; nil if it is not one.
    public static func parseCompletion(_ body: [UInt8]) -> (contents: [String], promptTokens: Int, completionTokens: Int)? {
        guard let response = try? JSONDecoder().decode(ChatCompletionResponse.self, from: Data(body)) else { return nil }
        let ordered = response.choices.enumerated().sorted { ($0.element.index ?? $0.offset) < ($1.element.index ?? $1.offset) }
        let contents = ordered.map { $0.element.message?.content ?? "" }
        return (contents, response.usage?.promptTokens ?? 0, response.usage?.completionTokens ?? 0)
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

/// The body of `POST /chat/completions` (OpenAI-compatible).
public struct ChatCompletionRequest: Codable, Sendable, Equatable {
    /// Model name.
    public var model: String
    /// The conversation.
    public var messages: [ChatMessage]
    /// Sampling temperature.
    public var temperature: Double
    /// Nucleus sampling.
    public var topP: Double
    /// Completion tokens per sample at most.
    public var maxTokens: Int
    /// Samples in one request (omitted for one).
    public var n: Int?

    enum CodingKeys: String, CodingKey { case model, messages, temperature, topP = "top_p", maxTokens = "max_tokens", n }

    /// A request.
    public init(model: String, messages: [ChatMessage], temperature: Double, topP: Double, maxTokens: Int, n: Int?) {
        self.model = model; self.messages = messages; self.temperature = temperature; self.topP = topP; self.maxTokens = maxTokens; self.n = n
    }
}

/// The parts of a chat-completions response newsd reads.
public struct ChatCompletionResponse: Codable, Sendable, Equatable {
    /// One sample.
    public struct Choice: Codable, Sendable, Equatable {
        /// Its position (servers may return them out of order).
        public var index: Int?
        /// The answer.
        public var message: Message?
        /// A choice.
        public init(index: Int?, message: Message?) { self.index = index; self.message = message }
    }
    /// An answer.
    public struct Message: Codable, Sendable, Equatable {
        /// Usually "assistant".
        public var role: String?
        /// The text.
        public var content: String?
        /// A message.
        public init(role: String?, content: String?) { self.role = role; self.content = content }
    }
    /// Tokens reported by the server.
    public struct Usage: Codable, Sendable, Equatable {
        /// Prompt tokens.
        public var promptTokens: Int?
        /// Completion tokens.
        public var completionTokens: Int?
        enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens" }
        /// Usage figures.
        public init(promptTokens: Int?, completionTokens: Int?) { self.promptTokens = promptTokens; self.completionTokens = completionTokens }
    }
    /// The samples.
    public var choices: [Choice]
    /// Token usage, when reported.
    public var usage: Usage?
    /// A response.
    public init(choices: [Choice], usage: Usage?) { self.choices = choices; self.usage = usage }
}
