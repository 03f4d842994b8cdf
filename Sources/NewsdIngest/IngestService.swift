import Foundation
import Logging
import NewsdSystem
import ServiceLifecycle

/// The ingest path as a `Service`: runs the blocking `IngestPipeline` on a dedicated thread and
/// asks it to stop (finish the batch in flight, commit, leave the group) on graceful shutdown
/// or cancellation, within `ingest.shutdown_timeout_seconds`.
public final class IngestService: Service, Sendable {
    /// The pipeline it runs.
    public let pipeline: IngestPipeline
    private let logger: Logger

    /// Wraps a pipeline.
    public init(pipeline: IngestPipeline, logger: Logger) {
        self.pipeline = pipeline
        self.logger = logger
    }

    /// Asks the pipeline to stop (idempotent).
    public func requestStop() {
        guard !pipeline.isStopping else { return }
        logger.info("shutdown requested: finishing the batch in flight")
        SystemdNotifier.notify("STOPPING=1")
        pipeline.requestStop()
    }

    /// Runs until the pipeline ends.
    public func run() async throws {
        let pipeline = self.pipeline
        try await runBlockingService(thread: "newsd-ingest", stop: { [self] in requestStop() }) { try pipeline.run() }
        if pipeline.isStopping { await awaitShutdownTurn() }
    }
}
