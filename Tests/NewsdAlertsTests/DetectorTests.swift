import Foundation
import NewsdOps
import NewsdSystem
import Testing
@testable import NewsdAlerts

/// A synthetic stream: companies with stable negative shares, predictions from a noisy student
/// (a true negative gets P(negative) ~ 0.85, others ~ 0.08; 10% low-confidence), optionally one
/// company turning negative at `shiftAt`.
struct SyntheticStream {
    var companies: Int
    var itemsPerHourPerCompany: Double
    var hours: Double
    var shiftCompany: String? = nil
    var shiftAt: Double = .infinity
    var shiftedShare = 0.8
    var seed: UInt64 = 7
    /// Slow drift of each company's share (amplitude; a three-day period, phase by company):
    /// real news is overdispersed, never exactly binomial.
    var drift = 0.0
    static let start = 1_700_000_000.0

    func events() -> [PredictionEvent] {
        var rng = SplitMix64(seed: seed)
        var out: [PredictionEvent] = []
        var item: Int64 = 0
        for c in 0..<companies {
            let id = "C\(c)"
            let share = 0.1 + 0.25 * Double(c % 7) / 6   // 10% .. 35% negative
            var t = Self.start
            while t < Self.start + hours * 3600 {
                // Poisson arrivals.
                t += -log(max(1e-12, rng.nextDouble())) / itemsPerHourPerCompany * 3600
                let drifting = share + drift * sin(2 * Double.pi * (t - Self.start) / (3 * 86_400) + Double(c))
                let p = (id == shiftCompany && t >= shiftAt) ? shiftedShare : drifting
                let negative = rng.nextDouble() < p
                let lowConfidence = rng.nextDouble() < 0.1
                let pn = negative ? (lowConfidence ? 0.5 : 0.7 + 0.3 * rng.nextDouble()) : (lowConfidence ? 0.35 : 0.15 * rng.nextDouble())
                item += 1
                out.append(PredictionEvent(time: t, company: id, itemID: item, negativeProbability: pn, margin: lowConfidence ? 0.1 : 0.6))
            }
        }
        return out
    }
}


@Suite("Negative-shift detector")
struct DetectorTests {
    @Test("Beta-Binomial tail: uniform prior gives 1/(n+1) per count; a large prior approaches the binomial")
    func betaBinomialTail() {
        // Beta(1,1): every count 0...n is equally likely.
        for n in [1, 5, 20] {
            for x in 0...n {
                #expect(abs(BetaBinomial.upperTail(atLeast: x, of: n, alpha: 1, beta: 1) - Double(n - x + 1) / Double(n + 1)) < 1e-9)
            }
        }
        // Beta(2e6 * 0.2, 2e6 * 0.8) ~ Binomial(10, 0.2): P(X >= 5) = 0.0327935.
        #expect(abs(BetaBinomial.upperTail(atLeast: 5, of: 10, alpha: 4e5, beta: 1.6e6) - 0.0327935) < 1e-5)
        #expect(BetaBinomial.upperTail(atLeast: 0, of: 10, alpha: 1, beta: 1) == 1)
        #expect(BetaBinomial.upperTail(atLeast: 11, of: 10, alpha: 1, beta: 1) == 0)
    }

    static func replay(_ p: NewsdConfiguration.AlertDetector, shift: Bool, companies: Int, perHour: Double, hours: Double, drift: Double = 0)
        -> (fired: [Backtest.Fired], shiftAt: Double, events: Int) {
        let shiftAt = SyntheticStream.start + (hours - 6) * 3600
        let stream = SyntheticStream(companies: companies, itemsPerHourPerCompany: perHour, hours: hours,
                                     shiftCompany: shift ? "C3" : nil, shiftAt: shiftAt, drift: drift)
        let events = stream.events()
        // The first day warms the baselines up; alerts count after it.
        let fired = Backtest.run(events, parameters: p, countFrom: SyntheticStream.start + 24 * 3600)
        return (fired, shiftAt, events.count)
    }

