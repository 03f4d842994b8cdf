import Foundation
import NewsdHTTP
import NewsdOps
import NewsdSystem
import Testing
@testable import NewsdTeacher

@Suite("Rate limits, circuit breaker, spend")
struct LimitsTests {
    @Test("requests per minute hold over every 60 s window and spread over seconds")
    func requestsPerMinute() {
        let limiter = RateLimiter(requestsPerMinute: 120, tokensPerMinute: 0)
        var admitted: [Double] = []
        var t = 0.0
        while t < 180 {
            let r = limiter.tryAcquire(estimatedTokens: 10, now: t)
            if r.id != nil { admitted.append(t) } else { t += max(r.wait, 0.001) }
        }
        for (i, a) in admitted.enumerated() {
            #expect(admitted[i...].prefix { $0 < a + 60 }.count <= 120)
            #expect(admitted[i...].prefix { $0 < a + 1 }.count <= 2)
        }
        #expect(admitted.count >= 355 && admitted.count <= 362)
    }

    @Test("tokens per minute use the reported usage once corrected")
    func tokensPerMinute() {
        let limiter = RateLimiter(requestsPerMinute: 0, tokensPerMinute: 1000)
        let first = limiter.tryAcquire(estimatedTokens: 900, now: 0)
        #expect(first.id != nil)
        #expect(limiter.tryAcquire(estimatedTokens: 200, now: 1).id == nil)
        limiter.correct(first.id!, actualTokens: 300)
        #expect(limiter.tryAcquire(estimatedTokens: 200, now: 1).id != nil)
        #expect(limiter.tryAcquire(estimatedTokens: 600, now: 2).id == nil)
        #expect(limiter.tryAcquire(estimatedTokens: 600, now: 61).id != nil)
    }

    @Test("the breaker opens after consecutive failures, probes once, closes on success, backs off on a failed probe")
    func breaker() {
        let b = CircuitBreaker(threshold: 3, cooldown: 10, maxCooldown: 40)
        b.failure(); b.failure()
        #expect(!b.isOpen)
        b.success(); b.failure(); b.failure()
        #expect(!b.isOpen)
        b.failure()
        #expect(b.isOpen)
        guard case let .open(until) = b.current else { Issue.record("not open"); return }
        #expect(b.tryAdmit(now: until - 1).admitted == false)
        #expect(b.tryAdmit(now: until + 0.1).admitted == true)
        #expect(b.current == .halfOpen)
        #expect(b.tryAdmit(now: until + 0.2).admitted == false)   // one probe at a time
        b.failure()
        guard case let .open(until2) = b.current else { Issue.record("not reopened"); return }
        #expect(until2 - monotonicSeconds() > 15)                 // cool-down doubled to 20 s
        _ = b.tryAdmit(now: until2 + 0.1)
        b.success()
        #expect(b.current == .closed(failures: 0))
        #expect(b.openings == 2)
    }

    @Test("the ledger counts spend per UTC day against the budget and takes the shared record")
    func ledger() {
        let l = SpendLedger(dailyBudget: 1.0)
        l.add(0.4)
        #expect(!l.isExhausted)
        l.synchronise(spentToday: 0.99)
        #expect(!l.isExhausted)
        l.add(0.02)
        #expect(l.isExhausted)
        #expect(!SpendLedger(dailyBudget: 0).isExhausted)
        #expect(SpendLedger.secondsToNextDay(Date(timeIntervalSince1970: 86_400 * 3 + 100)) == 86_300)
    }

    @Test("Retry-After in seconds and as an HTTP date")
    func retryAfter() {
        #expect(TeacherClient.retryAfterSeconds("2") == 2)
        #expect(TeacherClient.retryAfterSeconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0)
        #expect(TeacherClient.retryAfterSeconds("soon") == nil)
    }
}

@Suite("Uncertainty sampling")
struct SelectionTests {
    let margins: [Float] = (0..<100).map { Float($0) / 100 }
    var entropies: [Float] { margins.map { 1.1 - $0 } }

