import NewsdSystem

/// The outputs of one model for texts it has seen: news repeats (wire copies, syndicated and
/// re-posted items), and an exact repeat needs no encoder pass. Keyed by the exact text (no hash
/// collisions), bounded by two generations: when the current one holds `capacity / 2` texts it
/// becomes the previous one and the older is dropped, so the texts seen recently stay and memory
/// stays within `capacity` entries. Belongs to one `StudentModel`, so a model swap starts empty.
public final class PredictionCache: Sendable {
    private struct Generations: Sendable {
        var current: [String: Prediction] = [:]
        var previous: [String: Prediction] = [:]
        var hits = 0, lookups = 0
    }
    private let state = LockedValue(Generations())
    /// Entries kept at most (0 = off).
    public let capacity: Int

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
            for (t, p) in zip(texts, predictions) { s.current[t] = p; rotate(&s) }
        }
    }

    private func rotate(_ s: inout Generations) {
        if s.current.count >= max(1, capacity / 2) { s.previous = s.current; s.current = [:] }
    }

    /// Lookups answered from the cache, and all lookups, since the model was loaded.
    public var counts: (hits: Int, lookups: Int) { state.withLock { ($0.hits, $0.lookups) } }

    /// Texts held now.
    public var count: Int { state.withLock { $0.current.count + $0.previous.count } }
}
