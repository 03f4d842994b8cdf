import Foundation

/// A TOML value of the subset newsd's configuration uses.
public enum TOMLValue: Equatable, Sendable, CustomStringConvertible {
    case string(String)
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case array([TOMLValue])

    /// The value as written in TOML.
    public var description: String {
        switch self {
        case let .string(s): return "\"\(s)\""
        case let .integer(i): return "\(i)"
        case let .float(d): return "\(d)"
        case let .bool(b): return "\(b)"
        case let .array(a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
        }
    }
}

/// A small TOML reader for configuration files: `[section]` and `[section.sub]` headers,
/// `key = value` with basic and literal strings, integers (with `_`), floats, booleans and
/// single-line or multi-line arrays, and `#` comments. Keys come back as `section.key` paths.
/// Errors give the line number. (TOML over YAML: no indentation traps, unambiguous types,
/// comments, and systemd-style operators already know INI-like files.)
public enum TOML {
    /// Parses `text` into a flat map of dotted keys.
    public static func parse(_ text: String, source: String = "config") throws -> [String: TOMLValue] {
        var result: [String: TOMLValue] = [:]
        var section = ""
        let lines = text.components(separatedBy: "\n")
        var i = 0
        while i < lines.count {
            let lineNumber = i + 1
            var line = stripComment(lines[i]).trimmingCharacters(in: .whitespaces)
            i += 1
            if line.isEmpty { continue }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), !line.hasPrefix("[[") else {
                    throw CoreError("\(source):\(lineNumber): bad section header \(line) (arrays of tables are not supported)")
                }
                section = String(line.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
                guard !section.isEmpty, section.allSatisfy({ $0.isLetter || $0.isNumber || "_-.".contains($0) }) else {
                    throw CoreError("\(source):\(lineNumber): bad section name [\(section)]")
                }
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { throw CoreError("\(source):\(lineNumber): expected key = value, got \(line)") }
            var key = line[..<eq].trimmingCharacters(in: .whitespaces)
            if key.hasPrefix("\""), key.hasSuffix("\""), key.count >= 2 { key = String(key.dropFirst().dropLast()) }
            guard !key.isEmpty else { throw CoreError("\(source):\(lineNumber): empty key") }
            var raw = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            // Multi-line arrays: keep reading until the brackets balance.
            while raw.hasPrefix("[") && bracketDepth(raw) > 0 && i < lines.count {
                line = stripComment(lines[i]).trimmingCharacters(in: .whitespaces)
                raw += " " + line
                i += 1
            }
            let path = section.isEmpty ? key : section + "." + key
            guard result[path] == nil else { throw CoreError("\(source):\(lineNumber): key \(path) defined twice") }
            var scanner = ValueScanner(text: Array(raw.unicodeScalars), source: source, line: lineNumber)
            let value = try scanner.value()
            scanner.skipSpace()
            guard scanner.atEnd else { throw CoreError("\(source):\(lineNumber): unexpected text after the value of \(path)") }
            result[path] = value
        }
        return result
    }

    private static func stripComment(_ line: String) -> String {
        var inBasic = false, inLiteral = false, escaped = false
        var out = ""
        for c in line {
            if escaped { escaped = false; out.append(c); continue }
            if inBasic && c == "\\" { escaped = true; out.append(c); continue }
            if c == "\"" && !inLiteral { inBasic.toggle() }
            if c == "'" && !inBasic { inLiteral.toggle() }
            if c == "#" && !inBasic && !inLiteral { break }
            out.append(c)
        }
        return out
    }

    private static func bracketDepth(_ s: String) -> Int {
        var depth = 0, inString = false
        for c in s { if c == "\"" { inString.toggle() }; if !inString { if c == "[" { depth += 1 }; if c == "]" { depth -= 1 } } }
        return depth
    }

    private struct ValueScanner {
        let text: [Unicode.Scalar]
        let source: String
        let line: Int
        var i = 0
        init(text: [Unicode.Scalar], source: String, line: Int) { self.text = text; self.source = source; self.line = line }

        var atEnd: Bool { i >= text.count }
        mutating func skipSpace() { while i < text.count, text[i] == " " || text[i] == "\t" { i += 1 } }
        func fail(_ m: String) -> CoreError { CoreError("\(source):\(line): \(m)") }

        mutating func value() throws -> TOMLValue {
            skipSpace()
            guard i < text.count else { throw fail("missing value") }
            switch text[i] {
            case "\"":
                i += 1
                var s = String.UnicodeScalarView()
                while i < text.count, text[i] != "\"" {
                    if text[i] == "\\" {
                        i += 1
                        guard i < text.count else { break }
                        switch text[i] {
                        case "n": s.append("\n"); case "t": s.append("\t"); case "r": s.append("\r")
                        case "\\": s.append("\\"); case "\"": s.append("\"")
                        case "u":
                            let hex = String(String.UnicodeScalarView(text[(i + 1)..<min(text.count, i + 5)]))
                            guard let v = UInt32(hex, radix: 16), let u = Unicode.Scalar(v) else { throw fail("bad \\u escape") }
                            s.append(u); i += 4
                        default: throw fail("unknown escape \\\(text[i])")
                        }
                    } else { s.append(text[i]) }
                    i += 1
                }
                guard i < text.count else { throw fail("unterminated string") }
                i += 1
                return .string(String(s))
            case "'":
                i += 1
                let start = i
                while i < text.count, text[i] != "'" { i += 1 }
                guard i < text.count else { throw fail("unterminated string") }
                defer { i += 1 }
                return .string(String(String.UnicodeScalarView(text[start..<i])))
            case "[":
                i += 1
                var items: [TOMLValue] = []
                while true {
                    skipSpace()
                    guard i < text.count else { throw fail("unterminated array") }
                    if text[i] == "]" { i += 1; return .array(items) }
                    items.append(try value())
                    skipSpace()
                    if i < text.count, text[i] == "," { i += 1 }
                }
            default:
                let start = i
                while i < text.count, !(text[i] == "," || text[i] == "]" || text[i] == " " || text[i] == "\t") { i += 1 }
                let word = String(String.UnicodeScalarView(text[start..<i]))
                if word == "true" { return .bool(true) }
                if word == "false" { return .bool(false) }
                let digits = word.replacingOccurrences(of: "_", with: "")
                if let n = Int(digits) { return .integer(n) }
                if let d = Double(digits), !digits.lowercased().contains("n") { return .float(d) }
                throw fail("cannot read value \(word) (strings need quotes)")
            }
        }
    }
}
