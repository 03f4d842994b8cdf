import Foundation

/// JSON through `Codable` only (no string concatenation, no `[String: Any]`): sorted keys and
/// unescaped slashes, so equal values give equal text (checksums, stored JSON, logs).
public enum JSONText {
    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        e.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return e
    }()

    /// The JSON text of `value`.
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// The JSON bytes of `value`.
    public static func data<T: Encodable>(_ value: T) throws -> Data { try encoder.encode(value) }

    /// Decodes `text`.
    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try JSONDecoder().decode(type, from: Data(text.utf8))
    }
}

/// Any JSON value, decoded with `Codable`: for documents whose shape is only partly known (a
/// teacher's free-form answer, a configuration tree laid over its defaults).
public indirect enum JSONValue: Codable, Equatable, Sendable {
    case string(String), integer(Int), float(Double), bool(Bool), null, array([JSONValue]), object([String: JSONValue])

    /// Decodes whatever is there.
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .integer(i) }
        else if let d = try? c.decode(Double.self) { self = .float(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    /// Encodes it back.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case let .string(s): try c.encode(s)
        case let .integer(i): try c.encode(i)
        case let .float(d): try c.encode(d)
        case let .bool(b): try c.encode(b)
        case .null: try c.encodeNil()
        case let .array(a): try c.encode(a)
        case let .object(o): try c.encode(o)
        }
    }

    /// The string, if this is one.
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    /// The object, if this is one.
    public var object: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    /// The boolean, if this is one.
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    /// The number as an integer, if it is a whole number.
    public var int: Int? {
        switch self {
        case let .integer(i): return i
        case let .float(d) where d.rounded() == d && abs(d) < 1e15: return Int(d)
        default: return nil
        }
    }
    /// The number, if this is one.
    public var double: Double? {
        switch self { case let .integer(i): return Double(i); case let .float(d): return d; default: return nil }
    }
    /// The array, if this is one.
    public var array: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
}
