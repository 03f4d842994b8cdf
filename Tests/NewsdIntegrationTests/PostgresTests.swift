import Foundation
import NewsdDaemon
import NewsdOps
import NewsdPostgres
import NewsdSystem
import Testing

/// The Postgres layer on a real server: parameters are bound, never spliced; rows are decoded by
/// column name and type, and a missing or mistyped column is an error naming it (never a silent
/// zero).
@Suite("Postgres: bound interpolation and typed rows")
struct PostgresTests {
    @Test("a canceller stops the statement in flight from another thread; without one running it does nothing")
    func cancellerStopsTheStatementInFlight() throws {
        let db = try PostgresConnection(try Harness.freshDatabase())
        let canceller = try #require(db.canceller())
        #expect(canceller.cancel())   // nothing running: harmless
        #expect(try db.query("SELECT 1 AS one").single().decode("one", as: Int.self) == 1)
        let thread = Thread { Thread.sleep(forTimeInterval: 0.5); canceller.cancel() }
        thread.start()
        let start = Date()
        do { try db.execute("SELECT pg_sleep(60)"); Issue.record("the statement ran to its end") } catch let e as PostgresError {
            #expect(e.sqlState == "57014", "\(e)")
        }
        #expect(Date().timeIntervalSince(start) < 30)
        #expect(try db.query("SELECT 2 AS two").single().decode("two", as: Int.self) == 2)   // the connection stays usable
    }

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

/// Start-up against a database that cannot work: permanent errors fail at once with the reason,
/// and no error message carries the password.
@Suite("Postgres: permanent start-up errors and secrets")
struct PostgresStartupTests {
    var serverBase: String { String(Harness.adminURL[..<Harness.adminURL.lastIndex(of: "/")!]) }

    /// Before: a missing database was retried silently for 60 s.
    @Test("a missing database fails at once, naming it")
    func missingDatabaseFailsFast() throws {
        var c = NewsdConfiguration()
        c.postgres.url = serverBase + "/no_such_database_\(UUID().uuidString.prefix(6).lowercased())"
        let start = Date()
        do { try Daemon.withDatabase(c) { _ in }; Issue.record("connected to a missing database") } catch let e as PostgresError {
            #expect(!e.isRetriable && "\(e)".contains("does not exist"), "\(e)")
        }
        #expect(Date().timeIntervalSince(start) < 5, "took \(Date().timeIntervalSince(start)) s")
    }

    /// Before: libpq echoed a URL with a bad percent-encoding, password included, into the log.
    @Test("a malformed URL's password never appears in the error")
    func passwordIsRedacted() throws {
        let secret = "s3cr%zzet-\(UUID().uuidString.prefix(6))"
        let url = "postgresql://postgres:\(secret)@127.0.0.1:1/x"
        do { _ = try PostgresConnection(url); Issue.record("connected") } catch {
            #expect(!"\(error)".contains(secret) && !"\(error)".contains("s3cr"), "\(error)")
        }
        let keyword = "host=127.0.0.1 port=1 password='\(secret)' dbname=x connect_timeout=1"
        do { _ = try PostgresConnection(keyword); Issue.record("connected") } catch {
            #expect(!"\(error)".contains(secret), "\(error)")
        }
        #expect(Redaction.url("http://user:pa55@llm.example:8000/v1") == "http://***@llm.example:8000/v1")
    }
}
