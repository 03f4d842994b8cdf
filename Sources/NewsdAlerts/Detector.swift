import Foundation
import NewsdOps

/// One stored prediction about one company, as the detector sees it.
public struct PredictionEvent: Sendable, Equatable {
    /// Event time (the mention's publication time), seconds since 1970.
    public var time: Double
    /// The company mentioned.
    public var company: String
    /// The item (for driver sentences).
    public var itemID: Int64
    /// The student's probability of `negative`.
    public var negativeProbability: Double
    /// Top-1 minus top-2 probability.
    public var margin: Double

    /// An event.
    public init(time: Double, company: String, itemID: Int64, negativeProbability: Double, margin: Double) {
        self.time = time; self.company = company; self.itemID = itemID; self.negativeProbability = negativeProbability; self.margin = margin
    }
}

/// Figures of one company's window at one evaluation.
public struct WindowFigures: Sendable, Equatable, Codable {
    /// Window start and end (event time, seconds since 1970).
    public var start: Double, end: Double
    /// Predictions in the window.
    public var items: Int
    /// Sum of their weights (low-confidence ones weigh less).
    public var weight: Double
    /// Sum of weight x negative probability.
    public var negative: Double
    /// negative / weight.
    public var observedShare: Double { weight > 0 ? negative / weight : 0 }
    /// The baseline's negative share (decayed history plus the prior).
    public var baselineShare: Double
    /// The baseline's decayed weight (before the cap).
    public var baselineWeight: Double
    /// Upper tail of the Beta-Binomial predictive at the observed count (1 when not tested).
    public var pValue: Double
    /// Confident negatives in the burst span.
    public var burstNegatives: Int
    /// Expected (weighted) items per window from the baseline.
    public var expectedPerWindow: Double
}

/// What the detector decided for one company.
public struct DetectorDecision: Sendable, Equatable {
    /// Raise or resolve.
    public enum Kind: Sendable, Equatable {
        /// A new alert by `rule` (`shift` or `burst`), `critical` or `warning`.
        case raise(rule: String, severity: String)
        /// The company's open alert ends: the share is back.
        case resolve
    }
    /// The company.
    public var company: String
    /// What to do.
    public var kind: Kind
    /// The window's figures.
    public var figures: WindowFigures
    /// Items in the window that weigh most towards negative, most first (the drivers).
    public var drivers: [PredictionEvent]
}

/// The Beta-Binomial predictive test.
public enum BetaBinomial {
    /// log Γ(x) (Foundation and Glibc both export `lgamma`: this names one).
    static func logGamma(_ x: Double) -> Double { Foundation.lgamma(x) }
    /// log B(a, b).
    static func logBeta(_ a: Double, _ b: Double) -> Double { logGamma(a) + logGamma(b) - logGamma(a + b) }

    /// P(X >= x) for X ~ BetaBinomial(n, alpha, beta): the chance of seeing at least x negatives
    /// in n items if the window's share came from the baseline's posterior Beta(alpha, beta).
    /// Exact for small counts (summed in log space).
    public static func upperTail(atLeast x: Int, of n: Int, alpha: Double, beta: Double) -> Double {
        guard x > 0 else { return 1 }
        guard x <= n else { return 0 }
        let lb = logBeta(alpha, beta)
        let logChooseBase = logGamma(Double(n) + 1)
        var terms: [Double] = []
        terms.reserveCapacity(n - x + 1)
        for k in x...n {
            let kk = Double(k)
            terms.append(logChooseBase - logGamma(kk + 1) - logGamma(Double(n - k) + 1) + logBeta(kk + alpha, Double(n - k) + beta) - lb)
        }
        let m = terms.max()!
        return min(1, exp(m) * terms.reduce(0) { $0 + exp($1 - m) })
    }
}

