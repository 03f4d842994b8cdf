import Foundation

/// An error that knows whether trying again can succeed (a lost connection, a timeout, a 503) or
/// not (bad input, a refused password). Every module's error type conforms.
public protocol RetryClassifiable: Error {
    /// Whether the same operation may succeed later.
    var isRetriable: Bool { get }
    /// The least wait before trying again that the other side asked for (HTTP `Retry-After`).
    var retryAfterSeconds: Double? { get }
}

extension RetryClassifiable {
    /// No wait asked for.
    public var retryAfterSeconds: Double? { nil }
}

/// Exponential backoff with jitter, a cap, and optional attempt and time limits. The one retry
/// policy of newsd: Kafka, Postgres, the teacher and the trainer all retry through `retry`.
public struct RetryPolicy: Sendable, Equatable {
    /// First delay, seconds.
    public var initialDelay: Double
    /// Factor per attempt.
    public var multiplier: Double
    /// Largest delay, seconds.
    public var maxDelay: Double
    /// Relative jitter: each delay is drawn from delay × [1 - jitter, 1 + jitter].
    public var jitter: Double
    /// Attempts in all, the first included (nil: unlimited, until the deadline or a stop).
    public var maxAttempts: Int?

    /// A policy; the defaults suit a database or broker reconnect.
    public init(initialDelay: Double = 0.1, multiplier: Double = 2, maxDelay: Double = 30, jitter: Double = 0.2, maxAttempts: Int? = nil) {
        self.initialDelay = initialDelay
        self.multiplier = multiplier
        self.maxDelay = maxDelay
        self.jitter = jitter
        self.maxAttempts = maxAttempts
    }

    /// The delay before attempt `attempt + 1` (attempt counts from 1), before jitter.
    public func nominalDelay(afterAttempt attempt: Int) -> Double {
        min(maxDelay, initialDelay * pow(multiplier, Double(max(0, attempt - 1))))
    }

    /// The jittered delay before attempt `attempt + 1`.
    public func delay<G: RandomNumberGenerator>(afterAttempt attempt: Int, using generator: inout G) -> Double {
        let d = nominalDelay(afterAttempt: attempt)
        return jitter > 0 ? d * Double.random(in: (1 - jitter)...(1 + jitter), using: &generator) : d
    }

    /// Whether `error` is worth another attempt: `RetryClassifiable.isRetriable`, false otherwise.
    public static func isRetriable(_ error: Error) -> Bool { (error as? RetryClassifiable)?.isRetriable ?? false }
}

/// What a retry loop is told after a failed attempt.
public struct RetryAttempt: Sendable {
    /// Attempts made so far.
    public var attempt: Int
    /// The error of the last attempt.
    public var error: Error
    /// Seconds until the next attempt.
    public var delay: Double
}

/// Runs `body` until it succeeds, retrying errors that `isRetriable` accepts with `policy`'s
/// backoff. Stops retrying (rethrowing the last error) at `maxAttempts`, when the next attempt
/// would start after `deadline`, or once `stop` is set. Blocking: for dedicated threads only.
public func retry<T>(_ policy: RetryPolicy, deadline: () -> Date? = { nil }, stop: StopFlag? = nil,
                     isRetriable: (Error) -> Bool = RetryPolicy.isRetriable,
                     onRetry: (RetryAttempt) -> Void = { _ in }, _ body: () throws -> T) throws -> T {
    var attempt = 0
    var generator = SystemRandomNumberGenerator()
    while true {
        attempt += 1
        do { return try body() } catch {
            guard isRetriable(error), stop?.isSet != true, policy.maxAttempts.map({ attempt < $0 }) ?? true else { throw error }
            let delay = max(policy.delay(afterAttempt: attempt, using: &generator), (error as? RetryClassifiable)?.retryAfterSeconds ?? 0)
            if let d = deadline(), Date().addingTimeInterval(delay) > d { throw error }
            onRetry(RetryAttempt(attempt: attempt, error: error, delay: delay))
            // Sleep in slices so a stop request is honoured within 100 ms.
            let until = Date().addingTimeInterval(delay)
            while Date() < until {
                if stop?.isSet == true { throw error }
                Thread.sleep(forTimeInterval: min(0.1, max(0, until.timeIntervalSinceNow)))
            }
        }
    }
}

/// The async form of `retry`: sleeps with `Task.sleep`, so task cancellation ends it at once
/// (throwing `CancellationError`).
public func retry<T>(_ policy: RetryPolicy, deadline: @Sendable () -> Date? = { nil },
                     isRetriable: @Sendable (Error) -> Bool = RetryPolicy.isRetriable,
                     onRetry: @Sendable (RetryAttempt) -> Void = { _ in }, _ body: () async throws -> T) async throws -> T {
    var attempt = 0
    var generator = SystemRandomNumberGenerator()
    while true {
        attempt += 1
        do { return try await body() } catch {
            guard !(error is CancellationError), isRetriable(error), policy.maxAttempts.map({ attempt < $0 }) ?? true else { throw error }
            let delay = max(policy.delay(afterAttempt: attempt, using: &generator), (error as? RetryClassifiable)?.retryAfterSeconds ?? 0)
            if let d = deadline(), Date().addingTimeInterval(delay) > d { throw error }
            onRetry(RetryAttempt(attempt: attempt, error: error, delay: delay))
            try await Task.sleep(nanoseconds: UInt64(delay * 1e9))
        }
    }
}
