import Foundation
import NewsdPostgres
import Testing

/// The Postgres layer on a real server: parameters are bound, never spliced; rows are decoded by
/// column name and type, and a missing or mistyped column is an error naming it (never a silent
/// zero).
@Suite("Postgres: bound interpolation and typed rows")
struct PostgresTests {
    @Test("a renamed column is an error naming the column; a NULL or a mistyped value too")
    func renamedColumnIsAnError() throws {
        let db = try PostgresConnection(try Harness.freshDatabase())
        try db.query("CREATE TABLE t (id bigint, score double precision, note text)")
        try db.query("INSERT INTO t VALUES (\(Int64(1)), \(0.5), \(Optional<String>.none))")
        let row = try db.query("SELECT id, score, note FROM t").single()
        #expect(try row.decode("id", as: Int64.self) == 1 && row.decode("score", as: Double.self) == 0.5)
        #expect(try row.decode("note", as: String?.self) == nil)
        // The schema changes under the code: the column it reads is renamed.
        try db.query("ALTER TABLE t RENAME COLUMN score TO points")
        let renamed = try db.query("SELECT * FROM t").single()
        do { _ = try renamed.decode("score", as: Double.self); Issue.record("a renamed column decoded") } catch {
            #expect("\(error)".contains("no column score") && "\(error)".contains("points"), "\(error)")
        }
        do { _ = try renamed.decode("note", as: String.self); Issue.record("NULL decoded as a value") } catch {
            #expect("\(error)".contains("column note is NULL"), "\(error)")
        }
        try db.query("UPDATE t SET note = 'abc'")
        do { _ = try db.query("SELECT note FROM t").single().decode("note", as: Int.self); Issue.record("text decoded as Int") } catch {
            #expect("\(error)".contains("column note = abc: not a Int"), "\(error)")
        }
    }

    @Test("interpolated values are bound parameters, quotes and all")
    func interpolationBinds() throws {
        let db = try PostgresConnection(try Harness.freshDatabase())
        let hostile = "x'); DROP TABLE t; --"
        let q: PostgresQuery = "SELECT \(hostile)::text AS s, \(["a\"b", "c,d"])::text[] AS a, \(Int64(7)) + 1 AS n"
        #expect(q.sql == "SELECT $1::text AS s, $2::text[] AS a, $3 + 1 AS n" && q.bindings.count == 3)
        let row = try db.query(q).single()
        #expect(try row.decode("s", as: String.self) == hostile)
        #expect(try row.decode("a", as: String.self) == #"{"a\"b","c,d"}"#)
        #expect(try row.decode("n", as: Int.self) == 8)
    }
}
