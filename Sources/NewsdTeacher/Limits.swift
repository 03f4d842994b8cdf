import Dispatch
import Foundation
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// Requests-per-minute and tokens-per-minute limits as sliding windows, so the limit holds over
/// EVERY 60-second window, not just on average: a request starts only when fewer than
/// `requestsPerMinute` started in the last 60 s and fewer than `ceil(requestsPerMinute / 60)` in the
/// last second (no minute's worth of requests in one burst). Tokens are estimated before a request
/// and corrected with the server's `usage` after it. A `Retry-After` pauses every request.
public final class RateLimiter: @unchecked Sendable {
    /// 0 = unlimited.
    public let requestsPerMinute: Int
    /// 0 = unlimited.
    public let tokensPerMinute: Int
    private let lock = NSLock()
    private var starts: [Double] = []
    private var tokens: [(at: Double, id: Int, count: Int)] = []
    private var nextID = 0
    private var pausedUntil = 0.0

    /// A limiter; 0 disables a limit.
    public init(requestsPerMinute: Int, tokensPerMinute: Int) {
        self.requestsPerMinute = requestsPerMinute
        self.tokensPerMinute = tokensPerMinute
    }

    /// Requests allowed per second.
    var perSecond: Int { max(1, (requestsPerMinute + 59) / 60) }

    /// Either admits a request now (returns its token reservation id) or says how long to wait.
    func tryAcquire(estimatedTokens: Int, now: Double) -> (id: Int?, wait: Double) {
        lock.lock(); defer { lock.unlock() }
        while let f = starts.first, f <= now - 60 { starts.removeFirst() }
        while let f = tokens.first, f.at <= now - 60 { tokens.removeFirst() }
        if now < pausedUntil { return (nil, pausedUntil - now) }
        if requestsPerMinute > 0 {
            if starts.count >= requestsPerMinute { return (nil, starts[0] + 60 - now + 0.001) }
            let lastSecond = starts.suffix(perSecond)
            if lastSecond.count >= perSecond, let first = lastSecond.first, first > now - 1 { return (nil, first + 1 - now + 0.001) }
        }
        if tokensPerMinute > 0, !tokens.isEmpty, tokens.reduce(0, { $0 + $1.count }) + estimatedTokens > tokensPerMinute {
            return (nil, tokens[0].at + 60 - now + 0.001)
        }
        starts.append(now)
        nextID += 1
        tokens.append((now, nextID, estimatedTokens))
        return (nextID, 0)
    }

    /// Waits until a request may start; returns the reservation to correct later.
    public func acquire(estimatedTokens: Int) async throws -> Int {
        while true {
            let r = tryAcquire(estimatedTokens: estimatedTokens, now: monotonicSeconds())
            if let id = r.id { return id }
            try await Task.sleep(nanoseconds: UInt64(min(r.wait, 60) * 1e9))
        }
    }

    /// Replaces a reservation's estimate with the tokens the server reported.
    public func correct(_ id: Int, actualTokens: Int) {
        lock.lock(); defer { lock.unlock() }
        if let i = tokens.firstIndex(where: { $0.id == id }) { tokens[i].count = actualTokens }
    }

    /// Holds every request back for `seconds` (a server's Retry-After).
    public func pause(seconds: Double) {
        lock.lock(); defer { lock.unlock() }
        pausedUntil = max(pausedUntil, monotonicSeconds() + seconds)
    }
}

/// A circuit breaker for the teacher endpoint: after `threshold` consecutive failures (server
/// errors, timeouts, connection errors) it opens for a cool-down that doubles on each failed
/// probe (up to `maxCooldown`); then one probe request is let through (half-open); a success
/// closes it. While open, requests wait instead of hammering a server that is down.
public final class CircuitBreaker: @unchecked Sendable {
    /// The states.
    public enum State: Sendable, Equatable {
        /// Requests flow; the count of consecutive failures.
        case closed(failures: Int)
        /// Requests wait until the monotonic time `until`.
        case open(until: Double)
        /// One probe is in flight.
        case halfOpen
    }
    private let threshold: Int
    private let baseCooldown: Double
    private let maxCooldown: Double
    private let lock = NSLock()
    private var state = State.closed(failures: 0)
    private var cooldown: Double
    private var probeSince = 0.0
    /// A probe that never reported (its task was cancelled) stops blocking after this long.
    private let probeTimeout: Double
    /// Times the breaker opened.
    public private(set) var openings = 0

