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
public final class RateLimiter: Sendable {
    /// The limits in force (a SIGHUP reload can change them while requests wait).
    private let limits: LockedValue<(requests: Int, tokens: Int)>
    /// 0 = unlimited.
    public var requestsPerMinute: Int { limits.value.requests }
    /// 0 = unlimited.
    public var tokensPerMinute: Int { limits.value.tokens }
    private struct Reservation: Sendable { var at: Double, id: Int, count: Int }
    private struct State: Sendable {
        var starts: [Double] = []
        var tokens: [Reservation] = []
        var nextID = 0
        var pausedUntil = 0.0
    }
    private let state = LockedValue(State())

    /// A limiter; 0 disables a limit.
    public init(requestsPerMinute: Int, tokensPerMinute: Int) {
        limits = LockedValue((requestsPerMinute, tokensPerMinute))
    }

    /// Changes the limits; waiting requests see them on their next try (within a second).
    public func setLimits(requestsPerMinute: Int, tokensPerMinute: Int) {
        limits.withLock { $0 = (requestsPerMinute, tokensPerMinute) }
    }

    /// Requests allowed per second.
    var perSecond: Int { max(1, (requestsPerMinute + 59) / 60) }

    /// Either admits a request now (returns its token reservation id) or says how long to wait.
    func tryAcquire(estimatedTokens: Int, now: Double) -> (id: Int?, wait: Double) {
        let (rpm, tpm) = limits.value
        let perSecond = max(1, (rpm + 59) / 60)
        return state.withLock { s in
            while let f = s.starts.first, f <= now - 60 { s.starts.removeFirst() }
            while let f = s.tokens.first, f.at <= now - 60 { s.tokens.removeFirst() }
            if now < s.pausedUntil { return (nil, s.pausedUntil - now) }
            if rpm > 0 {
                if s.starts.count >= rpm { return (nil, s.starts[0] + 60 - now + 0.001) }
                let lastSecond = s.starts.suffix(perSecond)
                if lastSecond.count >= perSecond, let first = lastSecond.first, first > now - 1 { return (nil, first + 1 - now + 0.001) }
            }
            if tpm > 0, !s.tokens.isEmpty, s.tokens.reduce(0, { $0 + $1.count }) + estimatedTokens > tpm {
                return (nil, s.tokens[0].at + 60 - now + 0.001)
            }
            s.starts.append(now)
            s.nextID += 1
            s.tokens.append(Reservation(at: now, id: s.nextID, count: estimatedTokens))
            return (s.nextID, 0)
        }
    }

    /// Waits until a request may start; returns the reservation to correct later.
    public func acquire(estimatedTokens: Int) async throws -> Int {
        while true {
            let r = tryAcquire(estimatedTokens: estimatedTokens, now: monotonicSeconds())
            if let id = r.id { return id }
            // At most a second at a time: a reload that raises the limit is seen at once.
            try await Task.sleep(nanoseconds: UInt64(min(r.wait, 1) * 1e9))
        }
    }

    /// Replaces a reservation's estimate with the tokens the server reported.
    public func correct(_ id: Int, actualTokens: Int) {
        state.withLock { s in if let i = s.tokens.firstIndex(where: { $0.id == id }) { s.tokens[i].count = actualTokens } }
    }

    /// Holds every request back for `seconds` (a server's Retry-After).
    public func pause(seconds: Double) {
        let until = monotonicSeconds() + seconds
        state.withLock { $0.pausedUntil = max($0.pausedUntil, until) }
    }
}

/// A circuit breaker for the teacher endpoint: after `threshold` consecutive failures (server
/// errors, timeouts, connection errors) it opens for a cool-down that doubles on each failed
/// probe (up to `maxCooldown`); then one probe request is let through (half-open); a success
/// closes it. While open, requests wait instead of hammering a server that is down.
public final class CircuitBreaker: Sendable {
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
    /// State, current cool-down, when the probe started, openings: behind one lock.
    private struct Guarded: Sendable {
        var state = State.closed(failures: 0)
        var cooldown: Double
        var probeSince = 0.0
        var openings = 0
    }
    private let guarded: LockedValue<Guarded>
    /// A probe that never reported (its task was cancelled) stops blocking after this long.
    private let probeTimeout: Double
    /// Times the breaker opened.
    public var openings: Int { guarded.withLock { $0.openings } }

