import Foundation
import Logging
import NewsdHTTP
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdSystem
import NewsdTeacher

/// Recorded teacher answers: for each text, the samples a real LLM gave (label and reason).
/// Read from a CSV with `text` and either per-sample columns `sc_iter1..k` (with optional
/// `reason_iter1..k`) or one `label` column (optional `reason`).
public struct AnswerBook: Sendable {
    /// One recorded sample.
    public struct Sample: Sendable, Equatable {
        /// What the model answered as its label (possibly not a valid label: replayed as is).
        public var label: String
        /// Its reason.
        public var reason: String
    }
    /// Texts in file order.
    public let texts: [String]
    /// Samples per text, same order.
    public let samples: [[Sample]]
    private let index: [String: Int]

    /// Reads the CSV table; the error names the missing column.
    public init(table: CSVTable, source: String = "answers") throws {
        let textColumn = try table.column("text")
        let sampleColumns = table.header.enumerated().compactMap { i, name -> (Int, Int)? in
            guard name.hasPrefix("sc_iter"), let k = Int(name.dropFirst("sc_iter".count)) else { return nil }
            return (k, i)
        }.sorted { $0.0 < $1.0 }
        let reasonColumn = Dictionary(uniqueKeysWithValues: table.header.enumerated().compactMap { i, name -> (Int, Int)? in
            guard name.hasPrefix("reason_iter"), let k = Int(name.dropFirst("reason_iter".count)) else { return nil }
            return (k, i)
        })
        var texts: [String] = [], samples: [[Sample]] = [], index: [String: Int] = [:]
        if !sampleColumns.isEmpty {
            for row in table.rows {
                texts.append(row[textColumn])
                samples.append(sampleColumns.map { k, i in Sample(label: row[i], reason: reasonColumn[k].map { row[$0] } ?? "") })
            }
        } else if let labelColumn = table.header.firstIndex(of: "label") {
            let reason = table.header.firstIndex(of: "reason")
            for row in table.rows {
                texts.append(row[textColumn])
                samples.append([Sample(label: row[labelColumn], reason: reason.map { row[$0] } ?? "recorded label")])
            }
        } else {
            throw TeacherError("\(source): expected sc_iter1..k columns or a label column next to text")
        }
        for (i, t) in texts.enumerated() where index[TextHash.normalize(t)] == nil { index[TextHash.normalize(t)] = i }
        self.texts = texts; self.samples = samples; self.index = index
    }

    /// The entry for a text (compared after normalisation).
    public func lookup(_ text: String) -> Int? { index[TextHash.normalize(text)] }
}

/// What the dev teacher does with texts it has no answers for.
public enum UnknownTextRule: Sendable, Equatable {
    /// Answer this label.
    case label(String)
    /// Answer prose with no label (the client's parser FAILs it).
    case fail
    /// HTTP 404.
    case error

    /// Parses `label:X`, `fail` or `error`.
    public init(parsing s: String) throws {
        if s == "fail" { self = .fail } else if s == "error" { self = .error }
        else if s.hasPrefix("label:"), s.count > 6 { self = .label(String(s.dropFirst(6))) }
        else { throw TeacherError("--unknown \(s): expected label:LABEL, fail or error") }
    }
}

/// Injected faults, each a probability per request.
public struct FaultRates: Sendable {
    /// Added to every answer, milliseconds.
    public var latencyMilliseconds = 0
    /// 429 Too Many Requests with `Retry-After: 1`.
    public var rate429 = 0.0
    /// 500 Internal Server Error.
    public var rate500 = 0.0
    /// Never answer.
    public var rateHang = 0.0
    /// A 200 whose content is not the JSON asked for, or empty.
    public var rateMalformed = 0.0
    /// No faults.
    public init() {}
}

/// Totals of what the dev teacher served (`GET /stats`).
public struct DevTeacherTotals: Sendable, Codable {
    /// Requests received.
    public var requests = 0
    /// Requests answered with a completion.
    public var completions = 0
    /// Faults injected by kind.
    public var status429 = 0, status500 = 0, hangs = 0, malformed = 0
    /// Choices returned.
    public var samples = 0
    /// Usage reported in the completions.
    public var promptTokens = 0, completionTokens = 0
    /// Texts not in the answer book.
    public var unknownTexts = 0
}

