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

    /// An item.
    public init(externalID: String?, text: String, publishedAt: Date?, source: String?, companies: [String]) {
        self.externalID = externalID; self.text = text; self.publishedAt = publishedAt; self.source = source; self.companies = companies
    }
}

/// Why a message was refused; stored with its raw bytes in `rejected_messages`.
public struct RejectReason: Error, Equatable, Sendable, CustomStringConvertible {
    /// A small closed set of causes, the `reason` label of `newsd_messages_rejected_total`.
    public enum Kind: String, Sendable, CaseIterable {
        /// Not UTF-8, or a NUL character.
        case encoding
        /// JSON that does not parse or has the wrong shape or types.
        case malformed
        /// No visible text.
        case empty
        /// A field or list over its limit.
        case tooLarge = "too_large"
        /// Company ids outside the portfolio (`ingest.unknown_companies = "reject"`).
        case unknownCompany = "unknown_company"
        /// The database refused the row (SQLSTATE class 22, 23 or 54).
        case database
    }
    /// Human-readable reason.
    public var description: String
    /// The cause, for metrics.
    public var kind: Kind
    /// Creates a reason.
    public init(_ description: String, kind: Kind = .malformed) { self.description = description; self.kind = kind }
}

/// Turns raw message bytes into a `NewsItem`: a JSON object with `text` and optional `id`,
/// `published_at`, `source`, `companies`; or plain UTF-8 text. A message whose first non-blank
/// character is `{` is JSON and must parse.
public struct MessageParser: Sendable {
    /// Size limits per field (UTF-8 bytes) and on the `companies` list; anything past them is
    /// refused with a reason, so no message can reach a database limit (an index entry too big)
    /// and stop the stream.
    public struct Limits: Sendable, Equatable {
        /// `text`.
        public var textBytes = 8192
        /// `id`.
        public var idBytes = 256
        /// `source`.
        public var sourceBytes = 256
        /// Each entry of `companies`.
        public var companyIdBytes = 128
        /// Entries in `companies`.
        public var companies = 64
        /// The documented defaults.
        public init() {}
    }

    /// The limits.
    public var limits: Limits
    /// Texts longer than this many UTF-8 bytes are refused.
    public var maxTextBytes: Int { limits.textBytes }

    /// A parser with these limits.
    public init(limits: Limits) { self.limits = limits }

    /// A parser with the default limits and this text limit.
    public init(maxTextBytes: Int = 8192) {
        limits = Limits()
        limits.textBytes = maxTextBytes
    }

    /// The item, or the reason it is refused.
    public func parse(_ bytes: [UInt8]) -> Result<NewsItem, RejectReason> {
        guard let string = String(validating: bytes, as: UTF8.self) else {
            return .failure(RejectReason("invalid UTF-8", kind: .encoding))
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
        if item.text.isEmpty { return .failure(RejectReason("empty text", kind: .empty)) }
        if item.text.utf8.count > maxTextBytes { return .failure(RejectReason("text of \(item.text.utf8.count) bytes exceeds the limit of \(maxTextBytes)", kind: .tooLarge)) }
        if !item.text.unicodeScalars.contains(where: Self.isVisible) {
            return .failure(RejectReason("text has no visible character (only spaces, invisible or control characters)", kind: .empty))
        }
        for (name, value, limit) in [("id", item.externalID, limits.idBytes), ("source", item.source, limits.sourceBytes)] {
            if let value, value.utf8.count > limit { return .failure(RejectReason("\(name) of \(value.utf8.count) bytes exceeds the limit of \(limit)", kind: .tooLarge)) }
        }
        if item.companies.count > limits.companies {
            return .failure(RejectReason("companies lists \(item.companies.count) ids, more than the limit of \(limits.companies)", kind: .tooLarge))
        }
        if let long = item.companies.first(where: { $0.utf8.count > limits.companyIdBytes }) {
            return .failure(RejectReason("a company id of \(long.utf8.count) bytes exceeds the limit of \(limits.companyIdBytes)", kind: .tooLarge))
        }
        if item.companies.contains(where: { $0.trimmingCharacters(in: .whitespaces).isEmpty }) {
            return .failure(RejectReason("companies contains an empty id"))
        }
        // PostgreSQL text cannot hold NUL: refuse it in every field that is stored as text.
        for (name, value) in [("text", item.text), ("id", item.externalID ?? ""), ("source", item.source ?? "")] + item.companies.map({ ("companies", $0) })
        where value.unicodeScalars.contains("\u{0}") {
            return .failure(RejectReason("\(name) contains a NUL character", kind: .encoding))
        }
        return .success(item)
    }

    /// ISO 8601 with or without fractional seconds, or a date alone, in the years 1900-2999 (a
    /// year 0000 would silently become 0001; no news is that old or from that far ahead).
    public static func parseDate(_ s: String) -> Date? {
        let f = ISO8601DateFormatter()
        var date = f.date(from: s)
        if date == nil { f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]; date = f.date(from: s) }
        if date == nil { f.formatOptions = [.withFullDate]; date = f.date(from: s) }
        guard let date, let year = Int(s.prefix(4)), (1900...2999).contains(year),
              date >= Self.earliest, date < Self.latest else { return nil }
        return date
    }

    private static let earliest = Date(timeIntervalSince1970: -2_208_988_800)   // 1900-01-01
    private static let latest = Date(timeIntervalSince1970: 32_503_680_000)     // 3000-01-01

    /// Whether a scalar shows something: not white space, not a control or format character
    /// (zero-width spaces and joiners, bidi controls, BOM), not a default-ignorable code point.
    static func isVisible(_ s: Unicode.Scalar) -> Bool {
        let p = s.properties
        if p.isWhitespace || p.isDefaultIgnorableCodePoint { return false }
        switch p.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator: return false
        default: return true
        }
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

