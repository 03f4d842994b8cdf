import Foundation
import NewsdHTTP
import NewsdPostgres
import NewsdSystem
import TOMLKit

/// A bad configuration: the key (dotted TOML path or environment variable), the value as given,
/// and why it is wrong. Never retriable: start-up stops with it.
public struct ConfigurationError: Error, CustomStringConvertible, Equatable, Sendable, RetryClassifiable {
    /// `key = value: reason`, or a parse error with its line.
    public var description: String
    /// Always false: waiting does not fix a configuration.
    public var isRetriable: Bool { false }
    /// An error with this text.
    public init(_ description: String) { self.description = description }
    /// `key = value: reason`.
    public init(key: String, value: String, reason: String) { description = "\(key) = \(value): \(reason)" }
}

/// A duration in seconds, written as a number in TOML (`lease_seconds = 300`) and used as a
/// `Duration` in code.
public struct Seconds: Sendable, Equatable, Comparable, Codable, ExpressibleByFloatLiteral, ExpressibleByIntegerLiteral, CustomStringConvertible {
    /// The number of seconds.
    public var value: Double
    /// `value` seconds.
    public init(_ value: Double) { self.value = value }
    /// A literal number of seconds.
    public init(floatLiteral value: Double) { self.value = value }
    /// A literal number of seconds.
    public init(integerLiteral value: Int) { self.value = Double(value) }
    /// As a `Duration`.
    public var duration: Duration { .nanoseconds(Int64((value * 1e9).rounded())) }
    /// Nanoseconds, for `Task.sleep(nanoseconds:)`.
    public var nanoseconds: UInt64 { UInt64((value * 1e9).rounded()) }
    /// Decodes a number.
    public init(from decoder: Decoder) throws { value = try decoder.singleValueContainer().decode(Double.self) }
    /// Encodes a number.
    public func encode(to encoder: Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(value) }
    /// Orders by length.
    public static func < (a: Seconds, b: Seconds) -> Bool { a.value < b.value }
    /// The number, as in the file.
    public var description: String { "\(value)" }
}

/// A closed set of configuration words: decoding anything else fails with the allowed values.
public protocol ConfigurationChoice: RawRepresentable<String>, CaseIterable, Codable, Sendable, CustomStringConvertible {}

extension ConfigurationChoice {
    /// Decodes one of the allowed words, else fails naming them.
    public init(from decoder: Decoder) throws {
        let raw = try decoder.singleValueContainer().decode(String.self)
        guard let value = Self(rawValue: raw) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "must be \(Self.allowedWords)"))
        }
        self = value
    }
    /// Encodes the word.
    public func encode(to encoder: Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(rawValue) }
    /// The word.
    public var description: String { rawValue }
    /// "a, b or c".
    public static var allowedWords: String {
        let words = allCases.map(\.rawValue)
        return words.count < 2 ? words.joined() : words.dropLast().joined(separator: ", ") + " or " + words.last!
    }
}

/// Where a partition with no stored offset starts.
public enum OffsetReset: String, ConfigurationChoice { case earliest, latest }
/// How the teacher's items are chosen.
public enum SelectionStrategy: String, ConfigurationChoice {
    /// Margin (top-1 minus top-2 probability) below `margin_threshold`.
    case margin
    /// Entropy (nats) above `entropy_threshold`.
    case entropy
    /// The least certain items by margin, up to `top_k` per `window_seconds`.
    case topK = "top_k"
    /// Uniformly random items at `max_share` of traffic (the baseline uncertainty sampling beats).
    case random
}
/// Where the trainer runs.
public enum TrainerMode: String, ConfigurationChoice {
    /// Inside `newsd run`.
    case daemon
    /// Only in `newsd trainer`.
    case separate
    /// Nowhere.
    case off
}
/// What happens to a message naming a company that is not in the portfolio.
public enum UnknownCompanyPolicy: String, ConfigurationChoice {
    /// The unknown id is dropped (and counted); the message is stored.
    case drop
    /// The message goes to `rejected_messages`.
    case reject
}
/// swift-log's levels.
public enum LogLevel: String, ConfigurationChoice { case trace, debug, info, notice, warning, error, critical }
/// How log lines are written.
public enum LogFormat: String, ConfigurationChoice {
    /// `ts=... level=info msg="..." key=value`.
    case logfmt
    /// One JSON object per line.
    case json
}

