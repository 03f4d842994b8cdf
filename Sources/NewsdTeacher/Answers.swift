import Foundation
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// How an answer's label was found.
public enum ParseStage: String, Sendable, Codable {
    /// The whole reply is the JSON object asked for.
    case strict
    /// A JSON-like object inside prose or a code fence, repaired (single quotes, trailing commas).
    case tolerant
    /// Exactly one label word in the reply.
    case wordMatch = "word_match"
}

/// One teacher sample after parsing.
public enum TeacherAnswer: Sendable, Equatable {
    /// A label (one of the configured ones), the model's reason if it gave one, and how it was read.
    case label(String, reason: String?, stage: ParseStage)
    /// No label could be read; never replaced by a guess.
    case fail(String)

    /// The label, or nil for FAIL.
    public var label: String? { if case let .label(l, _, _) = self { return l }; return nil }
}

/// Reads a teacher reply: strict JSON first; then a tolerant pass (JSON inside prose or code
/// fences, single quotes, trailing commas); then a whole-word label match; otherwise FAIL.
/// Never a random label: a reply naming two different labels in prose is a FAIL.
public struct AnswerParser: Sendable {
    /// The allowed labels, lower-case.
    public let labels: [String]

    /// A parser for these labels (compared case-insensitively).
    public init(labels: [String]) { self.labels = labels.map { $0.lowercased() } }

    /// Parses one reply's message content.
    public func parse(_ content: String) -> TeacherAnswer {
        let trimmed = content.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty { return .fail("empty reply") }
        if let answer = fromJSON(trimmed, stage: .strict) { return answer }
        for candidate in Self.objectCandidates(in: trimmed) {
            if let answer = fromJSON(candidate, stage: .tolerant) ?? fromJSON(Self.repair(candidate), stage: .tolerant) { return answer }
        }
        let found = Set(Self.words(in: trimmed.lowercased()).filter { labels.contains($0) })
        if found.count == 1 { return .label(found.first!, reason: nil, stage: .wordMatch) }
        return .fail(found.isEmpty ? "no label in the reply" : "the reply names several labels \(found.sorted())")
    }

    private func fromJSON(_ text: String, stage: ParseStage) -> TeacherAnswer? {
        guard let object = (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)))?.object else { return nil }
        let keys = Dictionary(object.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
        guard let raw = keys["label"]?.string else { return nil }
        let label = raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        let reason = keys["reason"]?.string
        if labels.contains(label) { return .label(label, reason: reason, stage: stage) }
        // A label field with something else in it ("neutral leaning towards positive"): read its
        // words, but only a single label counts.
        let found = Set(Self.words(in: label).filter { labels.contains($0) })
        if found.count == 1 { return .label(found.first!, reason: reason, stage: stage) }
        return .fail("label \"\(raw.prefix(60))\" is not one of \(labels)")
    }

    /// Balanced `{...}` substrings, outermost first (code fences and prose around them ignored).
    static func objectCandidates(in text: String) -> [String] {
        let chars = Array(text)
        var out: [String] = []
        var i = 0
        while i < chars.count {
            guard chars[i] == "{" else { i += 1; continue }
            var depth = 0, j = i, quote: Character? = nil
            while j < chars.count {
                let c = chars[j]
                if let q = quote { if c == "\\" { j += 1 } else if c == q { quote = nil } }
                else if c == "\"" || c == "'" { quote = c }
                else if c == "{" { depth += 1 }
                else if c == "}" { depth -= 1; if depth == 0 { break } }
                j += 1
            }
            if j < chars.count { out.append(String(chars[i...j])); i = j + 1 } else { break }
        }
        return out
    }

    /// Single-quoted strings to double-quoted; trailing commas before `}` or `]` removed.
    static func repair(_ s: String) -> String {
        var out = ""
        var inDouble = false, inSingle = false, escaped = false
        for c in s {
            if escaped { out.append(c); escaped = false; continue }
            if c == "\\" { out.append(c); escaped = true; continue }
            if c == "\"" && !inSingle { inDouble.toggle(); out.append(c); continue }
            if c == "'" && !inDouble { inSingle.toggle(); out.append("\""); continue }
            if c == "\"" && inSingle { out.append("\\\""); continue }
            out.append(c)
        }
        var result = ""
        let chars = Array(out)
        for (k, c) in chars.enumerated() {
            if c == "," {
                var n = k + 1
                while n < chars.count, chars[n].isWhitespace { n += 1 }
                if n < chars.count, chars[n] == "}" || chars[n] == "]" { continue }
            }
            result.append(c)
        }
        return result
    }

    static func words(in text: String) -> [String] {
        text.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init)
    }
}

/// Self-consistency voting over teacher samples.
public enum SelfConsistency {
    /// What to do after the samples taken so far.
    public enum Decision: Sendable, Equatable {
        /// A strict majority of all samples taken agrees: the label and the vote shares over the
        /// labels (the soft label; FAILs excluded).
        case labelled(String, distribution: [String: Double])
        /// No majority yet: ask this many more samples.
        case askMore(Int)
        /// No majority after every extra sample: not used for training.
        case ambiguous(distribution: [String: Double])
    }

    /// Decides from `answers` with `k` planned samples and up to `extra` more. A label needs more
    /// than half of ALL samples taken (FAILs count against it), so a three-way split never becomes
    /// a label however often the samples repeat.
    public static func decide(_ answers: [TeacherAnswer], k: Int, extra: Int) -> Decision {
        if answers.count < k { return .askMore(k - answers.count) }
        var counts: [String: Int] = [:]
        for a in answers { if let l = a.label { counts[l, default: 0] += 1 } }
        let valid = counts.values.reduce(0, +)
        let distribution = counts.mapValues { Double($0) / Double(max(valid, 1)) }
        if let (label, n) = counts.max(by: { ($0.value, $1.key) < ($1.value, $0.key) }), 2 * n > answers.count {
            return .labelled(label, distribution: distribution)
        }
        if answers.count < k + extra { return .askMore(1) }
        return .ambiguous(distribution: distribution)
    }
}
