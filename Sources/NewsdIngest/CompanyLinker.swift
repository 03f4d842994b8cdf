import Foundation
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// A portfolio company.
public struct Company: Sendable, Equatable, Codable {
    /// Stable id (used in `mentions.company_id`).
    public var id: String
    /// Display name (matched case-insensitively).
    public var name: String
    /// Other names (matched case-insensitively).
    public var aliases: [String]
    /// Ticker symbols (matched case-sensitively).
    public var tickers: [String]

    /// Creates a company.
    public init(id: String, name: String, aliases: [String] = [], tickers: [String] = []) {
        self.id = id; self.name = name; self.aliases = aliases; self.tickers = tickers
    }
}

/// The portfolio file: CSV with header `id,name,aliases,tickers`; aliases and tickers are lists
/// separated by `;`. A spreadsheet exports it as is.
public enum PortfolioFile {
    /// Reads and checks a portfolio (unique ids, non-empty names).
    public static func load(_ path: String) throws -> [Company] {
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: path))
        let id = try table.column("id"), name = try table.column("name")
        let aliases = table.header.firstIndex(of: "aliases"), tickers = table.header.firstIndex(of: "tickers")
        var seen = Set<String>()
        return try table.rows.enumerated().map { i, r in
            let c = Company(id: r[id].trimmingCharacters(in: .whitespaces), name: r[name].trimmingCharacters(in: .whitespaces),
                            aliases: aliases.map { list(r[$0]) } ?? [], tickers: tickers.map { list(r[$0]) } ?? [])
            guard !c.id.isEmpty, !c.name.isEmpty else { throw IngestError("\(path): row \(i + 1) needs an id and a name") }
            guard seen.insert(c.id).inserted else { throw IngestError("\(path): company id \(c.id) appears twice") }
            return c
        }
    }

    /// Writes a portfolio file.
    public static func csv(_ companies: [Company]) -> String {
        CSVTable(header: ["id", "name", "aliases", "tickers"],
                 rows: companies.map { [$0.id, $0.name, $0.aliases.joined(separator: ";"), $0.tickers.joined(separator: ";")] }).csvText()
    }

    private static func list(_ s: String) -> [String] {
        s.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }
}

/// How a company was found in a sentence.
public enum MatchKind: String, Sendable, Codable {
    case name, alias, ticker, message
}

/// A company found in a sentence.
public struct Mention: Sendable, Equatable, Hashable {
    /// The company's id.
    public var companyID: String
    /// How it was found.
    public var kind: MatchKind
}

/// Finds portfolio companies in text with one pass of an Aho-Corasick automaton over all names,
/// aliases and tickers (not one regex per company), accepting matches only at word boundaries.
/// Names and aliases match case-insensitively (the text is lower-cased for them); tickers match
/// case-sensitively (a second automaton over the original text), so "ON" the ticker does not
/// match "on" the word.
public final class CompanyLinker: Sendable {
    private let folded: Automaton
    private let exact: Automaton
    private let known: Set<String>

    /// Builds the automata for a portfolio.
    public init(_ companies: [Company]) {
        var foldedPatterns: [(String, Mention)] = [], exactPatterns: [(String, Mention)] = []
        for c in companies {
            foldedPatterns.append((c.name.lowercased(), Mention(companyID: c.id, kind: .name)))
            for a in c.aliases { foldedPatterns.append((a.lowercased(), Mention(companyID: c.id, kind: .alias))) }
            for t in c.tickers { exactPatterns.append((t, Mention(companyID: c.id, kind: .ticker))) }
        }
        folded = Automaton(foldedPatterns)
        exact = Automaton(exactPatterns)
        known = Set(companies.map(\.id))
    }