extension NewsdConfiguration {
    /// `NEWSD_*` variables that are not configuration keys: secrets, tool and test settings.
    public static let otherEnvironmentVariables: Set<String> = [
        "NEWSD_TEACHER_API_KEY", "NEWSD_KAFKA_SASL_PASSWORD", "NEWSD_POSTGRES_PASSWORD", "NEWSD_CREDENTIALS_FILE",
        "NEWSD_WEBHOOK_SECRET", "NEWSD_BASE_MODEL_DIR", "NEWSD_STATS_FILE", "NEWSD_VECTOR_KERNELS", "NEWSD_PG_PORT", "NEWSD_BINARY",
    ]

    /// Loads a TOML file (if given), then applies `NEWSD_*` environment overrides, then validates.
    /// Every error names the key, the value and the reason: an unknown key or table, a duplicate
    /// table or key, a value of the wrong type, an unknown `NEWSD_*` variable, a value out of range.
    /// `requireModel: false` is for tools that serve no model (`newsd label`, `newsd teacher`).
    public static func load(file: String?, environment: [String: String] = ProcessInfo.processInfo.environment,
                            requireModel: Bool = true) throws -> NewsdConfiguration {
        var text: String?
        if let file {
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                throw ConfigurationError("cannot read configuration \(file): \(error.localizedDescription)")
            }
        }
        return try load(toml: text, source: file ?? "config", environment: environment, requireModel: requireModel)
    }

    /// Loads TOML text (nil: defaults only); `source` names it in errors. See `load(file:...)`.
    public static func load(toml text: String?, source: String, environment: [String: String], requireModel: Bool = true) throws -> NewsdConfiguration {
        var tree = try ConfigurationTree(NewsdConfiguration())
        if let text {
            try checkTableHeaders(text, source: source)
            let table: TOMLTable
            do { table = try TOMLTable(string: text) } catch let e as TOMLParseError {
                throw ConfigurationError("\(source):\(e.source.begin.line):\(e.source.begin.column): \(e.description)")
            }
            try tree.overlay(table, source: source)
        }
        try tree.overlay(environment: environment)
        let config: NewsdConfiguration = try tree.decode()
        try config.validate(requireModel: requireModel)
        return config
    }

    /// toml++ (inside TOMLKit) asserts, and in a release build assumes, that a table header's key
    /// starts with a key character or a quote: `[= x]` aborted the process (found by
    /// scripts/fuzz.sh). Every line that could start a header (after any white space or byte-order
    /// mark) is checked here first and refused with its line. To stay on the safe side this does
    /// not try to tell a header from a line of a multi-line string or nested array: newsd's
    /// configuration has neither.
    static func checkTableHeaders(_ text: String, source: String) throws {
        // A configuration file is text: control characters (NUL included) are refused outright.
        if let bad = text.unicodeScalars.first(where: { $0.properties.generalCategory == .control && !"\t\n\r".unicodeScalars.contains($0) }) {
            let line = text.unicodeScalars.prefix { $0 != bad }.filter { $0 == "\n" }.count + 1
            throw ConfigurationError("\(source):\(line): control character U+\(String(format: "%04X", bad.value)) in the configuration")
        }
        func isSpace(_ s: Unicode.Scalar) -> Bool { s != "\n" && (s.properties.isWhitespace || s == "\u{FEFF}") }
        // Split on scalars, not Characters: "\r\n" is one Character and would hide the line break.
        for (i, raw) in text.unicodeScalars.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var rest = raw.drop(while: isSpace)
            guard rest.first == "[" else { continue }
            rest = rest.dropFirst()
            if rest.first == "[" { rest = rest.dropFirst() }
            // Inside the brackets toml++ skips only spaces and tabs; anything else must be a key.
            rest = rest.drop { $0 == " " || $0 == "\t" }
            guard let first = rest.first, !first.properties.isWhitespace else {
                throw ConfigurationError("\(source):\(i + 1): a table header must name its table on the same line")
            }
            let keyStart = (first.isASCII && (first.properties.isAlphabetic || ("0"..."9").contains(first))) || "_-\"'".unicodeScalars.contains(first)
            if !keyStart {
                throw ConfigurationError("\(source):\(i + 1): a table header must start with a key (a letter, digit, _ or -, or a quote), got \(String(String.UnicodeScalarView(raw.prefix(40))))")
            }
        }
    }

    /// Every configuration key as a dotted path (`kafka.brokers`, ...), in file order.
    public static var keyPaths: [String] { (try? ConfigurationTree(NewsdConfiguration()).leafPaths()) ?? [] }
}

