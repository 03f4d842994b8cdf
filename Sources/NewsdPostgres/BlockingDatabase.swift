import Dispatch
import Foundation
import Logging
import NewsdSystem

/// One blocking Postgres connection used from async code: every call runs on a serial dispatch
/// queue (never on Swift's cooperative pool), reconnecting with the shared retry policy on
/// retriable errors until the operation succeeds or `stop()` is called. After `stop()` an
/// operation fails at its next retry, so a shutdown never waits on a database that is down; a
/// stop that also cancels the statement in flight does not wait on one that is slow or waits on
/// a lock either.
///
/// `@unchecked Sendable`: `connection` is read and written only on `queue`, a serial dispatch
/// queue, which is the lock that makes sharing this object between tasks safe.
public final class BlockingDatabase: @unchecked Sendable {
    private let url: String
    private let queue: DispatchQueue
    private let logger: Logger
    /// Touched only on `queue`.
    private var connection: PostgresConnection?
    private let stopped = StopFlag()
    private let policy: RetryPolicy
    /// Cancels the statement in flight on `connection` (set on `queue`, used from any thread).
    private let canceller = LockedValue<PostgresCanceller?>(nil)
    /// Set by a stop that cancels: no statement starts after it.
    private let abandoned = StopFlag()

    /// A lazily connected database.
    public init(url: String, label: String, logger: Logger, policy: RetryPolicy = RetryPolicy(initialDelay: 0.2, maxDelay: 30)) {
        self.url = url
        self.logger = logger
        self.policy = policy
        queue = DispatchQueue(label: label)
    }

    /// Stops retrying (calls in progress fail at their next retry). `cancellingStatementInFlight`:
    /// also cancel the statement running now, for work that is safe to abandon (recomputed
    /// rollups, reads): it fails at once with SQLSTATE 57014 and its transaction rolls back.
    /// Then no further statement starts either.
    public func stop(cancellingStatementInFlight: Bool = false) {
        stopped.set()
        if cancellingStatementInFlight {
            abandoned.set()
            canceller.cancelInBackground()
        }
    }

    /// Runs `body` with the connection on the database queue, retrying retriable failures.
    @discardableResult
    public func run<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { [self] in continuation.resume(with: Result { try runBlocking(what, body) }) }
        }
    }

    /// Queues `body` without waiting (audit records); failures are logged.
    public func enqueue(_ what: String, _ body: @escaping @Sendable (PostgresConnection) throws -> Void) {
        queue.async { [self] in
            do { try runBlocking(what, body) } catch { logger.error("database write failed", metadata: ["operation": "\(what)", "error": "\(error)"]) }
        }
    }

    private func runBlocking<T>(_ what: String, _ body: (PostgresConnection) throws -> T) throws -> T {
        dispatchPrecondition(condition: .onQueue(queue))
        if stopped.isSet, connection == nil { throw PostgresError(sqlState: nil, message: "database stopped", connectionLost: true) }
        return try retry(policy, stop: stopped, onRetry: { [logger] r in
            logger.warning("postgres unavailable, retrying", metadata: ["operation": "\(what)", "error": "\(r.error)", "retry_in_s": "\(String(format: "%.1f", r.delay))"])
        }) {
            let db: PostgresConnection
            if let c = connection, c.isConnected { db = c } else {
                connection = nil
                db = try PostgresConnection(url)
                connection = db
                canceller.withLock { $0 = db.canceller() }
            }
            if abandoned.isSet { throw PostgresError(sqlState: "57014", message: "database stopped: \(what) abandoned") }
            do { return try body(db) } catch let e as PostgresError where e.isRetriable {
                connection = nil
                throw e
            }
        }
    }
}