    /// Companies mentioned in `text`, plus those the message named (kind `message`), each once
    /// (the first kind found wins: message, then name, alias, ticker).
    public func link(_ text: String, given: [String] = []) -> [Mention] {
        var result: [Mention] = []
        var seen = Set<String>()
        for id in given where seen.insert(id).inserted { result.append(Mention(companyID: id, kind: .message)) }
        let original = Array(text.unicodeScalars)
        // Lower-casing per scalar keeps positions aligned with the original (boundaries are checked there).
        let lower = original.map { s -> Unicode.Scalar in
            let l = s.properties.lowercaseMapping.unicodeScalars
            return l.count == 1 ? l.first! : s
        }
        var found: [(Int, Mention)] = []
        for (end, m) in folded.matches(in: lower) { found.append((end, m)) }
        for (end, m) in exact.matches(in: original) { found.append((end, m)) }
        for (_, m) in found.sorted(by: { ($0.0, $0.1.kind.rawValue) < ($1.0, $1.1.kind.rawValue) }) where seen.insert(m.companyID).inserted {
            result.append(m)
        }
        return result
    }

    /// Whether an id belongs to the portfolio.
    public func isKnown(_ id: String) -> Bool { known.contains(id) }

    /// Whether a portfolio was given at all.
    public var hasCompanies: Bool { !known.isEmpty }
}

/// Aho-Corasick over Unicode scalars, reporting matches bounded by non-word characters.
final class Automaton: Sendable {
    private let next: [[Unicode.Scalar: Int]]
    private let fail: [Int]
    private let output: [[(length: Int, mention: Mention)]]

    init(_ patterns: [(String, Mention)]) {
        var next: [[Unicode.Scalar: Int]] = [[:]]
        var output: [[(Int, Mention)]] = [[]]
        for (p, m) in patterns {
            let scalars = Array(p.unicodeScalars)
            guard !scalars.isEmpty else { continue }
            var s = 0
            for c in scalars {
                if let t = next[s][c] { s = t } else {
                    next.append([:]); output.append([])
                    next[s][c] = next.count - 1
                    s = next.count - 1
                }
            }
            output[s].append((scalars.count, m))
        }
        var fail = [Int](repeating: 0, count: next.count)
        var queue = Array(next[0].values)
        var head = 0
        while head < queue.count {
            let s = queue[head]; head += 1
            for (c, t) in next[s] {
                queue.append(t)
                var f = fail[s]
                while f != 0 && next[f][c] == nil { f = fail[f] }
                let candidate = next[f][c] ?? 0
                fail[t] = candidate == t ? 0 : candidate
                output[t] += output[fail[t]]
            }
        }
        self.next = next
        self.fail = fail
        self.output = output
    }

    /// (end index, mention) of every pattern occurrence whose neighbours are not word characters.
    func matches(in text: [Unicode.Scalar]) -> [(Int, Mention)] {
        var s = 0
        var out: [(Int, Mention)] = []
        for (i, c) in text.enumerated() {
            while s != 0 && next[s][c] == nil { s = fail[s] }
            s = next[s][c] ?? 0
            for (length, m) in output[s] {
                let start = i - length + 1
                let beforeOK = start == 0 || !Self.isWord(text[start - 1]) || !Self.isWord(text[start])
                let afterOK = i + 1 >= text.count || !Self.isWord(text[i + 1]) || !Self.isWord(text[i])
                if beforeOK && afterOK { out.append((i, m)) }
            }
        }
        return out
    }

    static func isWord(_ c: Unicode.Scalar) -> Bool {
        c.properties.isAlphabetic || c.properties.numericType != nil || c == "_"
    }
}

extension PortfolioFile {
    /// Replaces the companies and aliases with the portfolio's (in one transaction).
    public static func store(_ companies: [Company], into db: PostgresConnection) throws {
        try db.transaction {
            for c in companies {
                try db.query("""
                    INSERT INTO companies (id, name, tickers, updated_at) VALUES (\(c.id), \(c.name), \(c.tickers)::text[], now())
                    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, tickers = EXCLUDED.tickers, updated_at = now()
                    """)
                try db.query("DELETE FROM company_aliases WHERE company_id = \(c.id)")
                var seen = Set<String>()
                let aliases = [(c.name, "name")] + c.aliases.map { ($0, "alias") } + c.tickers.map { ($0, "ticker") }
                for (alias, kind) in aliases where seen.insert(kind + "\u{1}" + alias).inserted {
                    try db.query("INSERT INTO company_aliases (company_id, alias, kind) VALUES (\(c.id), \(alias), \(kind))")
                }
            }
        }
    }
}