    /// A breaker opening after `threshold` consecutive failures for `cooldown` seconds at first.
    public init(threshold: Int = 5, cooldown: Double = 5, maxCooldown: Double = 120, probeTimeout: Double = 180) {
        self.probeTimeout = probeTimeout
        self.threshold = max(1, threshold)
        baseCooldown = cooldown
        guarded = LockedValue(Guarded(cooldown: cooldown))
        self.maxCooldown = maxCooldown
    }

    /// The current state.
    public var current: State { guarded.withLock { $0.state } }

    /// Whether requests are being held back now.
    public var isOpen: Bool {
        if case let .open(until) = current { return monotonicSeconds() < until }
        return false
    }

    /// Either admits (true) or says how long to wait.
    func tryAdmit(now: Double) -> (admitted: Bool, wait: Double) {
        let probeTimeout = probeTimeout
        return guarded.withLock { g in
            switch g.state {
            case .closed: return (true, 0)
            case let .open(until):
                if now < until { return (false, until - now) }
                g.state = .halfOpen
                g.probeSince = now
                return (true, 0)
            case .halfOpen:
                if now - g.probeSince > probeTimeout { g.probeSince = now; return (true, 0) }
                return (false, 0.2)
            }
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
        let base = baseCooldown
        guarded.withLock { $0.state = .closed(failures: 0); $0.cooldown = base }
    }

    /// A request failed with a server error, timeout or connection error.
    public func failure() {
        let now = monotonicSeconds(), threshold = threshold, maxCooldown = maxCooldown
        guarded.withLock { g in
            switch g.state {
            case let .closed(failures):
                if failures + 1 >= threshold { g.state = .open(until: now + g.cooldown); g.openings += 1 } else { g.state = .closed(failures: failures + 1) }
            case .halfOpen:
                g.cooldown = min(g.cooldown * 2, maxCooldown)
                g.state = .open(until: now + g.cooldown)
                g.openings += 1
            case .open:
                break
            }
        }
    }
}

/// Spend per UTC day against a budget. Hosts sharing a database add the spend recorded there
/// (`synchronise`), so the budget is for the whole deployment, not per host.
public final class SpendLedger: Sendable {
    private let budget: LockedValue<Double>
    /// US dollars per UTC day; 0 = unlimited (reloadable).
    public var dailyBudget: Double { budget.value }
    /// Changes the budget (SIGHUP reload).
    public func setDailyBudget(_ dollars: Double) { budget.withLock { $0 = dollars } }
    private struct Day: Sendable { var day: Int; var spent = 0.0 }
    private let ledger: LockedValue<Day>

    /// A ledger with this daily budget.
    public init(dailyBudget: Double) {
        budget = LockedValue(dailyBudget)
        ledger = LockedValue(Day(day: Self.utcDay(Date())))
    }

    /// Days since 1970 in UTC.
    public static func utcDay(_ date: Date) -> Int { Int((date.timeIntervalSince1970 / 86_400).rounded(.down)) }

    /// Seconds until the next UTC midnight.
    public static func secondsToNextDay(_ date: Date = Date()) -> Double { Double(utcDay(date) + 1) * 86_400 - date.timeIntervalSince1970 }

    /// Runs `body` on today's record (a new UTC day starts at zero).
    private func today<R>(_ body: (inout Day) -> R) -> R {
        let today = Self.utcDay(Date())
        return ledger.withLock { d in
            if d.day != today { d = Day(day: today) }
            return body(&d)
        }
    }

    /// Adds a request's cost.
    public func add(_ cost: Double) { today { $0.spent += cost } }

    /// Sets today's spend to what the shared record says, if that is more than this host knows.
    public func synchronise(spentToday: Double) { today { $0.spent = max($0.spent, spentToday) } }

    /// Spent today.
    public var spentToday: Double { today { $0.spent } }

    /// Whether today's budget is used up.
    public var isExhausted: Bool { dailyBudget > 0 && spentToday >= dailyBudget }
}
