import NewsdSystem

/// The student serving now, shared by the ingest loop (which reads it once per batch, so a batch
/// is classified by one model) and the model watcher (which swaps in promoted models). Also
/// counts swaps and refused models for `/metrics`.
public final class ServingModel: Sendable {
    private struct State: Sendable {
        var model: StudentModel
        var swaps = 0
        var refused = 0
    }
    private let state: LockedValue<State>

    /// Serves `model`.
    public init(_ model: StudentModel) { state = LockedValue(State(model: model)) }

    /// The model serving now.
    public var model: StudentModel { state.withLock { $0.model } }

    /// Swaps in `model`; the next batch uses it.
    public func swap(to model: StudentModel) { state.withLock { $0.model = model; $0.swaps += 1 } }

    /// Counts a promoted model this host refused (corrupt or unloadable); it keeps its model.
    public func recordRefusal() { state.withLock { $0.refused += 1 } }

    /// Models swapped in and models refused so far.
    public var counts: (swaps: Int, refused: Int) { state.withLock { ($0.swaps, $0.refused) } }
}