/// The configuration as a tree of plain values, keyed as in TOML (snake case). Defaults come from
/// encoding `NewsdConfiguration()` (defined once, in the type); the file and the environment are
/// laid over them key by key (an unknown key is an error, not ignored); the result is decoded back
/// into the type, whose decoders check types and closed sets.
struct ConfigurationTree {
    typealias Value = JSONValue

    /// Tables whose keys are free-form (passed through, not checked against the type).
    static let freeFormTables: Set<String> = ["kafka.properties", companyOverrides]
    /// Per-company detector overrides: a table of tables keyed by company id.
    static let companyOverrides = "alerts.companies"

    /// The tree in Swift's property names (camel case).
    private var root: [String: Value]
    /// Where each leaf was set (for error messages): path -> "file" or "NEWSD_X".
    private var origins: [String: String] = [:]

    init(_ defaults: NewsdConfiguration) throws {
        let data = try JSONEncoder().encode(defaults)
        guard case let .object(t) = try JSONDecoder().decode(Value.self, from: data) else { throw ConfigurationError("configuration defaults are not a table") }
        root = t
    }

    /// `groupID` -> `group_id`, `dailyBudgetUSD` -> `daily_budget_usd`, `f1Tolerance` -> `f1_tolerance`.
    static func snakeCase(_ name: String) -> String {
        let chars = Array(name)
        var out = ""
        for (i, c) in chars.enumerated() {
            if c.isUppercase, i > 0 {
                let prev = chars[i - 1]
                let nextIsLower = i + 1 < chars.count && chars[i + 1].isLowercase
                if prev.isLowercase || prev.isNumber || (prev.isUppercase && nextIsLower) { out.append("_") }
            }
            out.append(Character(c.lowercased()))
        }
        return out
    }

    /// The camel-case name in `table` whose snake case is `key`.
    private static func property(_ key: String, in table: [String: Value]) -> String? {
        table.keys.first { snakeCase($0) == key }
    }

    /// Lays a parsed TOML document over the tree.
    mutating func overlay(_ table: TOMLTable, source: String) throws {
        var tree = root
        try Self.overlay(table, into: &tree, path: "", source: source, origins: &origins)
        root = tree
    }

    private static func overlay(_ table: TOMLTable, into node: inout [String: Value], path: String, source: String,
                                origins: inout [String: String]) throws {
        for (key, value) in table {
            let keyPath = path.isEmpty ? key : path + "." + key
            if path == Self.companyOverrides {
                // `[alerts.companies.<id>]`: company ids are free, their keys are checked by validate().
                guard let sub = value.table else {
                    throw ConfigurationError(key: keyPath, value: "\(value)", reason: "expected a table [\(keyPath)] of detector parameters")
                }
                var overrides: [String: Value] = [:]
                for (k, v) in sub {
                    guard let d = v.double ?? v.int.map(Double.init) else {
                        throw ConfigurationError(key: keyPath + "." + k, value: "\(v)", reason: "expected a number")
                    }
                    overrides[k] = .float(d)
                }
                node[key] = .object(overrides)
                continue
            }
            if Self.freeFormTables.contains(path) {
                guard let s = value.string else {
                    throw ConfigurationError(key: keyPath, value: "\(value)", reason: "librdkafka properties are strings")
                }
                node[key] = .string(s)
                continue
            }
            guard let name = Self.property(key, in: node) else {
                let known = node.keys.map(Self.snakeCase).sorted().joined(separator: ", ")
                throw ConfigurationError("unknown configuration key \(keyPath) in \(source) (known\(path.isEmpty ? " tables" : " in [\(path)]"): \(known))")
            }
            if case var .object(sub) = node[name]! {
                guard let subTable = value.table else {
                    throw ConfigurationError(key: keyPath, value: "\(value)", reason: "expected a table [\(keyPath)]")
                }
                try overlay(subTable, into: &sub, path: keyPath, source: source, origins: &origins)
                node[name] = .object(sub)
            } else {
                node[name] = try Self.conform(try Self.value(of: value, key: keyPath), to: node[name]!, key: keyPath)
                origins[keyPath] = source
            }
        }
    }