    static let settings: [(name: String, p: NewsdConfiguration.AlertDetector)] = {
        var a = NewsdConfiguration.AlertDetector()
        var b = a; b.windowMinutes = 30; b.falseAlertRate = 0.05
        var c = a; c.windowMinutes = 120; c.minLift = 0.1; c.falseAlertRate = 0.001
        return [("default (60 min window)", a), ("fast (30 min, rate 0.05)", b), ("strict (120 min, rate 0.001)", c)]
    }()

    @Test("one company turns negative among 50 stable ones: it alone is alerted, within one window",
          arguments: [(0, 30.0), (0, 60.0), (1, 120.0), (2, 30.0)])
    func shiftIsDetectedWithinOneWindow(setting: Int, perHour: Double) {
        let (name, p) = Self.settings[setting]
        let (fired, shiftAt, _) = Self.replay(p, shift: true, companies: 51, perHour: perHour, hours: 48)
        let hits = fired.filter { $0.company == "C3" && $0.raisedAt >= shiftAt }
        let others = fired.filter { $0.company != "C3" }
        for f in fired where f.company == "C3" { print("C3 fired at \((f.raisedAt - shiftAt) / 60) min: n \(f.figures.weight) share \(f.figures.observedShare) base \(f.figures.baselineShare) p \(f.figures.pValue)") }
        #expect(!hits.isEmpty, "\(name): no alert for the shifted company")
        if let first = hits.first {
            let delay = first.raisedAt - shiftAt
            print("detector \(name), \(Int(perHour)) items/h: detection delay \(Int(delay / 60)) min (window \(Int(p.windowMinutes)) min); other alerts \(others.count)")
            #expect(delay <= p.windowMinutes * 60, "\(name): detected after \(delay / 60) min")
        }
        #expect(others.isEmpty, "\(name): false alerts \(others.map { "\($0.company)@\($0.raisedAt)" })")
    }

    @Test("a long stable stream (200 companies, >= 200,000 predictions) stays at or under the configured false-alert rate", arguments: [0, 1, 2])
    func stableStreamFalseAlerts(setting: Int) {
        let (name, p) = Self.settings[setting]
        let hours = 24.0 * 8
        // Shares drift by +-0.08 over three days: stable news, not a binomial textbook.
        let (fired, _, events) = Self.replay(p, shift: false, companies: 200, perHour: 6, hours: hours, drift: 0.08)
        #expect(events >= 200_000)
        let companyDays = 200 * (hours - 24) / 24
        let rate = Double(fired.count) / companyDays
        print("detector \(name): \(events) predictions, \(fired.count) false alerts over \(Int(companyDays)) company-days = \(String(format: "%.5f", rate)) per company-day (configured \(p.falseAlertRate))")
        #expect(rate <= p.falseAlertRate)
    }

    @Test("burst rule: a sparse company's burst of confident negatives alerts; the same burst on a busy company needs the share test")
    func burstRule() {
        var p = NewsdConfiguration.AlertDetector()
        p.stepMinutes = 5
        var events: [PredictionEvent] = []
        let t0 = SyntheticStream.start
        // Sparse: one neutral item every 4 hours for 3 days.
        for i in 0..<18 { events.append(PredictionEvent(time: t0 + Double(i) * 4 * 3600, company: "S", itemID: Int64(i), negativeProbability: 0.05, margin: 0.8)) }
        let burstAt = t0 + 72 * 3600
        for i in 0..<4 { events.append(PredictionEvent(time: burstAt + Double(i) * 300, company: "S", itemID: 100 + Int64(i), negativeProbability: 0.95, margin: 0.9)) }
        let fired = Backtest.run(events, parameters: p, until: burstAt + 3600)
        #expect(fired.map(\.rule) == ["burst"])
        #expect(fired.first.map { $0.raisedAt - burstAt <= 30 * 60 } == true)
    }

