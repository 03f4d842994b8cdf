import Foundation
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// One chat message of an OpenAI-compatible request.
public struct ChatMessage: Sendable, Equatable, Codable {
    /// `system`, `user` or `assistant`.
    public var role: String
    /// The text.
    public var content: String
    /// Creates a message.
    public init(role: String, content: String) { self.role = role; self.content = content }
}

/// The teacher's prompt: a template file with `=== system ===` and `=== user ===` sections and
/// the placeholders `{{labels}}` (the allowed labels, quoted, comma-separated) and `{{text}}`.
/// The default asks an expert annotator for investor sentiment judged only from the text, a brief
/// reason first, then one JSON object `{"reason": ..., "label": ...}`, with three worked examples.
/// Labels, examples and wording all live in the file, so the same loop serves other tasks.
public struct PromptTemplate: Sendable, Equatable {
    /// The system message template.
    public var system: String
    /// The user message template.
    public var user: String

    /// Parses a template; the error names what is missing.
    public init(parsing text: String, source: String = "prompt template") throws {
        var sections: [String: [Substring]] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("==="), t.hasSuffix("==="), t.count > 6 {
                current = t.dropFirst(3).dropLast(3).trimmingCharacters(in: .whitespaces).lowercased()
                sections[current!] = []
            } else if let current {
                sections[current]!.append(line)
            }
        }
        guard let user = sections["user"] else { throw TeacherError("\(source): no \"=== user ===\" section") }
        let joined = user.joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
        guard joined.contains("{{text}}") else { throw TeacherError("\(source): the user section has no {{text}} placeholder") }
        self.user = joined
        system = (sections["system"] ?? []).joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Loads a template file.
    public init(file: String) throws {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch { throw TeacherError("cannot read prompt template \(file): \(error.localizedDescription)") }
        try self.init(parsing: text, source: file)
    }

    /// The built-in investor-sentiment template.
    public static let investorSentiment: PromptTemplate = try! PromptTemplate(parsing: defaultText)

    /// Messages for one text.
    public func render(text: String, labels: [String]) -> [ChatMessage] {
        let labelList = labels.map { "\"\($0)\"" }.joined(separator: ", ")
        func fill(_ s: String) -> String {
            s.replacingOccurrences(of: "{{labels}}", with: labelList).replacingOccurrences(of: "{{text}}", with: text)
        }
        return (system.isEmpty ? [] : [ChatMessage(role: "system", content: fill(system))]) + [ChatMessage(role: "user", content: fill(user))]
    }

    /// The default template's text.
    public static let defaultText = """
    === system ===
    You are an expert annotator of financial news for investors.
    === user ===
    Your task is to judge the investor sentiment of one sentence from financial news.
    Judge only from the text itself, not from anything you know about the company.
    Possible labels: {{labels}}.
    Think briefly about what the sentence means for an investor, then answer with exactly one JSON
    object and nothing else: {"reason": "<one short sentence>", "label": "<one of the labels>"}.

    Examples:
    Text: Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period.
    Answer: {"reason": "An increase in operating profit is good for investors.", "label": "positive"}
    Text: The company has 120 employees and offices in three countries.
    Answer: {"reason": "A neutral statement of figures with no gain or loss implied.", "label": "neutral"}
    Text: Net sales decreased by 5 % to EUR 40.2 mn.
    Answer: {"reason": "Falling sales are bad for investors.", "label": "negative"}

    Text: {{text}}
    Answer:
    """
}

/// The one error type of `NewsdTeacher`: what went wrong, its kind, and whether trying again (the
/// same item, later) can help.
public struct TeacherError: Error, CustomStringConvertible, Sendable, RetryClassifiable {
    /// The kinds of failure.
    public enum Kind: Sendable, Equatable {
        /// Configuration or template problems (never retriable).
        case configuration
        /// The server answered with this HTTP status.
        case http(Int)
        /// Timeout or connection error.
        case transport
        /// A 200 response that is not a chat completion.
        case badResponse
        /// Today's spend budget is used up.
        case budgetExhausted
    }
    /// What is wrong.
    public var description: String
    /// Whether trying again can help.
    public var isRetriable: Bool
    /// The kind.
    public var kind: Kind
    /// The server's `Retry-After`, seconds: the next attempt waits at least this long.
    public var retryAfterSeconds: Double?
    /// Creates an error.
    public init(_ description: String, retriable: Bool = false, kind: Kind = .configuration) {
        self.description = description; isRetriable = retriable; self.kind = kind
    }
}
