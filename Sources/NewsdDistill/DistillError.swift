import NewsdSystem

/// The one error type of `NewsdDistill`: a registry or training problem that waiting does not fix
/// (an unknown version, no model to roll back to, a stored artifact that does not check out).
/// Database and model errors pass through as `PostgresError` and `ModelError`.
public struct DistillError: Error, CustomStringConvertible, Sendable, RetryClassifiable {
    /// What is wrong.
    public var description: String
    /// Always false.
    public var isRetriable: Bool { false }
    init(_ description: String) { self.description = description }
}
