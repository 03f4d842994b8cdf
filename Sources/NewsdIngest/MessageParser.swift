import Foundation
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// A news sentence accepted from the stream.
public struct NewsItem: Sendable, Equatable {
    /// The sender's id (`id` in JSON), kept as `news_items.external_id`.
    public var externalID: String?
    /// The sentence.
    public var text: String
    /// When it was published (`published_at`, ISO 8601), if given.
    public var publishedAt: Date?
    /// Where it came from (`source`), if given.
    public var source: String?
    /// Company ids the sender already linked (`companies`), honoured as given.
    public var companies: [String]
}

/// Why a message was refused; stored with its raw bytes in `rejected_messages`.
public struct RejectReason: Error, Equatable, Sendable, CustomStringConvertible {
    /// Human-readable reason.
    public var description: String
    /// Creates a reason.
    public init(_ description: String) { self.description = description }
}

/// Turns raw message bytes into a `NewsItem`: a JSON object with `text` and optional `id`,
/// `published_at`, `source`, `companies`; or plain UTF-8 text. A message whose first non-blank
/// character is `{` is JSON and must parse.
public struct MessageParser: Sendable {
    /// Texts longer than this many UTF-8 bytes are refused.
    public var maxTextBytes: Int

    /// Creates a parser.
    public init(maxTextBytes: Int = 8192) { self.maxTextBytes = maxTextBytes }

    /// The item, or the reason it is refused.
    public func parse(_ bytes: [UInt8]) -> Result<NewsItem, RejectReason> {
        guard let string = String(validating: bytes, as: UTF8.self) else {
            return .failure(RejectReason("invalid UTF-8"))
        }
        let trimmed = string.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("{") {
            return parseJSON(Data(bytes))
        }
        return validate(NewsItem(externalID: nil, text: trimmed, publishedAt: nil, source: nil, companies: []))
    }

    private func parseJSON(_ data: Data) -> Result<NewsItem, RejectReason> {
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            return .failure(RejectReason("malformed JSON: \(Self.shortError(error))"))
        }
        guard let json = object as? [String: Any] else { return .failure(RejectReason("JSON is not an object")) }
        guard let rawText = json["text"] else { return .failure(RejectReason("JSON has no \"text\"")) }
        guard let text = rawText as? String else { return .failure(RejectReason("\"text\" is not a string")) }
        var item = NewsItem(externalID: nil, text: text.trimmingCharacters(in: .whitespacesAndNewlines), publishedAt: nil, source: nil, companies: [])
        if let id = json["id"], !(id is NSNull) {
            if let s = id as? String { item.externalID = s }
            else if id is Bool { return .failure(RejectReason("\"id\" is not a string or number")) }
            else if let n = id as? Int { item.externalID = String(n) }
            else if let n = id as? NSNumber { item.externalID = n.stringValue }
            else { return .failure(RejectReason("\"id\" is not a string or number")) }
        }
        if let p = json["published_at"], !(p is NSNull) {
            guard let s = p as? String else { return .failure(RejectReason("\"published_at\" is not a string")) }
            guard let date = Self.parseDate(s) else { return .failure(RejectReason("\"published_at\" \(s.prefix(40)) is not an ISO 8601 time")) }
            item.publishedAt = date
        }
        if let s = json["source"], !(s is NSNull) {
            guard let s = s as? String else { return .failure(RejectReason("\"source\" is not a string")) }
            item.source = s
        }
        if let c = json["companies"], !(c is NSNull) {
            guard let list = c as? [Any], let ids = list as? [String] else { return .failure(RejectReason("\"companies\" is not an array of strings")) }
            item.companies = ids
        }
        return validate(item)
    }

    private func validate(_ item: NewsItem) -> Result<NewsItem, RejectReason> {
        if item.text.isEmpty { return .failure(RejectReason("empty text")) }
        if item.text.utf8.count > maxTextBytes { return .failure(RejectReason("text of \(item.text.utf8.count) bytes exceeds the limit of \(maxTextBytes)")) }
        // PostgreSQL text cannot hold NUL: refuse it in every field that is stored as text.
        for (name, value) in [("text", item.text), ("id", item.externalID ?? ""), ("source", item.source ?? "")] + item.companies.map({ ("companies", $0) })
        where value.unicodeScalars.contains("\u{0}") {
            return .failure(RejectReason("\(name) contains a NUL character"))
        }
        return .success(item)
    }

    /// ISO 8601 with or without fractional seconds, or a date alone.
    public static func parseDate(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: s) { return d }
        f.formatOptions = [.withFullDate]
        return f.date(from: s)
    }

    private static func shortError(_ error: Error) -> String {
        let ns = error as NSError
        let s = (ns.userInfo["NSDebugDescription"] as? String) ?? "\(error)"
        return s.count > 160 ? String(s.prefix(160)) + "…" : s
    }
}