    private static func value(of v: TOMLValueConvertible, key: String) throws -> Value {
        switch v.type {
        case .string: return .string(v.string!)
        case .int: return .integer(v.int!)
        case .double: return .float(v.double!)
        case .bool: return .bool(v.bool!)
        case .array: return .array(try v.array!.map { try value(of: $0, key: key) })
        default: throw ConfigurationError(key: key, value: "\(v)", reason: "a \(v.type) is not a value newsd takes here")
        }
    }

    /// `given` checked against the type of the default it replaces (the decoder's own errors do
    /// not always name the key): a whole float for an integer key becomes the integer.
    static func conform(_ given: Value, to def: Value, key: String) throws -> Value {
        func bad(_ reason: String) -> ConfigurationError { ConfigurationError(key: key, value: text(given), reason: reason) }
        switch (def, given) {
        case (.integer, .integer), (.float, .float), (.float, .integer), (.string, .string), (.bool, .bool): return given
        case (.integer, .float(let d)):
            // A whole default (`5`) may be a Double key; the type decides (probed once here).
            if d.rounded() == d, abs(d) < 9e15 { return .integer(Int(d)) }
            if integerKeys.contains(key) { throw bad("expected an integer") }
            return given
        case (.integer, _): throw bad(integerKeys.contains(key) ? "expected an integer" : "expected a number")
        case (.float, _): throw bad("expected a number")
        case (.bool, _): throw bad("expected true or false")
        case (.string, _): throw bad("expected a string (in quotes)")
        case (.array(let defaults), .array(let items)):
            guard let element = defaults.first else { return given }
            return .array(try items.map { try conform($0, to: element, key: key) })
        case (.array, _): throw bad("expected an array")
        default: return given
        }
    }

    /// Keys whose Swift type is an integer: a fractional number in them is refused by name (the
    /// decoder's own error for it names no key). Found by decoding the defaults with each whole
    /// number leaf set to 0.5.
    static let integerKeys: Set<String> = {
        guard let tree = try? ConfigurationTree(NewsdConfiguration()) else { return [] }
        var keys = Set<String>()
        for path in tree.leafPaths() {
            guard case .integer = try? tree.leaf(path) else { continue }
            var probe = tree
            try? probe.setLeaf(path, .float(0.5))
            if (try? probe.decode() as NewsdConfiguration) == nil { keys.insert(path) }
        }
        return keys
    }()

    /// Every leaf as a dotted snake-case path.
    func leafPaths() -> [String] {
        var out: [String] = []
        func walk(_ t: [String: Value], _ path: String) {
            for (k, v) in t.sorted(by: { $0.key < $1.key }) {
                let p = path.isEmpty ? Self.snakeCase(k) : path + "." + Self.snakeCase(k)
                if case let .object(sub) = v, !Self.freeFormTables.contains(p) { walk(sub, p) } else if !Self.freeFormTables.contains(p) { out.append(p) }
            }
        }
        walk(root, "")
        return out
    }