/// An OpenAI-compatible chat-completions server for development and tests that replays recorded
/// teacher answers: the i-th answered request for a text gets sample i (cycling; a request with
/// `n` gets the next n). An injected fault does not use up a sample, so the retry gets the sample
/// the failed request would have. Answers are real completions (JSON in the message content, a
/// `usage` block).
public final class DevTeacher: Sendable {
    private let book: AnswerBook
    private let faults: FaultRates
    private let unknown: UnknownTextRule
    private let apiKey: String?
    private let textMarker: (prefix: String, suffix: String)
    /// Samples served per text, the totals, and the fault generator, behind one lock (requests
    /// arrive on the HTTP server's connection threads).
    private struct State: Sendable {
        var served: [Int: Int] = [:]
        var totals = DevTeacherTotals()
        var random: UInt64
    }
    private let state: LockedValue<State>
    private let server = LockedValue<HTTPService?>(nil)
    private let outage = LockedValue(false)

    /// Simulates an outage: while on, every request is answered 503 (and counted as a 500).
    public func setOutage(_ on: Bool) { outage.withLock { $0 = on } }

    /// A server replaying `book`; the prompt template tells it where the text is in a request.
    public init(book: AnswerBook, faults: FaultRates = FaultRates(), unknown: UnknownTextRule = .label("neutral"),
                prompt: PromptTemplate = .investorSentiment, apiKey: String? = nil, seed: UInt64 = 1) {
        self.book = book
        self.faults = faults
        self.unknown = unknown
        self.apiKey = apiKey
        state = LockedValue(State(random: seed &* 0x9E37_79B9_7F4A_7C15 | 1))
        // The text sits between what precedes {{text}} on its line and what follows it.
        let parts = prompt.user.components(separatedBy: "{{text}}")
        let before = parts[0].components(separatedBy: "\n").last ?? ""
        textMarker = (before, parts.count > 1 ? parts[1] : "")
    }

    /// Starts serving on `host:port` (0 = any free port) in the background; returns the port.
    @discardableResult
    public func start(host: String = "127.0.0.1", port: UInt16) async throws -> UInt16 {
        var settings = HTTPService.Settings()
        settings.host = host
        settings.port = Int(port)
        settings.maxConnections = 1024
        settings.idleTimeoutSeconds = 120
        let s = HTTPService(settings: settings, logger: Logger(label: "dev-teacher")) { [self] in await handle($0) }
        server.withLock { $0 = s }
        return try await s.start()
    }

    /// Stops serving (requests in flight, hung ones included, are cut).
    public func stop() async { await server.value?.stop() }

    /// What was served so far.
    public var totals: DevTeacherTotals { state.withLock { $0.totals } }

    private func chance(_ p: Double) -> Bool {
        guard p > 0 else { return false }
        return state.withLock { s in
            s.random ^= s.random << 13; s.random ^= s.random >> 7; s.random ^= s.random << 17
            return Double(s.random >> 11) / Double(1 << 53) < p
        }
    }

