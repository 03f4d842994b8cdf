import NewsdSystem

/// The outputs of one model for texts it has seen: news repeats (wire copies, syndicated and
/// re-posted items), and an exact repeat needs no encoder pass. Keyed by the exact text (no hash
/// collisions), bounded by two generations: when the current one holds `capacity / 2` texts, or
/// `capacity / 2 * bytesPerEntry` bytes of text, it becomes the previous one and the older is
/// dropped, so the texts seen recently stay and memory stays bounded even when every text is as
/// long as ingest allows. Belongs to one `StudentModel`, so a model swap starts empty.
public final class PredictionCache: Sendable {
    private struct Generations: Sendable {
        var current: [String: Prediction] = [:]
        var previous: [String: Prediction] = [:]
        var currentBytes = 0
        var hits = 0, lookups = 0
    }
    private let state = LockedValue(Generations())
    /// Entries kept at most (0 = off).
    public let capacity: Int
    /// Text bytes budgeted per entry: long texts fill a generation sooner (an 8 kB text counts
    /// as 16 entries), so the cache holds at most `capacity * bytesPerEntry` bytes of text.
    public static let bytesPerEntry = 512

    /// A cache of at most `capacity` predictions (0 turns it off).
    public init(capacity: Int) { self.capacity = max(0, capacity) }

    /// The cached prediction of each text (nil where none), counting the lookups.
    func lookup(_ texts: [String]) -> [Prediction?] {
        guard capacity > 0 else { return Array(repeating: nil, count: texts.count) }
        return state.withLock { s in
            let found = texts.map { t -> Prediction? in
                if let p = s.current[t] { return p }
                guard let p = s.previous[t] else { return nil }
                s.current[t] = p          // seen again: keep it in the newer generation
                s.currentBytes += t.utf8.count
                return p
            }
            s.lookups += texts.count
            s.hits += found.count { $0 != nil }
            rotate(&s)
            return found
        }
    }

    /// Stores new predictions.
    func store(_ texts: [String], _ predictions: [Prediction]) {
        guard capacity > 0 else { return }
        state.withLock { s in
            for (t, p) in zip(texts, predictions) { s.current[t] = p; s.currentBytes += t.utf8.count; rotate(&s) }
        }
    }

    private func rotate(_ s: inout Generations) {
        let half = max(1, capacity / 2)
        if s.current.count >= half || s.currentBytes >= half * Self.bytesPerEntry {
            s.previous = s.current
            s.current = [:]
            s.currentBytes = 0
        }
    }

    /// Lookups answered from the cache, and all lookups, since the model was loaded.
    public var counts: (hits: Int, lookups: Int) { state.withLock { ($0.hits, $0.lookups) } }

    /// Texts held now.
    public var count: Int { state.withLock { $0.current.count + $0.previous.count } }
}