    /// Applies `NEWSD_<SECTION>_<KEY>` variables; an unknown `NEWSD_*` variable is an error.
    mutating func overlay(environment: [String: String]) throws {
        let paths = leafPaths()
        let byVariable = Dictionary(uniqueKeysWithValues: paths.map { ("NEWSD_" + $0.uppercased().replacingOccurrences(of: ".", with: "_"), $0) })
        for (variable, raw) in environment.sorted(by: { $0.key < $1.key }) where variable.hasPrefix("NEWSD_") {
            guard let path = byVariable[variable] else {
                if NewsdConfiguration.otherEnvironmentVariables.contains(variable) || variable.hasPrefix("NEWSD_TEST_") { continue }
                let near = byVariable.keys.min { editDistance($0, variable) < editDistance($1, variable) } ?? ""
                throw ConfigurationError("unknown environment variable \(variable)=\(raw): not a configuration key (did you mean \(near)?)")
            }
            let current = try leaf(path)
            let trimmed = raw.trimmingCharacters(in: .whitespaces)
            let value: Value
            switch current {
            case .integer:
                if let i = Int(trimmed) { value = .integer(i) } else if let d = Double(trimmed), d.isFinite { value = .float(d) } else {
                    throw ConfigurationError(key: path, value: raw, reason: "expected a number")
                }
            case .float:
                guard let d = Double(trimmed) else { throw ConfigurationError(key: path, value: raw, reason: "expected a number") }
                value = .float(d)
            case .bool:
                switch trimmed.lowercased() {
                case "true", "1", "yes": value = .bool(true)
                case "false", "0", "no": value = .bool(false)
                default: throw ConfigurationError(key: path, value: raw, reason: "expected true or false")
                }
            case .array: value = .array(raw.split(separator: ",").map { .string($0.trimmingCharacters(in: .whitespaces)) })
            default: value = .string(raw)
            }
            try setLeaf(path, try Self.conform(value, to: current, key: path))
            origins[path] = variable
        }
    }

    func leaf(_ path: String) throws -> Value {
        var node = Value.object(root)
        for part in path.split(separator: ".") {
            guard case let .object(t) = node, let name = Self.property(String(part), in: t) else { throw ConfigurationError("no key \(path)") }
            node = t[name]!
        }
        return node
    }

    mutating func setLeaf(_ path: String, _ value: Value) throws {
        func set(_ t: inout [String: Value], _ parts: ArraySlice<Substring>) throws {
            guard let name = Self.property(String(parts.first!), in: t) else { throw ConfigurationError("no key \(path)") }
            if parts.count == 1 { t[name] = value; return }
            guard case var .object(sub) = t[name]! else { throw ConfigurationError("no key \(path)") }
            try set(&sub, parts.dropFirst())
            t[name] = .object(sub)
        }
        try set(&root, path.split(separator: ".")[...])
    }

    /// Decodes the tree; a type error names the key and the value given.
    func decode<T: Decodable>() throws -> T {
        let data = try JSONEncoder().encode(Value.object(root))
        do { return try JSONDecoder().decode(T.self, from: data) } catch let e as DecodingError {
            let (path, reason): ([CodingKey], String)
            switch e {
            case let .typeMismatch(type, c): (path, reason) = (c.codingPath, Self.expected(type))
            case let .valueNotFound(type, c): (path, reason) = (c.codingPath, Self.expected(type))
            case let .dataCorrupted(c): (path, reason) = (c.codingPath, c.debugDescription)
            case let .keyNotFound(k, c): (path, reason) = (c.codingPath + [k], "missing")
            @unknown default: throw ConfigurationError("configuration: \(e)")
            }
            let keyPath = path.filter { $0.intValue == nil }.map { Self.snakeCase($0.stringValue) }.joined(separator: ".")
            let given = (try? leaf(keyPath)).map { v -> String in
                if case let .string(s) = v, origins[keyPath].map({ $0.hasPrefix("NEWSD_") }) == true { return s }
                return Self.text(v)
            } ?? "?"
            throw ConfigurationError(key: keyPath, value: given, reason: reason)
        }
    }

    /// A value as written in a file.
    static func text(_ v: Value) -> String {
        switch v {
        case let .string(s): return "\"\(s)\""
        case let .integer(i): return "\(i)"
        case let .float(d): return "\(d)"
        case let .bool(b): return "\(b)"
        case .null: return "null"
        case let .array(a): return "[" + a.map(text).joined(separator: ", ") + "]"
        case let .object(t): return "{" + t.keys.sorted().joined(separator: ", ") + "}"
        }
    }

    private static func expected(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "expected an integer"
        case is Double.Type, is Seconds.Type: return "expected a number"
        case is Bool.Type: return "expected true or false"
        case is String.Type: return "expected a string (in quotes)"
        default: return "expected \(type)"
        }
    }
}

/// Levenshtein distance (for "did you mean").
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(a.count, 1) where !a.isEmpty {
        var prev = row[0]
        row[0] = i
        for j in 1...max(b.count, 1) where !b.isEmpty {
            let cur = row[j]
            row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
            prev = cur
        }
    }
    return row[b.count]
}
