import Foundation
import ServiceLifecycle

/// Runs blocking work (librdkafka poll, libpq, BLAS, training) on a new dedicated thread and
/// awaits its result, so the work never occupies a thread of Swift's cooperative pool.
public func runOnDedicatedThread<T: Sendable>(_ name: String, stackSize: Int = 8 << 20,
                                              _ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, Error>) in
        let thread = Thread { continuation.resume(with: Result { try body() }) }
        thread.name = name
        thread.stackSize = stackSize
        thread.start()
    }
}

/// The body of a `Service` whose work is a blocking loop: runs `loop` on a dedicated thread and
/// calls `stop` (which must make the loop return soon) on graceful shutdown and on task
/// cancellation alike, then waits for the loop to return. A cancelled `ServiceGroup` therefore
/// never hangs on it, and the loop always finishes what it must (a batch, a release) first.
public func runBlockingService<T: Sendable>(thread name: String, stop: @escaping @Sendable () -> Void,
                                            _ loop: @escaping @Sendable () throws -> T) async throws -> T {
    try await withTaskCancellationHandler {
        try await withGracefulShutdownHandler {
            try await runOnDedicatedThread(name, loop)
        } onGracefulShutdown: {
            stop()
        }
    } onCancel: {
        stop()
    }
}

/// Waits until the group asks this service to shut down (or cancels it). A service stopped early
/// by `ShutdownBroadcast` calls this before returning: `ServiceGroup` expects services to finish
/// in its reverse order, and its work is already done, so the wait costs nothing.
public func awaitShutdownTurn() async {
    if !Task.isShuttingDownGracefully && !Task.isCancelled { try? await gracefulShutdown() }
}

/// Fans one stop out to every long-lived part at once. ServiceLifecycle shuts services down one
/// after another in reverse order; registered here, they all start stopping on the first signal,
/// so the whole daemon stops within one shutdown bound rather than the sum of them.
public final class ShutdownBroadcast: Service, Sendable {
    private let handlers = LockedValue<[@Sendable () -> Void]>([])
    private let fired = StopFlag()

    /// An empty broadcast.
    public init() {}

    /// Calls `handler` once on the first graceful shutdown or cancellation.
    public func onStop(_ handler: @escaping @Sendable () -> Void) { handlers.withLock { $0.append(handler) } }

    /// Whether the stop was broadcast.
    public var isStopping: Bool { fired.isSet }

    /// Fires the handlers now (idempotent).
    public func fire() {
        guard !fired.isSet else { return }
        fired.set()
        for h in handlers.value { h() }
    }

    /// Waits for graceful shutdown or cancellation, then fires. Put it last in the group so it is
    /// the first to hear the shutdown.
    public func run() async throws {
        try? await gracefulShutdown()
        fire()
    }
}

/// A task executor on threads of its own, for work that must keep answering when Swift's
/// cooperative pool is busy or blocked: the operators' HTTP endpoint, the alert service and the
/// dev teacher run under it (`withTaskExecutorPreference`), so a scrape or a health check is never
/// queued behind a busy pool. Its threads are its own, not dispatch's: on Linux a dispatch queue
/// runs on dispatch's shared pool, capped at the core count and kept busy by the encoder's and the
/// trainer's `concurrentPerform`, so work on it could wait as long as a batch or a training step.
///
/// `@unchecked Sendable`: the job queue is guarded by `condition`.
public final class DedicatedTaskExecutor: TaskExecutor, @unchecked Sendable {
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var head = 0
    /// The executor's threads, as they start (tests check that jobs run on them).
    private var threadIDs: [pthread_t] = []

    /// Whether the calling thread is one of the executor's.
    var isCurrentThread: Bool {
        condition.lock()
        defer { condition.unlock() }
        return threadIDs.contains(pthread_self())
    }

    /// An executor with `threads` threads named `label-<i>`. They live as long as the process
    /// (executors are static). Jobs should not block for long: a blocked job holds a thread.
    public init(label: String, threads: Int = 4) {
        for i in 0..<max(1, threads) {
            let name = "\(label)-\(i)"
            let thread = Thread { [self] in
                condition.lock()
                threadIDs.append(pthread_self())
                condition.unlock()
                work()
            }
            thread.name = name
            thread.start()
        }
    }

    private func work() {
        while true {
            condition.lock()
            while head == jobs.count { condition.wait() }
            let job = jobs[head]
            head += 1
            if head == jobs.count { jobs.removeAll(keepingCapacity: true); head = 0 }
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }

    /// Queues the job for the executor's threads (first in, first out).
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }
}
