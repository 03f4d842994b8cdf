import Foundation

/// A one-slot stage on its own thread: the ingest thread hands it a batch's write and goes on to
/// read and classify the next batch meanwhile. At most one job runs or waits: `submit` first
/// waits for the previous job to finish (back-pressure), so a slow database slows reading down
/// instead of queueing batches. A job's error is kept and rethrown by the next `submit` or
/// `drain`, on the submitting thread.
///
/// `@unchecked Sendable`: every field is guarded by `condition`; the job closure is handed from
/// the submitting thread to the stage's thread under that lock (the lock orders the two).
public final class WriteBehind: @unchecked Sendable {
    private let condition = NSCondition()
    private var job: (() throws -> Void)?
    private var failure: Error?
    private var closed = false

    /// Starts the stage's thread, named `name` (visible in `top -H` and stack dumps).
    public init(name: String) {
        let thread = Thread { [self] in loop() }
        thread.name = name
        thread.stackSize = 8 << 20
        thread.start()
    }

    private func loop() {
        condition.lock()
        while true {
            while job == nil && !closed { condition.wait() }
            guard let work = job else { break }
            condition.unlock()
            var error: Error?
            do { try work() } catch let e { error = e }
            condition.lock()
            job = nil
            if let error, failure == nil { failure = error }
            condition.broadcast()
        }
        condition.unlock()
    }

    /// Waits for the job in flight, then runs `work` on the stage's thread; rethrows the previous
    /// job's error instead (then `work` does not run).
    public func submit(_ work: @escaping () throws -> Void) throws {
        condition.lock()
        defer { condition.unlock() }
        while job != nil { condition.wait() }
        if let f = failure { failure = nil; throw f }
        precondition(!closed, "WriteBehind used after close")
        job = work
        condition.broadcast()
    }

    /// Waits until no job runs, and rethrows the last job's error.
    public func drain() throws {
        condition.lock()
        defer { condition.unlock() }
        while job != nil { condition.wait() }
        if let f = failure { failure = nil; throw f }
    }

    /// Whether a job runs now (the ingest loop counts as progressing only while its write does not
    /// hang: a write blocked on a lock must stop the watchdog's pings even though the loop turns).
    public var isBusy: Bool {
        condition.lock()
        defer { condition.unlock() }
        return job != nil
    }

    /// Waits until no job runs; an error stays for the next `submit` or `drain` (for callers that
    /// cannot throw, such as a rebalance callback that must not return while a write is in flight).
    public func waitIdle() {
        condition.lock()
        defer { condition.unlock() }
        while job != nil { condition.wait() }
    }

    /// Lets the thread end once the job in flight (if any) has finished.
    public func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}
