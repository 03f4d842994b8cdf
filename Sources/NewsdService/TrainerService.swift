import Foundation
import Logging
import NewsdCore
import ServiceLifecycle

/// The distillation loop as a `Service`: every `trainer.check_seconds` it runs one `Distiller`
/// check on a dedicated low-priority thread (training blocks for minutes; it must never sit on
/// Swift's cooperative pool). Only the host holding the advisory lock trains.
public final class TrainerService: Service, @unchecked Sendable {
    private let configuration: NewsdConfiguration
    private let logger: Logger

    /// A trainer for this configuration.
    public init(configuration: NewsdConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs checks until graceful shutdown (a run in progress finishes first).
    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let (c, logger) = (configuration, logger)
            let outcome: Result<DistillationOutcome, Error> = await withCheckedContinuation { continuation in
                let t = Thread { continuation.resume(returning: Result { try Distiller.runOnce(c, logger: logger) }) }
                t.name = "newsd-trainer"
                t.stackSize = 8 << 20
                t.start()
            }
            switch outcome {
            case let .success(.skipped(why)): logger.debug("trainer: nothing to do", metadata: ["why": "\(why)"])
            case let .success(.promoted(m)): logger.notice("trainer: promoted v\(m.seq)", metadata: ["version": "\(m.version)"])
            case let .success(.rejected(m, why)): logger.warning("trainer: rejected v\(m.seq)", metadata: ["version": "\(m.version)", "reasons": "\(why)"])
            case let .failure(e): logger.error("trainer: run failed; will try again", metadata: ["error": "\(e)"])
            }
            // The wait ends early on graceful shutdown (SIGTERM must not wait out a check interval).
            let interval = UInt64(configuration.trainer.checkSeconds * 1e9)
            try? await cancelWhenGracefulShutdown { try await Task.sleep(nanoseconds: interval) }
        }
    }
}
