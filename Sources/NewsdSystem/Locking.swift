import Synchronization

/// A value behind a `Mutex`, in a class so that closures and threads can share it. Sendable
/// without `@unchecked`: every access goes through the mutex.
public final class LockedValue<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    /// Wraps a value.
    public init(_ value: Value) { mutex = Mutex(value) }
    /// Reads or changes the value under the lock.
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        try mutex.withLock { value in try body(&value) }
    }
    /// A copy of the value.
    public var value: Value { mutex.withLock { $0 } }
}

/// A one-way flag (stop requested, run cancelled) that any thread may set and blocking loops
/// poll between steps. Services set it on graceful shutdown and on cancellation (see `runBlockingService`).
public final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    /// A flag not yet set.
    public init() {}
    /// Sets it (idempotent).
    public func set() { flag.store(true, ordering: .releasing) }
    /// Whether it was set.
    public var isSet: Bool { flag.load(ordering: .acquiring) }
}