/// The negative-shift detector over a stream of predictions, in memory and incremental: each
/// company keeps its window's events (a deque) and an exponentially decayed baseline of the
/// events that left the window. Used live by `AlertService` (fed from Postgres, states synchronised
/// with the `alerts` table so every host agrees) and offline by `newsd alerts backtest`.
///
/// A company is evaluated at time t on the window (t - window, t]:
/// - weight of an item: 1, or `low_confidence_weight` under `low_confidence_margin`;
///   negative mass: weight x P(negative). x = round(negative mass), n = round(weight).
/// - baseline share q and weight w: decayed sums plus a prior, w capped at `baseline_max_weight`.
/// - shift rule: n >= min_support, x/n >= q + min_lift, and P(X >= x) under
///   BetaBinomial(n, q w, (1 - q) w) <= false_alert_rate / evaluations per day.
/// - burst rule (companies whose baseline volume per window is under `sparse_items_per_window`):
///   `burst_count` negatives with P(negative) >= `burst_min_probability` within `burst_minutes`.
/// - a firing company resolves when the window's share is at most q + resolve_lift (or the window
///   is empty), at least one window after it was raised; a new alert waits `cooldown_minutes`
///   after the last one ended.
public struct NegativeShiftDetector: Sendable {
    /// Where a company stands.
    public enum State: Sendable, Equatable {
        /// No open alert; the last one ended then (nil: never).
        case quiet(lastEnded: Double?)
        /// An open alert raised then.
        case firing(since: Double)
    }

    struct Company: Sendable {
        var window: [PredictionEvent] = []   // sorted by time; head index below
        var head = 0
        var windowWeight = 0.0, windowNegative = 0.0
        var baseWeight = 0.0, baseNegative = 0.0, baseAt = 0.0   // decayed sums as of baseAt
        var firstSeen = Double.infinity
        var state = State.quiet(lastEnded: nil)
    }

    /// Default parameters.
    public var parameters: NewsdConfiguration.AlertDetector
    /// Per-company overrides.
    public var overrides: [String: [String: Double]]
    /// Drivers reported per decision.
    public var driverCount: Int
    private var companies: [String: Company] = [:] { didSet { if companies.count != order.count { order = companies.keys.sorted() } } }
    /// Company ids in a fixed order (decisions come out the same on every host and run).
    private var order: [String] = []
    private var resolved: [String: NewsdConfiguration.AlertDetector] = [:]

    /// A detector with these parameters.
    public init(parameters: NewsdConfiguration.AlertDetector, overrides: [String: [String: Double]] = [:], drivers: Int = 5) {
        self.parameters = parameters; self.overrides = overrides; driverCount = drivers
    }

    /// New parameters (reload): kept state, new rules from the next evaluation.
    public mutating func setParameters(_ p: NewsdConfiguration.AlertDetector, overrides o: [String: [String: Double]], drivers: Int) {
        parameters = p; overrides = o; driverCount = drivers; resolved = [:]
        // The window sums were built with the old weights: rebuilt with the new ones, or an
        // event would leave the window with another weight than it came in with.
        for id in order {
            let params = parameters(for: id)
            var c = companies[id]!
            c.windowWeight = 0; c.windowNegative = 0
            for e in c.window[c.head...] {
                let w = Self.weight(e, params)
                c.windowWeight += w; c.windowNegative += w * e.negativeProbability
            }
            companies[id] = c
        }
    }

    /// Sets every company's state from `states` (the `alerts` table); companies it does not name
    /// have never had an alert. A decision whose database write failed is thus undone at the
    /// next synchronisation instead of leaving the company "firing" in memory only.
    public mutating func synchronise(_ states: [String: State]) {
        for id in order { companies[id]!.state = states[id] ?? .quiet(lastEnded: nil) }
        for (id, state) in states where companies[id] == nil { setState(state, for: id) }
    }

    /// The parameters in force for `company`.
    public mutating func parameters(for company: String) -> NewsdConfiguration.AlertDetector {
        if let p = resolved[company] { return p }
        let p = overrides[company].map { parameters.applying($0) } ?? parameters
        resolved[company] = p
        return p
    }

    /// Companies seen.
    public var companyIDs: [String] { Array(companies.keys) }

