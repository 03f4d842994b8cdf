import Foundation
import Synchronization

/// A value behind a lock, in a class so that closures and threads can share it; the one way
/// newsd shares mutable state between threads.
///
/// `@unchecked Sendable`: every access to `value` holds `lock`. The lock is a pthread mutex
/// (`NSLock`) rather than `Synchronization.Mutex`: ThreadSanitizer understands pthread mutexes,
/// while `Mutex` synchronises inside the uninstrumented standard library, so every access under
/// it is reported as a race and the sanitizer run could not tell real races from these.
public final class LockedValue<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    /// Wraps a value.
    public init(_ value: Value) { stored = value }
    /// Reads or changes the value under the lock.
    public func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&stored)
    }
    /// A copy of the value.
    public var value: Value { withLock { $0 } }
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