    @Test("cold start sends the first N items, nothing once the budget is spent")
    func coldStartAndBudget() {
        let s = TeacherSelector(policy: NewsdConfiguration.Teacher())
        let r = s.select(margins: margins, entropies: entropies, coldStartRemaining: 30, budgetExhausted: false)
        #expect(r.prefix(30).allSatisfy { $0 == .coldStart } && r.dropFirst(30).allSatisfy { $0 == nil })
        #expect(s.select(margins: margins, entropies: entropies, coldStartRemaining: 30, budgetExhausted: true).allSatisfy { $0 == nil })
    }

    @Test("margin below the threshold, least certain first, never more than the share of traffic")
    func marginWithShare() {
        var p = NewsdConfiguration.Teacher()
        p.explorationRate = 0
        p.marginThreshold = 0.5
        p.maxShare = 0.2
        let s = TeacherSelector(policy: p)
        let r = s.select(margins: margins, entropies: entropies, coldStartRemaining: 0, budgetExhausted: false)
        let chosen = r.indices.filter { r[$0] == .uncertain }
        #expect(chosen == Array(0..<20))
        p.maxShare = 1
        let all = TeacherSelector(policy: p).select(margins: margins, entropies: entropies, coldStartRemaining: 0, budgetExhausted: false)
        #expect(all.indices.filter { all[$0] == .uncertain } == Array(0..<50))
    }

    @Test("entropy above the threshold; top_k per window; random at the share; exploration at its rate")
    func otherStrategies() {
        var p = NewsdConfiguration.Teacher()
        p.explorationRate = 0
        p.maxShare = 1
        p.selection = .entropy
        p.entropyThreshold = 0.905
        let e = TeacherSelector(policy: p).select(margins: margins, entropies: entropies, coldStartRemaining: 0, budgetExhausted: false)
        #expect(e.indices.filter { e[$0] != nil } == Array(0..<20))
        p.selection = .topK
        p.topK = 15
        let k = TeacherSelector(policy: p)
        let k1 = k.select(margins: margins, entropies: entropies, coldStartRemaining: 0, budgetExhausted: false, now: 0)
        let k2 = k.select(margins: margins, entropies: entropies, coldStartRemaining: 0, budgetExhausted: false, now: 10)
        let k3 = k.select(margins: margins, entropies: entropies, coldStartRemaining: 0, budgetExhausted: false, now: 4000)
        #expect(k1.indices.filter { k1[$0] != nil } == Array(0..<15))
        #expect(k2.allSatisfy { $0 == nil })
        #expect(k3.compactMap { $0 }.count == 15)
        p.selection = .random
        p.maxShare = 0.3
        let big = [Float](repeating: 0.9, count: 20_000)
        let r = TeacherSelector(policy: p).select(margins: big, entropies: big, coldStartRemaining: 0, budgetExhausted: false)
        #expect(abs(Double(r.compactMap { $0 }.count) / 20_000 - 0.3) < 0.02)
        p.selection = .margin
        p.explorationRate = 0.05
        let x = TeacherSelector(policy: p).select(margins: big, entropies: big, coldStartRemaining: 0, budgetExhausted: false)
        #expect(abs(Double(x.filter { $0 == .explore }.count) / 20_000 - 0.05) < 0.01)
    }
}

/// The shift detector and what a shift does to sampling.
@Suite struct ShiftDetectionTests {
    /// Batches of 100 items with `uncertain` uncertain ones each; returns the changes with the item count at which they came.
    static func feed(_ d: inout ShiftDetector, batches: Int, uncertain: Int) -> [(ShiftDetector.Change, Int)] {
        var changes: [(ShiftDetector.Change, Int)] = []
        for _ in 0..<batches { if let c = d.observe(uncertain: uncertain, of: 100) { changes.append((c, d.items)) } }
        return changes
    }