    /// The state of `company`.
    public func state(of company: String) -> State { companies[company]?.state ?? .quiet(lastEnded: nil) }

    /// Sets the state of `company` (from the `alerts` table, or after a suppression).
    public mutating func setState(_ state: State, for company: String) { companies[company, default: Company()].state = state }

    static func weight(_ e: PredictionEvent, _ p: NewsdConfiguration.AlertDetector) -> Double {
        e.margin < p.lowConfidenceMargin ? p.lowConfidenceWeight : 1
    }

    /// Adds one prediction (events may come in any order; those older than the window go straight
    /// to the baseline).
    public mutating func add(_ e: PredictionEvent, now: Double) {
        let p = parameters(for: e.company)
        var c = companies[e.company] ?? Company()
        c.firstSeen = min(c.firstSeen, e.time)
        let w = Self.weight(e, p)
        if e.time <= now - p.windowMinutes * 60 {
            Self.addToBaseline(&c, time: e.time, weight: w, negative: w * e.negativeProbability, halfLife: p.baselineHalfLifeHours * 3600)
        } else {
            // Insert in time order (events mostly arrive in order: search from the end).
            var i = c.window.count
            while i > c.head && c.window[i - 1].time > e.time { i -= 1 }
            c.window.insert(e, at: i)
            c.windowWeight += w
            c.windowNegative += w * e.negativeProbability
        }
        companies[e.company] = c
    }

    static func addToBaseline(_ c: inout Company, time: Double, weight: Double, negative: Double, halfLife: Double) {
        let lambda = log(2) / halfLife
        if time > c.baseAt {
            let f = exp(-lambda * (time - c.baseAt))
            c.baseWeight *= f; c.baseNegative *= f; c.baseAt = time
            c.baseWeight += weight; c.baseNegative += negative
        } else {
            let f = exp(-lambda * (c.baseAt - time))
            c.baseWeight += weight * f; c.baseNegative += negative * f
        }
    }

    /// Evaluates every company at time `now` (seconds since 1970); returns what changes.
    public mutating func evaluate(at now: Double) -> [DetectorDecision] {
        var out: [DetectorDecision] = []
        for id in order {
            let p = parameters(for: id)
            var c = companies[id]!
            // Events that left the window join the baseline.
            let windowStart = now - p.windowMinutes * 60
            while c.head < c.window.count, c.window[c.head].time <= windowStart {
                let e = c.window[c.head]
                let w = Self.weight(e, p)
                c.windowWeight -= w; c.windowNegative -= w * e.negativeProbability
                Self.addToBaseline(&c, time: e.time, weight: w, negative: w * e.negativeProbability, halfLife: p.baselineHalfLifeHours * 3600)
                c.head += 1
            }
            if c.head > 256 && c.head * 2 > c.window.count { c.window.removeFirst(c.head); c.head = 0 }
            if c.head == c.window.count { c.windowWeight = 0; c.windowNegative = 0 }   // no drift from float sums
            let figures = Self.figures(c, p, now: now)
            companies[id] = c
            switch c.state {
            case let .quiet(lastEnded):
                if let lastEnded, now - lastEnded < p.cooldownMinutes * 60 { continue }
                if let rule = Self.rule(figures, p) {
                    let critical = rule == "shift" && figures.pValue <= p.alphaPerEvaluation / 100 && figures.observedShare >= figures.baselineShare + 2 * p.minLift
                    out.append(DetectorDecision(company: id, kind: .raise(rule: rule, severity: critical ? "critical" : "warning"),
                                                figures: figures, drivers: drivers(c, p, now: now)))
                    companies[id]!.state = .firing(since: now)
                }
            case let .firing(since):
                guard now - since >= p.windowMinutes * 60 else { continue }
                if figures.items == 0 || figures.observedShare <= figures.baselineShare + p.resolveLift {
                    out.append(DetectorDecision(company: id, kind: .resolve, figures: figures, drivers: []))
                    companies[id]!.state = .quiet(lastEnded: now)
                }
            }
        }
        return out
    }

