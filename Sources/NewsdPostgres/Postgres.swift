import CLibPQ
import Foundation
import NewsdSystem

/// The one error type of `NewsdPostgres`: the SQLSTATE when the server gave one, the message, and
/// whether trying again (after reconnecting) can succeed.
public struct PostgresError: Error, CustomStringConvertible, Sendable, RetryClassifiable {
    /// Five-character SQLSTATE, or nil for client-side and connection errors.
    public var sqlState: String?
    /// The server's or libpq's message.
    public var message: String
    /// Connection lost or refused, serialization failure, deadlock, server shutting down.
    public var isRetriable: Bool

    /// Creates an error; retriability follows from the SQLSTATE class (08 connection, 40 rollback,
    /// 57P admin shutdown/crash, 53 resources) or from a lost connection, unless the failure is
    /// `permanent` (a refused password, a database that does not exist): waiting does not fix those.
    public init(sqlState: String?, message: String, connectionLost: Bool = false, permanent: Bool = false) {
        self.sqlState = sqlState
        self.message = message.trimmingCharacters(in: .whitespacesAndNewlines)
        let s = sqlState ?? ""
        isRetriable = !permanent && (connectionLost || s.hasPrefix("08") || s.hasPrefix("40") || s.hasPrefix("57P") || s.hasPrefix("53")
            || s == "57014" || s == "55P03")    // statement or lock timeout: the data is fine, try again
    }

    /// Whether libpq's connection failure is one that waiting does not fix. libpq reports no
    /// SQLSTATE for a failed connection, so the server's FATAL text is read: authentication
    /// failed (28P01/28000), no such database (3D000) or role, or a malformed connection string.
    static func isPermanentConnectFailure(_ text: String) -> Bool {
        let permanent = ["password authentication failed", "authentication failed", "does not exist", "no pg_hba.conf entry",
                         "invalid connection option", "invalid percent-encoded token", "invalid URI", "missing \"=\" after",
                         "invalid integer value", "permission denied for database", "SSL is required", "certificate"]
        let transient = ["the database system is starting up", "the database system is shutting down", "too many clients", "Connection refused",
                         "timeout expired", "could not translate host name", "No route to host", "Network is unreachable", "server closed the connection"]
        if transient.contains(where: { text.contains($0) }) { return false }
        return permanent.contains(where: { text.contains($0) })
    }

    /// The server refused the data itself (SQLSTATE class 22 data exception, 23 constraint, 54
    /// program limit such as an index entry too big): splitting a batch to find the offending row
    /// makes sense only for these, and the row is then refused, never retried.
    public var isDataError: Bool { sqlState.map { $0.hasPrefix("22") || $0.hasPrefix("23") || $0.hasPrefix("54") } ?? false }

    /// `message (SQLSTATE xxxxx)`.
    public var description: String { sqlState.map { "\(message) (SQLSTATE \($0))" } ?? message }
}

/// Rows of a query result, as text (libpq's text format), with column names.
public struct PostgresRows: Sendable {
    /// Column names.
    public var columns: [String]
    /// Values; nil is SQL NULL.
    public var rows: [[String?]]
    /// Rows affected by an INSERT/UPDATE/DELETE (from the command tag), 0 otherwise.
    public var affected: Int
}

/// Cancels the statement in flight on one connection (libpq's `PGcancel`), callable from any
/// thread, any number of times: with no statement running it does nothing. The statement then
/// fails with SQLSTATE 57014 (`query_canceled`).
public final class PostgresCanceller: @unchecked Sendable {
    private let handle: OpaquePointer
    private let lock = NSLock()

    init(_ handle: OpaquePointer) { self.handle = handle }
    deinit { PQfreeCancel(handle) }

    /// Asks the server to cancel whatever the connection is running; false if the request
    /// could not be sent (the server is gone: then nothing is running either).
    @discardableResult
    public func cancel() -> Bool {
        lock.lock(); defer { lock.unlock() }
        var message = [CChar](repeating: 0, count: 256)
        return PQcancel(handle, &message, Int32(message.count)) == 1
    }
}

