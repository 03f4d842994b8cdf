import NewsdSystem

/// The one error type of `NewsdIngest`'s own checks (the portfolio file); transport and database
/// errors pass through as `KafkaError` and `PostgresError`, which say whether they are retriable.
public struct IngestError: Error, CustomStringConvertible, Equatable, Sendable, RetryClassifiable {
    /// What is wrong and where.
    public var description: String
    /// Always false: the input is wrong.
    public var isRetriable: Bool { false }
    init(_ description: String) { self.description = description }
}
