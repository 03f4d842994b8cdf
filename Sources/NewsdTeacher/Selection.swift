import Foundation
import NewsdHTTP
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem

/// Why an item was chosen.
public enum SelectionReason: String, Sendable {
    /// No trained model yet.
    case coldStart = "cold_start"
    /// Uncertain by the strategy.
    case uncertain
    /// Random exploration.
    case explore
    /// Random-strategy pick.
    case random
}

/// Chooses items for the teacher, batch by batch. Not thread-safe (the ingest thread owns it).
public final class TeacherSelector {
    /// The policy.
    public let policy: NewsdConfiguration.Teacher
    private var rng: UInt64
    private var credit = 0.0
    private var windowStart: Double?
    private var chosenInWindow = 0
    /// The shift detector of the serving model's margins.
    public private(set) var shift = ShiftDetector()
    private var shiftModel: String?

    /// A selector; `seed` makes exploration reproducible.
    public init(policy: NewsdConfiguration.Teacher, seed: UInt64 = 0x5EED) {
        self.policy = policy
        rng = seed | 1
    }

    private func uniform() -> Double {
        rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17
        return Double(rng >> 11) / Double(1 << 53)
    }

    /// Feeds the shift detector with a batch of `model`'s margins (uncertain: below
    /// `margin_threshold`); a different model than last time starts it again. Returns the change.
    public func observeShift(margins: [Float], model: String) -> ShiftDetector.Change? {
        guard policy.shiftMaxShare > 0 else { return nil }
        if model != shiftModel { shift.reset(); shiftModel = model }
        return shift.observe(uncertain: margins.filter { Double($0) < policy.marginThreshold }.count, of: margins.count)
    }

    /// Takes over `old`'s shift state (a reloaded policy must not end a shift or restart the warm-up).
    public func inheritShift(from old: TeacherSelector) {
        shift = old.shift; shiftModel = old.shiftModel
    }

    /// The share of traffic the teacher may get now: `shift_max_share` during a shift (it raises
    /// the credit of `margin`, `entropy` and `random` selection; `top_k` keeps its per-window cap).
    public var currentMaxShare: Double { shift.isActive ? max(policy.maxShare, policy.shiftMaxShare) : policy.maxShare }

    /// Reasons per item (nil: not sent). `coldStartRemaining` > 0 means no trained model yet and
    /// that many cold-start items still wanted; `budgetExhausted` stops everything (nothing is
    /// queued that cannot be paid for today). During a shift (see `observeShift`) up to
    /// `shift_max_share` of the traffic is sent instead of `max_share`.
    public func select(margins: [Float], entropies: [Float], coldStartRemaining: Int, budgetExhausted: Bool,
                       now: Double = Double(DispatchTime.now().uptimeNanoseconds) / 1e9) -> [SelectionReason?] {
        var out = [SelectionReason?](repeating: nil, count: margins.count)
        guard !budgetExhausted, !margins.isEmpty else { return out }
        let maxShare = currentMaxShare
        if coldStartRemaining > 0 {
            for i in 0..<min(coldStartRemaining, margins.count) { out[i] = .coldStart }
            return out
        }
        for i in margins.indices where uniform() < policy.explorationRate { out[i] = .explore }
        if policy.selection == .random {
            for i in margins.indices where out[i] == nil && uniform() < maxShare { out[i] = .random }
            return out
        }
        // Share of traffic: credit accrues per item seen, a pick costs one; bounded so a quiet
        // hour does not become a burst.
        credit = min(credit + maxShare * Double(margins.count), max(1, maxShare * 1_000))
        if policy.selection == .topK {
            if windowStart == nil || now - windowStart! >= policy.windowSeconds.value { windowStart = now; chosenInWindow = 0 }
        }
        let order = margins.indices.sorted { uncertainty(margins[$0], entropies[$0]) > uncertainty(margins[$1], entropies[$1]) }
        for i in order where out[i] == nil {
            guard credit >= 1 else { break }
            let wanted: Bool
            switch policy.selection {
            case .margin: wanted = Double(margins[i]) < policy.marginThreshold
            case .entropy: wanted = Double(entropies[i]) > policy.entropyThreshold
            case .topK: wanted = chosenInWindow < policy.topK
            case .random: wanted = false
            }
            guard wanted else { break }   // sorted: nothing after it qualifies either
            out[i] = .uncertain
            credit -= 1
            chosenInWindow += 1
        }
        return out
    }

    private func uncertainty(_ margin: Float, _ entropy: Float) -> Float {
        policy.selection == .entropy ? entropy : -margin
    }
}