    @Test func aSteadyStreamIsNoShiftAndANewKindOfNewsIs() {
        var d = ShiftDetector()
        #expect(Self.feed(&d, batches: 50, uncertain: 8).isEmpty, "8 % uncertain throughout")
        let began = Self.feed(&d, batches: 10, uncertain: 45)
        #expect(began.count == 1 && began[0].0 == .began, "\(began)")
        #expect(began.first.map { $0.1 - 5000 <= 300 } == true, "noticed within 300 items of the change: \(began)")
        #expect(d.isActive && d.baseline < 0.1, "the baseline holds during a shift: \(d.baseline)")
        let ended = Self.feed(&d, batches: 20, uncertain: 8)
        #expect(ended.count == 1 && ended[0].0 == .ended && !d.isActive)
    }

    @Test func nothingIsDecidedDuringWarmUpAndSmallRisesAreNoShift() {
        var d = ShiftDetector()
        #expect(Self.feed(&d, batches: 3, uncertain: 2).isEmpty)
        #expect(Self.feed(&d, batches: 1, uncertain: 60).isEmpty, "still warming up (400 items)")
        var e = ShiftDetector()
        _ = Self.feed(&e, batches: 30, uncertain: 1)
        #expect(Self.feed(&e, batches: 30, uncertain: 5).isEmpty, "1 % to 5 % is five times, but not 5 points")
    }

    @Test func aTinyFirstBatchDoesNotSetTheBaseline() {
        // A first batch of one sure item (share 0), then a steady 10 %: no shift.
        var d = ShiftDetector()
        _ = d.observe(uncertain: 0, of: 1)
        #expect(Self.feed(&d, batches: 60, uncertain: 10).isEmpty, "baseline \(d.baseline), recent \(d.recent)")
        // A first batch of one unsure item (share 1) must not hide a real shift either.
        var e = ShiftDetector()
        _ = e.observe(uncertain: 1, of: 1)
        _ = Self.feed(&e, batches: 20, uncertain: 10)
        #expect(Self.feed(&e, batches: 10, uncertain: 40).map(\.0) == [.began], "baseline \(e.baseline), recent \(e.recent)")
    }

    @Test func aShiftRaisesTheTeachersShareAndANewModelStartsAgain() {
        var p = NewsdConfiguration.Teacher()
        p.maxShare = 0.1; p.shiftMaxShare = 0.5; p.marginThreshold = 0.3; p.explorationRate = 0; p.selection = .margin
        let s = TeacherSelector(policy: p)
        let calm = [Float](repeating: 0.9, count: 92) + [Float](repeating: 0.1, count: 8)
        let shifted = [Float](repeating: 0.9, count: 40) + [Float](repeating: 0.1, count: 60)
        for _ in 0..<20 { _ = s.observeShift(margins: calm, model: "v1") }
        #expect(s.currentMaxShare == 0.1)
        var changes: [ShiftDetector.Change] = []
        for _ in 0..<5 { if let c = s.observeShift(margins: shifted, model: "v1") { changes.append(c) } }
        #expect(changes == [.began])
        #expect(s.currentMaxShare == 0.5)
        let picked = (0..<10).map { _ in s.select(margins: shifted, entropies: [Float](repeating: 1, count: 100), coldStartRemaining: 0, budgetExhausted: false).compactMap { $0 }.count }
        #expect(picked.reduce(0, +) > 400, "up to half the traffic during a shift: \(picked)")
        #expect(s.observeShift(margins: shifted, model: "v2") == nil && !s.shift.isActive, "a new model starts the baseline again")
        #expect(s.currentMaxShare == 0.1)
        var off = p; off.shiftMaxShare = 0
        let disabled = TeacherSelector(policy: off)
        for _ in 0..<20 { _ = disabled.observeShift(margins: calm, model: "v1") }
        #expect((0..<5).compactMap { _ in disabled.observeShift(margins: shifted, model: "v1") }.isEmpty)
    }
}
