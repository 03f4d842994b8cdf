import Foundation
import Logging
import NewsdModel
import NewsdOps
import NewsdSystem
import ServiceLifecycle

/// The distillation loop as a `Service`: every `trainer.check_seconds` it runs one `Distiller`
/// check on a dedicated low-priority thread (training blocks for minutes; it must never sit on
/// Swift's cooperative pool). Only the host holding the advisory lock trains. A stop (graceful
/// shutdown or cancellation) interrupts a training run between two optimizer steps. A failed
/// run is retried with the shared backoff, never in a tight loop.
public final class TrainerService: Service, Sendable {
    private let configuration: NewsdConfiguration
    private let logger: Logger
    private let stop = StopFlag()
    /// Backoff after failed runs (the check interval is the floor).
    private let failurePolicy: RetryPolicy

    /// The daemon's metrics (training runs and durations).
    public let metrics: NewsdMetrics

    /// A trainer for this configuration.
    public init(configuration: NewsdConfiguration, logger: Logger, metrics: NewsdMetrics = NewsdMetrics()) {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        let interval = configuration.trainer.checkSeconds.value
        failurePolicy = RetryPolicy(initialDelay: interval, multiplier: 2, maxDelay: max(interval, 900), jitter: 0.2)
    }

    /// The training thread while it runs niced (its priority is restored on a stop).
    private let nicedThread = LockedValue<Int32?>(nil)

    /// Stops the loop; a run in progress ends at its next step. The training thread gets its
    /// normal priority back first: niced, it could be starved for many seconds by the work around
    /// it and miss the shutdown bound.
    public func requestStop() {
        stop.set()
        if let tid = nicedThread.value { ThreadPriority.restore(tid) }
    }

    /// Runs checks until stopped.
    public func run() async throws {
        let (c, logger, stop, niced, metrics) = (configuration, logger, stop, nicedThread, metrics)
        var failures = 0
        var generator = SystemRandomNumberGenerator()
        while !stop.isSet && !Task.isCancelled && !Task.isShuttingDownGracefully {
            let started = monotonicSeconds()
            let outcome = try await runBlockingService(thread: "newsd-trainer", stop: { [self] in requestStop() }) {
                defer { niced.withLock { $0 = nil } }
                return Result { try Distiller.runOnce(c, logger: logger, cancel: stop, onLowPriority: { tid in niced.withLock { $0 = tid } }) }
            }
            let label: String?
            switch outcome {
            case .success(.skipped): label = nil
            case .success(.promoted): label = "promoted"
            case .success(.rejected): label = "rejected"
            case .failure(ModelError.cancelled): label = "cancelled"
            case .failure: label = "failed"
            }
            if let label {
                metrics.increment("newsd_training_runs_total", [("outcome", label)])
                metrics.observe("newsd_training_duration_seconds", monotonicSeconds() - started)
            }
            var wait = c.trainer.checkSeconds.value
            switch outcome {
            case let .success(.skipped(why)): failures = 0; logger.debug("trainer: nothing to do", metadata: ["why": "\(why)"])
            case let .success(.promoted(m)): failures = 0; logger.notice("trainer: promoted v\(m.seq)", metadata: ["version": "\(m.version)"])
            case let .success(.rejected(m, why)): failures = 0; logger.warning("trainer: rejected v\(m.seq)", metadata: ["version": "\(m.version)", "reasons": "\(why)"])
            case .failure(ModelError.cancelled): logger.info("trainer: run stopped by shutdown; nothing registered")
            case let .failure(e):
                failures += 1
                wait = failurePolicy.delay(afterAttempt: failures, using: &generator)
                logger.error("trainer: run failed; will try again", metadata: ["error": "\(e)", "attempt": "\(failures)", "retry_in_s": "\(String(format: "%.2f", wait))"])
            }
            // The wait ends early on a stop (SIGTERM must not wait out a check interval).
            let deadline = Date().addingTimeInterval(wait)
            while !stop.isSet && Date() < deadline && !Task.isCancelled && !Task.isShuttingDownGracefully {
                try? await Task.sleep(for: .milliseconds(min(250, max(1, Int(deadline.timeIntervalSinceNow * 1000)))))
            }
        }
        await awaitShutdownTurn()
    }
}
