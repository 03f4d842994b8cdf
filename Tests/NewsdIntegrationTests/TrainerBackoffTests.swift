import Foundation
import Logging
import NewsdDistill
import NewsdOps
import NewsdSystem
import ServiceLifecycle
import Testing

/// Log lines kept in memory, for checking what a service said.
struct RecordingLogHandler: LogHandler {
    let lines: LockedValue<[(message: String, metadata: Logger.Metadata)]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        lines.withLock { $0.append(("\(message)", self.metadata.merging(metadata ?? [:]) { $1 })) }
    }
}

@Suite("Trainer failures back off")
struct TrainerBackoffTests {
    /// Before: a failing run (Postgres unreachable) was retried every check interval, for ever.
    @Test("failed runs are retried with growing delays, not every check")
    func failuresBackOff() async throws {
        let lines = LockedValue<[(message: String, metadata: Logger.Metadata)]>([])
        let logger = Logger(label: "trainer-backoff") { _ in RecordingLogHandler(lines: lines) }
        var c = NewsdConfiguration()
        c.postgres.url = "postgresql://postgres@127.0.0.1:1/none"   // connection refused: a transient failure
        c.model.dir = Harness.tinyModel.path
        c.trainer.checkSeconds = 0.2
        let trainer = TrainerService(configuration: c, logger: logger)
        let task = Task { try await trainer.run() }
        try await Task.sleep(for: .seconds(3.5))
        task.cancel()
        _ = await task.result
        let failures = lines.value.filter { $0.message.hasPrefix("trainer: run failed") }
        let delays = failures.compactMap { $0.metadata["retry_in_s"].flatMap { Double("\($0)") } }
        // Every 0.2 s would be ~17 attempts; with the backoff (0.2, 0.4, 0.8, 1.6 s ± 20 %) at most 6.
        #expect(failures.count >= 2 && failures.count <= 6, "\(failures.count) attempts in 3.5 s: \(delays)")
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $0 <= $1 + 1e-9 }, "delays do not grow: \(delays)")
    }
}