    /// A breaker opening after `threshold` consecutive failures for `cooldown` seconds at first.
    public init(threshold: Int = 5, cooldown: Double = 5, maxCooldown: Double = 120, probeTimeout: Double = 180) {
        self.probeTimeout = probeTimeout
        self.threshold = max(1, threshold)
        baseCooldown = cooldown
        self.cooldown = cooldown
        self.maxCooldown = maxCooldown
    }

    /// The current state.
    public var current: State { lock.lock(); defer { lock.unlock() }; return state }

    /// Whether requests are being held back now.
    public var isOpen: Bool {
        lock.lock(); defer { lock.unlock() }
        if case let .open(until) = state { return monotonicSeconds() < until }
        return false
    }

    /// Either admits (true) or says how long to wait.
    func tryAdmit(now: Double) -> (admitted: Bool, wait: Double) {
        lock.lock(); defer { lock.unlock() }
        switch state {
        case .closed: return (true, 0)
        case let .open(until):
            if now < until { return (false, until - now) }
            state = .halfOpen
            probeSince = now
            return (true, 0)
        case .halfOpen:
            if now - probeSince > probeTimeout { probeSince = now; return (true, 0) }
            return (false, 0.2)
        }
    }

    /// Waits while the breaker is open (or a probe is out).
    public func admit() async throws {
        while true {
            let r = tryAdmit(now: monotonicSeconds())
            if r.admitted { return }
            try await Task.sleep(nanoseconds: UInt64(min(r.wait, 5) * 1e9))
        }
    }

    /// A request succeeded (or failed in a way that says nothing about the server being down).
    public func success() {
        lock.lock(); defer { lock.unlock() }
        state = .closed(failures: 0)
        cooldown = baseCooldown
    }

    /// A request failed with a server error, timeout or connection error.
    public func failure() {
        lock.lock(); defer { lock.unlock() }
        let now = monotonicSeconds()
        switch state {
        case let .closed(failures):
            if failures + 1 >= threshold { state = .open(until: now + cooldown); openings += 1 } else { state = .closed(failures: failures + 1) }
        case .halfOpen:
            cooldown = min(cooldown * 2, maxCooldown)
            state = .open(until: now + cooldown)
            openings += 1
        case .open:
            break
        }
    }
}

/// Spend per UTC day against a budget. Hosts sharing a database add the spend recorded there
/// (`synchronise`), so the budget is for the whole deployment, not per host.
public final class SpendLedger: @unchecked Sendable {
    /// US dollars per UTC day; 0 = unlimited.
    public let dailyBudget: Double
    private let lock = NSLock()
    private var day: Int
    private var spent = 0.0

    /// A ledger with this daily budget.
    public init(dailyBudget: Double) {
        self.dailyBudget = dailyBudget
        day = Self.utcDay(Date())
    }

    /// Days since 1970 in UTC.
    public static func utcDay(_ date: Date) -> Int { Int((date.timeIntervalSince1970 / 86_400).rounded(.down)) }

    /// Seconds until the next UTC midnight.
    public static func secondsToNextDay(_ date: Date = Date()) -> Double { Double(utcDay(date) + 1) * 86_400 - date.timeIntervalSince1970 }

    private func roll() {
        let today = Self.utcDay(Date())
        if today != day { day = today; spent = 0 }
    }

    /// Adds a request's cost.
    public func add(_ cost: Double) { lock.lock(); roll(); spent += cost; lock.unlock() }

    /// Sets today's spend to what the shared record says, if that is more than this host knows.
    public func synchronise(spentToday: Double) { lock.lock(); roll(); spent = max(spent, spentToday); lock.unlock() }

    /// Spent today.
    public var spentToday: Double { lock.lock(); defer { lock.unlock() }; roll(); return spent }

    /// Whether today's budget is used up.
    public var isExhausted: Bool { dailyBudget > 0 && spentToday >= dailyBudget }
}