    /// The rule that fires for these figures, if any.
    static func rule(_ f: WindowFigures, _ p: NewsdConfiguration.AlertDetector) -> String? {
        let n = Int(f.weight.rounded())
        if n >= Int(p.minSupport.rounded(.up)) && f.observedShare >= f.baselineShare + p.minLift && f.pValue <= p.alphaPerEvaluation {
            return "shift"
        }
        if p.burstCount >= 1 && f.expectedPerWindow < p.sparseItemsPerWindow && Double(f.burstNegatives) >= p.burstCount {
            return "burst"
        }
        return nil
    }

    static func figures(_ c: Company, _ p: NewsdConfiguration.AlertDetector, now: Double) -> WindowFigures {
        let halfLife = p.baselineHalfLifeHours * 3600
        let decay = c.baseAt > 0 ? exp(-log(2) / halfLife * max(0, now - p.windowMinutes * 60 - c.baseAt)) : 0
        let bw = c.baseWeight * decay, bn = c.baseNegative * decay
        let q = (bn + p.priorNegativeShare * p.priorWeight) / (bw + p.priorWeight)
        let w = min(bw + p.priorWeight, p.baselineMaxWeight)
        // Baseline volume per window: decayed weight over the decayed time it spans.
        let tau = halfLife / log(2)
        let span = c.firstSeen.isFinite ? max(0, now - p.windowMinutes * 60 - c.firstSeen) : 0
        let effective = tau * (1 - exp(-span / tau))
        // Volume per window unknown (no history yet, or quiet past the warm-up horizon): judged by
        // the window itself, so a handful of strong negatives about a quiet company can burst
        // while a flood of news at a cold start cannot.
        let expected: Double
        if effective > p.windowMinutes * 60 {
            expected = bw / effective * p.windowMinutes * 60
        } else {
            let inWindow = Double(c.window.count - c.head)
            expected = inWindow <= 2 * p.burstCount ? 0 : .infinity
        }
        var burst = 0
        let burstStart = now - p.burstMinutes * 60
        var items = 0
        for e in c.window[c.head...] where e.time <= now {
            items += 1
            if e.time > burstStart && e.negativeProbability >= p.burstMinProbability { burst += 1 }
        }
        let n = Int(c.windowWeight.rounded()), x = Int(c.windowNegative.rounded())
        // The tail is computed only where the cheap conditions of the shift rule hold (it is the
        // costly part of an evaluation, and most evaluations are of calm companies).
        let tested = n > 0 && n >= Int(p.minSupport.rounded(.up)) && c.windowNegative / c.windowWeight >= q + p.minLift
        let pValue = tested ? BetaBinomial.upperTail(atLeast: x, of: n, alpha: q * w, beta: (1 - q) * w) : 1
        return WindowFigures(start: now - p.windowMinutes * 60, end: now, items: items, weight: max(0, c.windowWeight),
                             negative: max(0, c.windowNegative), baselineShare: q, baselineWeight: bw, pValue: pValue,
                             burstNegatives: burst, expectedPerWindow: expected)
    }

    func drivers(_ c: Company, _ p: NewsdConfiguration.AlertDetector, now: Double) -> [PredictionEvent] {
        let events = c.window[c.head...].filter { $0.time <= now }
        return Array(events.sorted { Self.weight($0, p) * $0.negativeProbability > Self.weight($1, p) * $1.negativeProbability }.prefix(driverCount))
    }

    /// The figures `company` would be evaluated on at `now` (tests, `explain`-style tools).
    public static func figuresForTest(_ d: NegativeShiftDetector, company: String, now: Double) -> WindowFigures {
        var copy = d
        let p = copy.parameters(for: company)
        return figures(d.companies[company] ?? Company(), p, now: now)
    }

    /// Drops companies with no event for `horizon` seconds and no open alert (bounded memory).
    public mutating func forget(before horizon: Double) {
        companies = companies.filter { _, c in
            if case .firing = c.state { return true }
            return c.baseAt >= horizon || c.window.count > c.head
        }
    }
}