extension LockedValue where Value == PostgresCanceller? {
    /// Cancels the statement in flight of the connection whose canceller is held here, on a
    /// global queue: `PQcancel` opens a connection to the server, and libpq 15 gives it no
    /// timeout, so a stop path must not wait for it (nor hold this lock meanwhile).
    public func cancelInBackground() {
        guard let canceller = value else { return }
        DispatchQueue.global().async { canceller.cancel() }
    }
}

/// One libpq connection. Not thread-safe: one thread uses it at a time. Every call blocks, so
/// callers keep it off Swift's cooperative thread pool (newsd uses dedicated threads).
public final class PostgresConnection {
    private var handle: OpaquePointer?
    /// The connection string (libpq keyword/value or URI). Never logged: it may hold a password.
    private let conninfo: String

    /// A password given apart from the connection string (`NEWSD_POSTGRES_PASSWORD`); one in the
    /// string wins.
    private let password: String?

    /// Connects; the error says why not (host, authentication, database).
    public init(_ conninfo: String, password: String? = nil) throws {
        self.conninfo = conninfo
        self.password = password ?? ProcessInfo.processInfo.environment["NEWSD_POSTGRES_PASSWORD"]
        try connect()
    }

    deinit { if let handle { PQfinish(handle) } }

    private func connect() throws {
        if let handle { PQfinish(handle) }
        // Parameters are processed in order and the connection string (expanded in place of
        // dbname) overrides what comes before it: a 10 s connect timeout (without one a host
        // that drops packets blocks a connect for minutes) and the separately given password
        // are defaults the string may override. No environment variable is set at run time.
        var keywords = ["connect_timeout", "application_name"], values = ["10", "newsd"]
        if let password, !password.isEmpty { keywords.append("password"); values.append(password) }
        keywords.append("dbname"); values.append(conninfo)
        handle = withCStrings(keywords) { k in withCStrings(values) { v in PQconnectdbParams(k, v, 1) } }
        guard let h = handle, PQstatus(h) == CONNECTION_OK else {
            let raw = handle.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let h = handle { PQfinish(h) }
            handle = nil
            let message = Redaction.postgres(raw, conninfo: conninfo, password: password)
            throw PostgresError(sqlState: nil, message: "cannot connect to PostgreSQL: \(message)", connectionLost: true,
                                permanent: PostgresError.isPermanentConnectFailure(raw))
        }
    }

    /// Checks a connection string's syntax without connecting (libpq's own parser); the error
    /// never carries the password.
    public static func validate(_ conninfo: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(conninfo, &message) else {
            let text = message.map { String(cString: $0) } ?? "invalid connection string"
            if let message { PQfreemem(message) }
            throw PostgresError(sqlState: nil, message: Redaction.postgres(text, conninfo: conninfo), permanent: true)
        }
        PQconninfoFree(options)
    }

    /// A handle that cancels the statement this connection is running, from any thread: a
    /// service's stop calls it so that a long query (a backfill chunk on a cold table, a lock
    /// wait) cannot hold the shutdown past its bound. Valid for this connection until it
    /// reconnects; nil when not connected.
    public func canceller() -> PostgresCanceller? {
        guard let h = handle, let cancel = PQgetCancel(h) else { return nil }
        return PostgresCanceller(cancel)
    }

