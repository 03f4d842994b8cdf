import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import NewsdSystem

/// Secret values known to this process (database passwords, API keys, SASL passwords). Every log
/// line passes through `scrub` before it is written, so a secret that slips into an error message
/// (a driver quoting its connection string, a URL with userinfo) is still never logged.
public enum SecretScrubber {
    private static let secrets = LockedValue<[String]>([])

    /// Adds secret values (empty ones and very short ones, which would blank out ordinary words,
    /// are ignored; those are refused by configuration anyway).
    public static func register(_ values: [String]) {
        let fresh = values.filter { $0.count >= 4 }
        guard !fresh.isEmpty else { return }
        secrets.withLock { s in
            s = Array(Set(s + fresh)).sorted { $0.count > $1.count }   // longest first: no partial leftovers
        }
    }

    /// The secrets of a configuration and its environment: the password of `postgres.url`,
    /// `PGPASSWORD`, `kafka.properties.sasl.password`, and every `NEWSD_*` credential
    /// (`TEACHER_API_KEY`, `KAFKA_SASL_PASSWORD`, from the environment or the credentials file).
    public static func register(configuration c: NewsdConfiguration, environment: [String: String] = ProcessInfo.processInfo.environment) {
        var values: [String] = []
        if let url = URLComponents(string: c.postgres.url) {
            values += [url.password, url.percentEncodedPassword].compactMap { $0 }   // as written and decoded
        }
        for pair in c.postgres.url.split(separator: "&") + c.postgres.url.split(separator: " ") where pair.contains("password=") {
            values.append(String(pair.split(separator: "=", maxSplits: 1).last ?? ""))
        }
        if let p = environment["PGPASSWORD"] { values.append(p) }
        for (k, v) in c.kafka.properties where k.contains("password") || k.contains("secret") { values.append(v) }
        for name in ["TEACHER_API_KEY", "KAFKA_SASL_PASSWORD", "POSTGRES_PASSWORD"] {
            if let v = Secrets.value(name, environment: environment) { values.append(v) }
        }
        register(values)
    }

    /// `text` with every known secret replaced by `***`.
    public static func scrub(_ text: String) -> String {
        let list = secrets.value
        guard !list.isEmpty else { return text }
        var out = text
        for s in list where out.contains(s) { out = out.replacingOccurrences(of: s, with: "***") }
        return out
    }
}

/// A swift-log handler writing one structured line per event to standard error: logfmt
/// (`ts=2026-12-01T06:50:00.123Z level=info logger=newsd msg="partitions assigned" batch=12`) or
/// one JSON object per line. Metadata keys are sorted, so lines diff well. Secrets are scrubbed
/// (see `SecretScrubber`). The level is shared by all loggers and can change while running
/// (SIGHUP reload).
public struct StructuredLogHandler: LogHandler {
    /// The level in force for every logger of the process.
    public static let level = LockedValue<Logger.Level>(.info)
    private static let output = LockedValue<Int32>(2)

    private let label: String
    private let format: LogFormat
    /// This logger's metadata.
    public var metadata: Logger.Metadata = [:]
    /// Where lines go (tests read them from a pipe).
    private let write: @Sendable (String) -> Void

    /// A handler for logger `label`.
    public init(label: String, format: LogFormat, write: @escaping @Sendable (String) -> Void = StructuredLogHandler.standardError) {
        self.label = label
        self.format = format
        self.write = write
    }

    /// Writes a line to file descriptor 2 in one `write` call (lines of different threads never
    /// interleave).
    public static let standardError: @Sendable (String) -> Void = { line in
        var bytes = Array(line.utf8)
        bytes.append(10)
        output.withLock { fd in
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                offset += n
            }
        }
    }

    /// A level set on one logger (a library quietened to warnings): it can make that logger
    /// quieter than the process level, never louder.
    private var localLevel: Logger.Level?

    /// The level in force for this logger: the process level (`level`, reloadable), or this
    /// logger's own when that is higher. Setting it affects this logger only.
    public var logLevel: Logger.Level {
        get { max(localLevel ?? .trace, Self.level.value) }
        set { localLevel = newValue }
    }

    /// Metadata by key.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Formats and writes one event.
    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        let line = Self.format(format, time: Date(), level: event.level, label: label, message: "\(event.message)", fields: fields)
        write(SecretScrubber.scrub(line))
    }

    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true, timeZone: .gmt)

    /// One line, without its newline (pure; tested).
    public static func format(_ format: LogFormat, time: Date, level: Logger.Level, label: String, message: String, fields: Logger.Metadata) -> String {
        let ts = time.formatted(timeFormat)
        let sorted = fields.sorted { $0.key < $1.key }
        switch format {
        case .logfmt:
            var out = "ts=\(ts) level=\(level) logger=\(logfmtValue(label)) msg=\(logfmtValue(message))"
            for (k, v) in sorted { out += " \(logfmtKey(k))=\(logfmtValue("\(v)"))" }
            return out
        case .json:
            var object: [(String, String)] = [("ts", ts), ("level", "\(level)"), ("logger", label), ("msg", message)]
            object += sorted.map { ($0.key, "\($0.value)") }
            return "{" + object.map { "\(jsonString($0.0)):\(jsonString($0.1))" }.joined(separator: ",") + "}"
        }
    }

    /// A logfmt value: bare when it has no space, quote, `=` or control character; else quoted
    /// with `\"`, `\\`, `\n`, `\t` escapes.
    static func logfmtValue(_ v: String) -> String {
        let needsQuotes = v.isEmpty || v.unicodeScalars.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7F }
        return needsQuotes ? quoted(v) : v
    }

    /// A logfmt key: characters other than letters, digits, `_`, `.` and `-` become `_`.
    static func logfmtKey(_ k: String) -> String {
        String(k.unicodeScalars.map { CharacterSet.alphanumerics.contains($0) || $0 == "_" || $0 == "." || $0 == "-" ? Character($0) : "_" })
    }

    /// A JSON string literal (also the quoted form of a logfmt value: the same escapes).
    static func jsonString(_ v: String) -> String { quoted(v) }

    /// `v` in double quotes with `\"`, `\\`, `\n`, `\r`, `\t` and `\uXXXX` for other control
    /// characters.
    static func quoted(_ v: String) -> String {
        var out = "\""
        for c in v.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default: if c.value < 0x20 || c.value == 0x7F { out += String(format: "\\u%04x", c.value) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + "\""
    }

    /// Installs this handler for the process at `level` in `format`.
    public static func bootstrap(level: LogLevel, format: LogFormat) {
        Self.level.withLock { $0 = Logger.Level(rawValue: level.rawValue) ?? .info }
        LoggingSystem.bootstrap { label in StructuredLogHandler(label: label, format: format) }
    }
}
