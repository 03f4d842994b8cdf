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

/// A task executor on its own threads (a concurrent dispatch queue), for work that must keep
/// answering when Swift's cooperative pool is busy or blocked: the operators' HTTP endpoint and
/// the dev teacher run under it (`withTaskExecutorPreference`), so a scrape or a health check is
/// never queued behind a busy pool.
public final class DedicatedTaskExecutor: TaskExecutor, @unchecked Sendable {
    private let queue: DispatchQueue

    /// An executor whose threads carry `label`.
    public init(label: String) { queue = DispatchQueue(label: label, attributes: .concurrent) }

    /// Runs the job on the executor's queue.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { [self] in job.runSynchronously(on: asUnownedTaskExecutor()) }
    }
}