    /// Whether the connection is usable.
    public var isConnected: Bool { handle.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// Reconnects (after a lost connection).
    public func reconnect() throws { try connect() }

    /// Runs one statement with `$1...` parameters sent separately from the SQL text (never spliced).
    @discardableResult
    public func execute(_ sql: String, _ parameters: [String?] = []) throws -> PostgresRows {
        guard let h = handle else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        let result: OpaquePointer? = withCStrings(parameters) { values in
            PQexecParams(h, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return try consume(result, sql: sql)
    }

    /// Runs several statements without parameters (migrations).
    public func executeScript(_ sql: String) throws {
        guard let h = handle else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        _ = try consume(PQexec(h, sql), sql: "script")
    }

    /// `COPY ... FROM STDIN` with `data` in COPY text format; returns rows copied.
    @discardableResult
    public func copyIn(_ sql: String, data: String) throws -> Int {
        guard let h = handle else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        let start = PQexec(h, sql)
        guard PQresultStatus(start) == PGRES_COPY_IN else { _ = try consume(start, sql: sql); throw error(sql) }
        PQclear(start)
        var bytes = Array(data.utf8)
        let sent = bytes.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(b.count, 1)) { PQputCopyData(h, $0, Int32(b.count)) }
        }
        guard sent == 1, PQputCopyEnd(h, nil) == 1 else { throw error(sql) }
        var affected = 0
        while let r = PQgetResult(h) {
            let rows = try consume(r, sql: sql)
            affected += rows.affected
        }
        return affected
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            if isConnected { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// The underlying socket, for waiting on LISTEN notifications.
    public var socket: Int32 { handle.map { PQsocket($0) } ?? -1 }

    /// Reads pending notifications (after the socket became readable): (channel, payload) pairs.
    public func notifications() throws -> [(channel: String, payload: String)] {
        guard let h = handle else { throw PostgresError(sqlState: nil, message: "not connected", connectionLost: true) }
        guard PQconsumeInput(h) == 1 else { throw error("LISTEN") }
        var out: [(String, String)] = []
        while let n = PQnotifies(h) {
            out.append((String(cString: n.pointee.relname), String(cString: n.pointee.extra)))
            PQfreemem(n)
        }
        return out
    }

    private func error(_ context: String) -> PostgresError {
        let message = handle.map { String(cString: PQerrorMessage($0)) } ?? "not connected"
        return PostgresError(sqlState: nil, message: message, connectionLost: !isConnected)
    }

    private func consume(_ result: OpaquePointer?, sql: String) throws -> PostgresRows {
        guard let r = result else { throw error(sql) }
        defer { PQclear(r) }
        let status = PQresultStatus(r)
        switch status {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_COPY_IN:
            let nCols = Int(PQnfields(r)), nRows = Int(PQntuples(r))
            let columns = (0..<nCols).map { String(cString: PQfname(r, Int32($0))) }
            var rows: [[String?]] = []
            rows.reserveCapacity(nRows)
            for i in 0..<nRows {
                rows.append((0..<nCols).map { j in
                    PQgetisnull(r, Int32(i), Int32(j)) == 1 ? nil : String(cString: PQgetvalue(r, Int32(i), Int32(j)))
                })
            }
            let affected = Int(String(cString: PQcmdTuples(r))) ?? 0
            return PostgresRows(columns: columns, rows: rows, affected: affected)
        default:
            let state = PQresultErrorField(r, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = String(cString: PQresultErrorMessage(r))
            throw PostgresError(sqlState: state, message: message.isEmpty ? String(cString: PQresStatus(status)) : message,
                                connectionLost: !isConnected)
        }
    }
}

/// Calls `body` with a NULL-terminated C array of C strings (NULL for nil) valid during the call.
private func withCStrings<R>(_ values: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = values.map { $0.flatMap { strdup($0) } } + [nil]
    defer { for p in pointers { free(p) } }
    return pointers.withUnsafeMutableBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { body(values.isEmpty ? nil : $0) }
    }
}

/// COPY text-format encoding.
public enum CopyText {
    /// One field: `\N` for NULL; backslash, tab, newline and carriage return escaped.
    public static func field(_ value: String?) -> String {
        guard let value else { return "\\N" }
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for c in value.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// One row: fields joined by tabs, ended by a newline.
    public static func row(_ fields: [String?]) -> String { fields.map(field).joined(separator: "\t") + "\n" }

    /// A bytea value in hex format (`\x...`), as COPY text expects it (backslash escaped).
    public static func bytea(_ bytes: [UInt8]) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out = [UInt8]("\\x".utf8)
        out.reserveCapacity(2 + bytes.count * 2)
        for b in bytes { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }
}
