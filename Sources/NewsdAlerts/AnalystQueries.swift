import Foundation
import NewsdPostgres

/// The example queries of docs/analysts.md: each `### title` followed by a ```sql block. The
/// tests run every one against a seeded database as the analyst role; `newsd analysts queries`
/// times them (the 10-million-row benchmark).
public enum AnalystQueries {
    /// A documented query.
    public struct Query: Sendable, Equatable {
        /// The heading above it.
        public var title: String
        /// The SQL.
        public var sql: String
    }

    /// The queries of a Markdown document, in order.
    public static func parse(markdown: String) -> [Query] {
        var out: [Query] = []
        var title = "", inSQL = false, sql: [String] = []
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            if inSQL {
                if line.trimmingCharacters(in: .whitespaces) == "```" {
                    out.append(Query(title: title, sql: sql.joined(separator: "\n")))
                    inSQL = false; sql = []
                } else { sql.append(String(line)) }
            } else if line.hasPrefix("### ") {
                title = String(line.dropFirst(4))
            } else if line.trimmingCharacters(in: .whitespaces) == "```sql" {
                inSQL = true
            }
        }
        return out
    }

    /// Runs `query` `runs` times; returns the row count and the median wall time in milliseconds.
    public static func time(_ db: PostgresConnection, _ query: Query, runs: Int) throws -> (rows: Int, medianMs: Double) {
        var times: [Double] = []
        var rows = 0
        for _ in 0..<max(1, runs) {
            let start = DispatchTime.now().uptimeNanoseconds
            rows = try db.execute(query.sql).rows.count
            times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        times.sort()
        return (rows, times[times.count / 2])
    }
}