    /// Finds the text inside a rendered prompt.
    func extractText(_ content: String) -> String {
        var body = content
        if !textMarker.suffix.isEmpty, let r = body.range(of: textMarker.suffix, options: .backwards) { body = String(body[..<r.lowerBound]) }
        if !textMarker.prefix.isEmpty, let r = body.range(of: textMarker.prefix, options: .backwards) { body = String(body[r.upperBound...]) }
        return body.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A chat-completions request as clients send it (only what the dev teacher reads).
    private struct IncomingRequest: Decodable {
        var model: String?
        var messages: [ChatMessage]
        var n: Int?
    }

    /// An OpenAI-style error body.
    private struct APIError: Encodable {
        struct Body: Encodable { var message: String; var type: String }
        var error: Body
    }

    /// An OpenAI-style completion body.
    private struct CompletionReply: Encodable {
        var id: String
        var object = "chat.completion"
        var created: Int
        var model: String
        var choices: [Choice]
        var usage: Usage
        struct Choice: Encodable {
            var index: Int
            var message: ChatMessage
            var finishReason = "stop"
            enum CodingKeys: String, CodingKey { case index, message, finishReason = "finish_reason" }
        }
        struct Usage: Encodable {
            var promptTokens: Int, completionTokens: Int, totalTokens: Int
            enum CodingKeys: String, CodingKey { case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens" }
        }
    }

    func handle(_ request: HTTPServiceRequest) async -> HTTPServiceReply {
        func json<T: Encodable>(_ status: Int, _ value: T, headers: [(String, String)] = []) -> HTTPServiceReply {
            HTTPServiceReply(status: status, contentType: "application/json", headers: headers, body: Array((try? JSONText.data(value)) ?? Data()))
        }
        func error(_ status: Int, _ message: String, _ type: String, headers: [(String, String)] = []) -> HTTPServiceReply {
            json(status, APIError(error: .init(message: message, type: type)), headers: headers)
        }
        if request.method == "GET" && request.path.hasPrefix("/stats") { return json(200, totals) }
        if outage.value {
            state.withLock { $0.totals.status500 += 1 }
            return error(503, "teacher unavailable (outage)", "server_error")
        }
        guard request.method == "POST", request.path.hasSuffix("/chat/completions") else {
            return error(404, "not found: \(request.method) \(request.path)", "invalid_request_error")
        }
        if let apiKey, request.headers["authorization"] != "Bearer \(apiKey)" {
            return error(401, "invalid API key", "authentication_error")
        }
        guard let incoming = try? JSONDecoder().decode(IncomingRequest.self, from: Data(request.body)),
              let last = incoming.messages.last(where: { $0.role == "user" })?.content else {
            return error(400, "expected a chat-completions request with a user message", "invalid_request_error")
        }
        let n = max(1, min(incoming.n ?? 1, 16))
        state.withLock { $0.totals.requests += 1 }
        if chance(faults.rateHang) {
            // A hung server: no answer until the client gives up (or the server stops).
            state.withLock { $0.totals.hangs += 1 }
            try? await Task.sleep(for: .seconds(3600))
            return error(503, "hung (injected)", "server_error")
        }
        if faults.latencyMilliseconds > 0 { try? await Task.sleep(for: .milliseconds(faults.latencyMilliseconds)) }
        if chance(faults.rate429) {
            state.withLock { $0.totals.status429 += 1 }
            return error(429, "rate limit reached (injected)", "rate_limit_error", headers: [("Retry-After", "1")])
        }
        if chance(faults.rate500) {
            state.withLock { $0.totals.status500 += 1 }
            return error(500, "internal error (injected)", "server_error")
        }
        let text = extractText(last)
        var contents: [String] = []
        if chance(faults.rateMalformed) {
            state.withLock { $0.totals.malformed += 1 }
            contents = (0..<n).map { $0 % 2 == 0 ? "" : "I would need more context to answer that." }
        } else if let entry = book.lookup(text) {
            let samples = book.samples[entry]
            let first = state.withLock { s -> Int in
                let first = s.served[entry, default: 0]
                s.served[entry] = first + n
                return first
            }
            contents = (0..<n).map { i in
                let s = samples[(first + i) % samples.count]
                return Self.answerJSON(reason: s.reason, label: s.label)
            }
        } else {
            state.withLock { $0.totals.unknownTexts += 1 }
            switch unknown {
            case let .label(l): contents = Array(repeating: Self.answerJSON(reason: "No recorded answer for this text.", label: l), count: n)
            case .fail: contents = Array(repeating: "I cannot classify this text.", count: n)
            case .error: return error(404, "no recorded answer for this text", "invalid_request_error")
            }
        }
        let promptTokens = max(1, incoming.messages.reduce(0) { $0 + $1.content.utf8.count } / 4)
        let completionTokens = contents.reduce(0) { $0 + max(1, $1.utf8.count / 4) }
        state.withLock { s in
            s.totals.completions += 1
            s.totals.samples += n
            s.totals.promptTokens += promptTokens
            s.totals.completionTokens += completionTokens
        }
        return json(200, CompletionReply(
            id: "chatcmpl-dev-\(UUID().uuidString.prefix(8))", created: Int(Date().timeIntervalSince1970), model: incoming.model ?? "dev-teacher",
            choices: contents.enumerated().map { .init(index: $0, message: ChatMessage(role: "assistant", content: $1)) },
            usage: .init(promptTokens: promptTokens, completionTokens: completionTokens, totalTokens: promptTokens + completionTokens)))
    }

    /// The recorded answer as the JSON object the prompt asks for.
    static func answerJSON(reason: String, label: String) -> String {
        struct Answer: Encodable { var reason: String; var label: String }
        return (try? JSONText.encode(Answer(reason: reason, label: label))) ?? "{}"
    }
}
