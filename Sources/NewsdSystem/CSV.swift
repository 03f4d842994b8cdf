import Foundation

/// Errors of `NewsdSystem`: files and formats (CSV), with what is wrong and where. Never
/// retriable (the input is wrong).
public struct SystemError: Error, CustomStringConvertible, Equatable, RetryClassifiable {
    /// What went wrong, with the file, line, key or value at fault.
    public var description: String
    /// Whether trying again unchanged could succeed (false: the input itself is wrong).
    public var isRetriable: Bool { false }
    /// Creates an error with a message.
    public init(_ description: String) { self.description = description }
}

/// An RFC 4180 CSV table: a header row and records (quoted fields may hold commas, quotes as
/// `""`, and newlines). Used for training data, gold sets and the teacher's recorded answers.
public struct CSVTable: Sendable {
    /// Column names from the header row.
    public var header: [String]
    /// Records, each with one field per header column.
    public var rows: [[String]]

    /// Creates a table.
    public init(header: [String], rows: [[String]]) { self.header = header; self.rows = rows }

    /// Reads a file; errors name the file and the line.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw SystemError("cannot read \(url.path): \(error.localizedDescription)") }
        guard let text = String(data: data, encoding: .utf8) else { throw SystemError("\(url.path) is not UTF-8") }
        try self.init(parsing: text, source: url.path)
    }

    /// Parses CSV text.
    public init(parsing text: String, source: String = "CSV") throws {
        var records: [[String]] = []
        var record: [String] = []
        var field = ""
        var inQuotes = false, fieldStarted = false
        var line = 1
        var it = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        func next() -> Unicode.Scalar? { if let p = pending { pending = nil; return p }; return it.next() }
        while let c = next() {
            if inQuotes {
                if c == "\"" {
                    if let n = next() {
                        if n == "\"" { field.unicodeScalars.append("\"") } else { inQuotes = false; pending = n }
                    } else { inQuotes = false }
                } else {
                    if c == "\n" { line += 1 }
                    field.unicodeScalars.append(c)
                }
                continue
            }
            switch c {
            case "\"" where !fieldStarted: inQuotes = true; fieldStarted = true
            case ",": record.append(field); field = ""; fieldStarted = false
            case "\r": continue
            case "\n":
                record.append(field); field = ""; fieldStarted = false
                if !(record.count == 1 && record[0].isEmpty) { records.append(record) }
                record = []; line += 1
            default: field.unicodeScalars.append(c); fieldStarted = true
            }
        }
        if inQuotes { throw SystemError("\(source): unterminated quoted field at end of file (line \(line))") }
        if fieldStarted || !record.isEmpty { record.append(field); records.append(record) }
        guard let header = records.first else { throw SystemError("\(source): empty file, expected a header row") }
        self.header = header
        rows = []
        for (i, r) in records.dropFirst().enumerated() {
            guard r.count == header.count else {
                throw SystemError("\(source): record \(i + 1) has \(r.count) fields, the header has \(header.count)")
            }
            rows.append(r)
        }
    }

    /// Index of a column, or an error naming the columns present.
    public func column(_ name: String) throws -> Int {
        guard let i = header.firstIndex(of: name) else {
            throw SystemError("no column \"\(name)\" (columns: \(header.joined(separator: ", ")))")
        }
        return i
    }

    /// All values of a column.
    public func values(_ name: String) throws -> [String] {
        let i = try column(name)
        return rows.map { $0[i] }
    }

    /// Serialises as CSV (fields quoted when needed).
    public func csvText() -> String {
        var out = ""
        for r in [header] + rows { out += r.map(CSVTable.quote).joined(separator: ",") + "\n" }
        return out
    }

    /// Quotes a field if it holds a comma, quote or newline.
    public static func quote(_ s: String) -> String {
        s.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" })
            ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s
    }
}