    @Test("hysteresis and cool-down: a firing alert resolves when the share returns; no new alert within the cool-down")
    func hysteresisAndCooldown() {
        var p = NewsdConfiguration.AlertDetector()
        p.stepMinutes = 5
        p.cooldownMinutes = 600
        let shiftAt = SyntheticStream.start + 42 * 3600
        // Negative for 2 hours, then back to normal.
        var events = SyntheticStream(companies: 1, itemsPerHourPerCompany: 30, hours: 48, shiftCompany: "C0", shiftAt: shiftAt).events()
        events = events.map { e in
            var e = e
            if e.time >= shiftAt + 2 * 3600 { e.negativeProbability = min(e.negativeProbability, 0.05) }
            return e
        }
        let second = SyntheticStream(companies: 1, itemsPerHourPerCompany: 30, hours: 48, shiftCompany: "C0", shiftAt: shiftAt + 4 * 3600, seed: 9)
            .events().filter { $0.time >= shiftAt + 4 * 3600 && $0.time < shiftAt + 5 * 3600 }
        let fired = Backtest.run(events + second, parameters: p, countFrom: SyntheticStream.start + 24 * 3600)
        #expect(fired.count == 1, "\(fired.map { ($0.raisedAt - shiftAt) / 60 })")
        if let f = fired.first {
            #expect(f.resolvedAt != nil)
            #expect((f.resolvedAt ?? 0) <= shiftAt + 4 * 3600)
        }
    }

    @Test("a company seen for the first time: a few strong negatives burst, a flood of news at a cold start does not")
    func burstWithoutHistory() {
        var p = NewsdConfiguration.AlertDetector()
        p.stepMinutes = 5
        let t0 = SyntheticStream.start
        let quiet = (0..<4).map { PredictionEvent(time: t0 + Double($0) * 60, company: "NEW", itemID: Int64($0), negativeProbability: 0.95, margin: 0.9) }
        #expect(Backtest.run(quiet, parameters: p, until: t0 + 1800).map(\.rule) == ["burst"])
        // 200 items in 20 minutes, a fifth of them strongly negative: the share test has no
        // baseline to beat the prior with, and the burst rule does not apply to a busy company.
        let flood = (0..<200).map { i in
            PredictionEvent(time: t0 + Double(i) * 6, company: "BUSY", itemID: Int64(i), negativeProbability: i % 5 == 0 ? 0.95 : 0.05, margin: 0.9)
        }
        #expect(Backtest.run(flood, parameters: p, until: t0 + 1800).isEmpty)
    }

    @Test("states follow the alerts table: a raise whose write failed is undone at the next synchronisation")
    func synchronisation() {
        var d = NegativeShiftDetector(parameters: NewsdConfiguration.AlertDetector())
        d.add(PredictionEvent(time: 100, company: "A", itemID: 1, negativeProbability: 0.9, margin: 0.9), now: 100)
        d.setState(.firing(since: 100), for: "A")
        d.synchronise([:])
        #expect(d.state(of: "A") == .quiet(lastEnded: nil))
        d.synchronise(["A": .quiet(lastEnded: 50), "B": .firing(since: 90)])
        #expect(d.state(of: "A") == .quiet(lastEnded: 50))
        #expect(d.state(of: "B") == .firing(since: 90))
    }

    @Test("new low-confidence weights on reload: an event leaves the window with the weight it is counted with")
    func reloadKeepsWindowSumsConsistent() {
        var p = NewsdConfiguration.AlertDetector()
        p.windowMinutes = 10
        var d = NegativeShiftDetector(parameters: p)
        for i in 0..<20 { d.add(PredictionEvent(time: Double(i), company: "A", itemID: Int64(i), negativeProbability: 0.9, margin: 0.05), now: 20) }
        p.lowConfidenceWeight = 1
        d.setParameters(p, overrides: [:], drivers: 5)
        _ = d.evaluate(at: 20 + 11 * 60)   // every event left the window
        d.add(PredictionEvent(time: 20 + 11 * 60, company: "A", itemID: 99, negativeProbability: 0.1, margin: 0.9), now: 20 + 11 * 60)
        let figures = NegativeShiftDetector.figuresForTest(d, company: "A", now: 20 + 11 * 60)
        #expect(abs(figures.weight - 1) < 1e-9 && abs(figures.negative - 0.1) < 1e-9, "\(figures)")
    }

