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
