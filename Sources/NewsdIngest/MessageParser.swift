import Foundation

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
        do {
            let m = try JSONDecoder().decode(WireMessage.self, from: data)
            var item = NewsItem(externalID: m.id, text: m.text.trimmingCharacters(in: .whitespacesAndNewlines), publishedAt: nil,
                                source: m.source, companies: m.companies ?? [])
            if let s = m.publishedAt {
                guard let date = Self.parseDate(s) else { return .failure(RejectReason("\"published_at\" \(s.prefix(40)) is not an ISO 8601 time")) }
                item.publishedAt = date
            }
            return validate(item)
        } catch let reason as RejectReason {
            return .failure(reason)
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            return .failure(RejectReason("JSON is not an object"))
        } catch {
            return .failure(RejectReason("malformed JSON: \(Self.shortError(error))"))
        }
    }

    /// The JSON message as sent; every field's type is checked with a reason naming the field.
    private struct WireMessage: Decodable {
        var id: String?
        var text: String
        var publishedAt: String?
        var source: String?
        var companies: [String]?

        enum CodingKeys: String, CodingKey { case id, text, publishedAt = "published_at", source, companies }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            guard c.contains(.text) else { throw RejectReason("JSON has no \"text\"") }
            guard let text = try? c.decode(String.self, forKey: .text) else { throw RejectReason("\"text\" is not a string") }
            self.text = text
            if c.contains(.id), try !c.decodeNil(forKey: .id) {
                if let s = try? c.decode(String.self, forKey: .id) { id = s }
                else if let n = try? c.decode(Int64.self, forKey: .id) { id = String(n) }
                else if let d = try? c.decode(Double.self, forKey: .id) { id = "\(d)" }
                else { throw RejectReason("\"id\" is not a string or number") }
            }
            func optionalString(_ key: CodingKeys, _ name: String) throws -> String? {
                guard c.contains(key), try !c.decodeNil(forKey: key) else { return nil }
                guard let s = try? c.decode(String.self, forKey: key) else { throw RejectReason("\"\(name)\" is not a string") }
                return s
            }
            publishedAt = try optionalString(.publishedAt, "published_at")
            source = try optionalString(.source, "source")
            if c.contains(.companies), try !c.decodeNil(forKey: .companies) {
                guard let ids = try? c.decode([String].self, forKey: .companies) else { throw RejectReason("\"companies\" is not an array of strings") }
                companies = ids
            }
        }
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
        var s = "\(error)"
        if case let DecodingError.dataCorrupted(context) = error {
            s = context.debugDescription
            if let underlying = context.underlyingError { s += ": \(underlying)" }
        }
        return s.count > 160 ? String(s.prefix(160)) + "…" : s
    }
}

