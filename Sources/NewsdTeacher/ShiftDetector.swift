import Foundation

/// Notices that the news has changed kind: the share of items the student is unsure about
/// (margin below a threshold) rises well above what it was for the same model. Two exponentially
/// weighted means of that share, one over the last few hundred items and one over thousands,
/// are compared; a shift begins when the recent one is both `ratio` times and `minimumRise`
/// above the long one, and ends when it falls back within `(1 + ratio) / 2` times or within
/// half of `minimumRise`. A new model
/// changes the margins themselves, so a swap starts the baseline again (`reset`), and nothing is
/// decided before `warmupItems` items of the same model.
///
/// Pure value type: the caller owns it and feeds it batch by batch.
public struct ShiftDetector: Sendable, Equatable {
    /// A change of state.
    public enum Change: String, Sendable { case began, ended }

    /// Recent over baseline that begins a shift. Default 1.5.
    public var ratio = 1.5
    /// And at least this much higher, absolute (a rise from 1 % to 2 % is no shift; over 300
    /// items, 5 points is more than three standard errors at a 7 % baseline). Default 0.05.
    public var minimumRise = 0.05
    /// Items over which the recent mean forgets (1/e). Default 300.
    public var recentItems = 300.0
    /// Items over which the baseline forgets. Default 5000.
    public var baselineItems = 5000.0
    /// Items of one model before anything is decided. Default 500.
    public var warmupItems = 500

    /// Recent share of uncertain items.
    public private(set) var recent = 0.0
    /// Long-run share for the current model.
    public private(set) var baseline = 0.0
    /// Items seen since the last reset.
    public private(set) var items = 0
    /// Whether a shift is under way.
    public private(set) var isActive = false

    /// A detector with the default settings.
    public init() {}

    /// The rule: `recent` is `ratio` times and `minimumRise` above `baseline`.
    public func isShift(recent: Double, baseline: Double) -> Bool {
        recent >= baseline * ratio && recent - baseline >= minimumRise
    }

    /// Starts again (a new model serves).
    public mutating func reset() {
        recent = 0; baseline = 0; items = 0; isActive = false
    }

    /// Feeds one batch: `uncertain` of `count` items were uncertain. Returns the change, if any.
    public mutating func observe(uncertain: Int, of count: Int) -> Change? {
        guard count > 0 else { return nil }
        let share = Double(uncertain) / Double(count)
        // Until the horizon is reached each mean is the plain mean of everything seen, so a tiny
        // first batch (a share of 0 or 1) weighs no more than its items.
        let plain = Double(count) / Double(items + count)
        recent += max(1 - exp(-Double(count) / recentItems), plain) * (share - recent)
        // While a shift is under way the baseline holds: the new kind of news must not become
        // the norm before the loop has adapted to it (a new model resets it).
        if !isActive { baseline += max(1 - exp(-Double(count) / baselineItems), plain) * (share - baseline) }
        items += count
        guard items >= warmupItems else { return nil }
        if !isActive && isShift(recent: recent, baseline: baseline) {
            isActive = true
            return .began
        }
        if isActive && (recent <= baseline * (1 + ratio) / 2 || recent - baseline < minimumRise / 2) {
            isActive = false
            return .ended
        }
        return nil
    }
}
