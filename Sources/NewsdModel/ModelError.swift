import NewsdSystem

/// The one error type of `NewsdModel`. Every case names the file or value at fault; none is
/// retriable by waiting (a model file does not repair itself), so `isRetriable` is always false.
public enum ModelError: Error, CustomStringConvertible, Equatable, RetryClassifiable {
    /// A required file is missing or unreadable.
    case missingFile(String, underlying: String)
    /// A file exists but its content is wrong (format, JSON, dtype, shape).
    case invalidFile(String, reason: String)
    /// A checksum did not match: the file is corrupt, truncated or from another model.
    case checksumMismatch(String, expected: String, actual: String)
    /// The configuration asks for something this engine does not support.
    case unsupported(String)
    /// An argument is out of range (label unknown, empty data set, bad trainable scope, ...).
    case invalidArgument(String)
    /// Writing an artifact failed.
    case writeFailed(String, reason: String)
    /// A training run or a batch job was stopped between two steps (shutdown); nothing was kept.
    case cancelled(String)

    /// Whether trying again unchanged could succeed. Model errors never do.
    public var isRetriable: Bool { false }

    /// A one-line message for logs and the command line.
    public var description: String {
        switch self {
        case let .missingFile(path, underlying): return "cannot read \(path): \(underlying)"
        case let .invalidFile(path, reason): return "invalid \(path): \(reason)"
        case let .checksumMismatch(path, expected, actual):
            return "checksum mismatch for \(path): expected \(expected), found \(actual) (corrupt, truncated or replaced)"
        case let .unsupported(what): return "unsupported: \(what)"
        case let .invalidArgument(what): return "invalid argument: \(what)"
        case let .writeFailed(path, reason): return "cannot write \(path): \(reason)"
        case let .cancelled(what): return "\(what) cancelled"
        }
    }
}
