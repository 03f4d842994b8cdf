import Foundation
import NewsdSystem

/// A value that can be sent as a query parameter (libpq's text format; nil is SQL NULL).
public protocol PostgresEncodable {
    /// The parameter text, or nil for NULL.
    var postgresText: String? { get }
}

/// A value that can be read from a result column (libpq's text format).
public protocol PostgresDecodable {
    /// Parses the column text; nil when it is not a value of this type.
    init?(postgresText: String)
}

extension String: PostgresEncodable, PostgresDecodable {
    /// The string itself.
    public var postgresText: String? { self }
    /// The column text.
    public init?(postgresText: String) { self = postgresText }
}

extension Int: PostgresEncodable, PostgresDecodable {
    /// Decimal digits.
    public var postgresText: String? { String(self) }
    /// Decimal digits.
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int64: PostgresEncodable, PostgresDecodable {
    /// Decimal digits.
    public var postgresText: String? { String(self) }
    /// Decimal digits.
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int32: PostgresEncodable, PostgresDecodable {
    /// Decimal digits.
    public var postgresText: String? { String(self) }
    /// Decimal digits.
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Double: PostgresEncodable, PostgresDecodable {
    /// Shortest round-trip text; `NaN`, `Infinity`, `-Infinity` as Postgres spells them.
    public var postgresText: String? { isNaN ? "NaN" : isInfinite ? (self > 0 ? "Infinity" : "-Infinity") : "\(self)" }
    /// A number (`NaN` and infinities included).
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Float: PostgresDecodable {
    /// A number.
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Bool: PostgresEncodable, PostgresDecodable {
    /// `t` or `f`.
    public var postgresText: String? { self ? "t" : "f" }
    /// `t`/`true` or `f`/`false`.
    public init?(postgresText: String) {
        switch postgresText { case "t", "true": self = true; case "f", "false": self = false; default: return nil }
    }
}

extension Date: PostgresEncodable, PostgresDecodable {
    /// Seconds since the epoch as a `timestamptz` literal (`to_timestamp` is not needed).
    public var postgresText: String? { PostgresTimestamp.format(self) }
    /// A `timestamptz` in Postgres's ISO output (`2026-12-01 02:40:00.123+00`).
    public init?(postgresText: String) {
        guard let d = PostgresTimestamp.parse(postgresText) else { return nil }
        self = d
    }
}

extension Optional: PostgresEncodable where Wrapped: PostgresEncodable {
    /// NULL for nil.
    public var postgresText: String? { self?.postgresText }
}

extension Array: PostgresEncodable where Element: PostgresEncodable {
    /// An array literal (`{"a","b"}`), every element quoted and escaped; NULL elements as NULL.
    public var postgresText: String? {
        "{" + map { e in
            e.postgresText.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" } ?? "NULL"
        }.joined(separator: ",") + "}"
    }
}

/// Timestamps in the text form Postgres reads and writes.
enum PostgresTimestamp {
    static func format(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f.string(from: d)
    }

    static func parse(_ s: String) -> Date? {
        // Postgres: "2026-12-01 02:40:00.123456+00" (fraction and minutes of the offset optional).
        var t = s.replacingOccurrences(of: " ", with: "T")
        if let r = t.range(of: #"[+-]\d\d$"#, options: .regularExpression) { t.replaceSubrange(r, with: t[r] + ":00") }
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let d = f.date(from: t) { return d }
        f.formatOptions = [.withInternetDateTime]
        return f.date(from: t)
    }
}

/// A SQL statement whose interpolated values become bound parameters (`$1`, `$2`, ...), never
/// spliced into the text: `"SELECT * FROM models WHERE version = \(v)"` sends `v` separately.
/// `\(unescaped: name)` splices trusted SQL (a table name, a `LIMIT` constant) on purpose.
public struct PostgresQuery: ExpressibleByStringInterpolation, Sendable {
    /// The SQL text with `$n` placeholders.
    public var sql: String
    /// The parameters, in placeholder order.
    public var bindings: [String?]

    /// SQL without parameters.
    public init(stringLiteral value: String) { sql = value; bindings = [] }
    /// SQL with interpolated parameters.
    public init(stringInterpolation: StringInterpolation) { sql = stringInterpolation.sql; bindings = stringInterpolation.bindings }
    /// SQL with explicit `$n` parameters.
    public init(_ sql: String, _ bindings: [String?]) { self.sql = sql; self.bindings = bindings }

    /// Builds the text and the bindings.
    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var bindings: [String?] = []
        /// Reserves room.
        public init(literalCapacity: Int, interpolationCount: Int) { sql.reserveCapacity(literalCapacity + interpolationCount * 3) }
        /// SQL text.
        public mutating func appendLiteral(_ literal: String) { sql += literal }
        /// A bound parameter.
        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T) {
            bindings.append(value.postgresText)
            sql += "$\(bindings.count)"
        }
        /// A bound parameter that may be NULL.
        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T?) {
            bindings.append(value?.postgresText)
            sql += "$\(bindings.count)"
        }
        /// Trusted SQL, spliced as it is.
        public mutating func appendInterpolation(unescaped text: String) { sql += text }
    }
}

/// One result row; columns are looked up by name and decoded to the type asked for. A missing
/// column, a NULL where a value is required, or text of another type throws `PostgresError` naming
/// the column (a renamed column is an error, never a silent zero).
public struct PostgresRow: Sendable {
    /// Column name -> position.
    let index: [String: Int]
    /// Values; nil is NULL.
    public let values: [String?]

    /// The value of `column`, which must not be NULL.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        guard let text = try raw(column) else {
            throw PostgresError(sqlState: nil, message: "column \(column) is NULL; \(T.self) expected")
        }
        return try parse(text, column)
    }

    /// The value of `column`, nil for NULL.
    public func decode<T: PostgresDecodable>(_ column: String, as type: T?.Type = T?.self) throws -> T? {
        try raw(column).map { try parse($0, column) }
    }

    /// A JSON column decoded with `Codable`.
    public func decodeJSON<T: Decodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        let text: String = try decode(column)
        do { return try JSONDecoder().decode(T.self, from: Data(text.utf8)) } catch {
            throw PostgresError(sqlState: nil, message: "column \(column): not JSON of \(T.self): \(error)")
        }
    }

    private func raw(_ column: String) throws -> String? {
        guard let i = index[column] else {
            throw PostgresError(sqlState: nil, message: "no column \(column) in the result (columns: \(index.sorted { $0.value < $1.value }.map(\.key).joined(separator: ", ")))")
        }
        return values[i]
    }

    private func parse<T: PostgresDecodable>(_ text: String, _ column: String) throws -> T {
        guard let v = T(postgresText: text) else {
            throw PostgresError(sqlState: nil, message: "column \(column) = \(text.prefix(60)): not a \(T.self)")
        }
        return v
    }
}

extension PostgresRows {
    /// The rows, decodable by column name.
    public var typed: [PostgresRow] {
        let index = Dictionary(columns.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        return rows.map { PostgresRow(index: index, values: $0) }
    }

    /// The only row; throws when there is none.
    public func single() throws -> PostgresRow {
        guard let first = typed.first else { throw PostgresError(sqlState: nil, message: "the query returned no row") }
        return first
    }
}

extension PostgresConnection {
    /// Runs a query built by interpolation (parameters bound, never spliced).
    @discardableResult
    public func query(_ query: PostgresQuery) throws -> PostgresRows { try execute(query.sql, query.bindings) }
}