    @Test("per-company overrides apply to that company only")
    func overrides() {
        var p = NewsdConfiguration.AlertDetector()
        p.stepMinutes = 5
        let (_, shiftAt, _) = Self.replay(p, shift: true, companies: 5, perHour: 20, hours: 48)
        let stream = SyntheticStream(companies: 5, itemsPerHourPerCompany: 20, hours: 48, shiftCompany: "C3", shiftAt: shiftAt).events()
        let muted = Backtest.run(stream, parameters: p, overrides: ["C3": ["min_lift": 0.9]], countFrom: SyntheticStream.start + 24 * 3600)
        #expect(muted.filter { $0.company == "C3" }.isEmpty)
        var detector = NegativeShiftDetector(parameters: p, overrides: ["C3": ["min_support": 3]])
        #expect(detector.parameters(for: "C3").minSupport == 3)
        #expect(detector.parameters(for: "C1").minSupport == p.minSupport)
    }

    @Test("verification: mostly contradicted drivers suppress; none checked raises unverified")
    func verificationDecision() {
        typealias V = AlertVerifier.Outcome.Verdict
        let contradicted: [Int: V] = [1: V(label: "neutral", status: "labelled"), 2: V(label: "positive", status: "labelled"), 3: V(label: "negative", status: "labelled")]
        #expect(AlertVerifier.decide(contradicted, suppressShare: 0.5) == ("contradicted", true))
        let confirmed: [Int: V] = [1: V(label: "negative", status: "labelled"), 2: V(label: nil, status: "ambiguous")]
        #expect(AlertVerifier.decide(confirmed, suppressShare: 0.5) == ("confirmed", false))
        #expect(AlertVerifier.decide([1: V(label: nil, status: "unchecked")], suppressShare: 0.5) == ("unverified", false))
        let half: [Int: V] = [1: V(label: "negative", status: "labelled"), 2: V(label: "neutral", status: "labelled")]
        #expect(AlertVerifier.decide(half, suppressShare: 0.5) == ("partly_confirmed", false))
    }

    @Test("webhook signature: HMAC-SHA256 (RFC 4231 test case 2)")
    func signature() {
        #expect(WebhookSignature.sign(Array("what do ya want for nothing?".utf8), secret: "Jefe")
                == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test("configuration: [alerts.companies.<id>] overrides parse; an unknown key or a bad value names itself")
    func configuration() throws {
        let c = try NewsdConfiguration.load(toml: """
            [alerts.detector]
            window_minutes = 30
            [alerts.companies.ACME]
            min_support = 4
            """, source: "t", environment: [:], requireModel: false)
        #expect(c.alerts.detector.windowMinutes == 30)
        #expect(c.alerts.companies["ACME"]?["min_support"] == 4)
        #expect(throws: ConfigurationError.self) { try NewsdConfiguration.load(toml: "[alerts.companies.ACME]\nmin_suport = 4", source: "t", environment: [:], requireModel: false) }
        do {
            _ = try NewsdConfiguration.load(toml: "[alerts.companies.ACME]\nmin_lift = 3", source: "t", environment: [:], requireModel: false)
            Issue.record("accepted min_lift = 3")
        } catch let e as ConfigurationError {
            #expect(e.description.contains("alerts.companies.ACME.min_lift = 3.0"))
        }
    }

    @Test("report spans parse")
    func spans() {
        #expect(CompanyReport.parseSpan("30d").map { abs($0 - 2_592_000) < 1e-6 } == true)
        #expect(CompanyReport.parseSpan("90m").map { abs($0 - 5_400) < 1e-6 } == true)
        #expect(CompanyReport.parseSpan("x") == nil)
    }
}
