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
    /// When each line was logged (same order as `lines`).
    var times: LockedValue<[Date]>? = nil
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        // One lock for both, so the two lists stay aligned.
        lines.withLock { l in
            l.append(("\(event.message)", self.metadata.merging(event.metadata ?? [:]) { $1 }))
            times?.withLock { $0.append(Date()) }
        }
    }
}

@Suite("Trainer failures back off")
struct TrainerBackoffTests {
    /// The service and the poller run on threads of their own: on the 2-thread cooperative pool,
    /// other suites' synchronous tests held both threads for two minutes in one CI run, and the
    /// trainer's sleeps could not resume (3 attempts in 120 s instead of 4 in about 2 s).
    static let executor = DedicatedTaskExecutor(label: "trainer-backoff-tests")

    /// Before: a failing run (Postgres unreachable) was retried every check interval, for ever.
    /// Lower bounds only (a loaded machine may make attempts later, never earlier).
    @Test("failed runs are retried with growing delays, not every check")
    func failuresBackOff() async throws {
        try await withTaskExecutorPreference(Self.executor) { try await checkBackoff() }
    }

    private func checkBackoff() async throws {
        let lines = LockedValue<[(message: String, metadata: Logger.Metadata)]>([])
        let times = LockedValue<[Date]>([])
        let logger = Logger(label: "trainer-backoff") { _ in RecordingLogHandler(lines: lines, times: times) }
        var c = NewsdConfiguration()
        c.postgres.url = "postgresql://postgres@127.0.0.1:1/none"   // connection refused: a transient failure
        c.model.dir = Harness.tinyModel.path
        c.trainer.checkSeconds = 0.2
        let trainer = TrainerService(configuration: c, logger: logger)
        let task = Task(executorPreference: Self.executor) { try await trainer.run() }
        let deadline = Date().addingTimeInterval(120)
        while lines.value.filter({ $0.message.hasPrefix("trainer: run failed") }).count < 4 && Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        task.cancel()
        _ = await task.result
        let failures = lines.value.indices.filter { lines.value[$0].message.hasPrefix("trainer: run failed") }
        let delays = failures.compactMap { lines.value[$0].metadata["retry_in_s"].flatMap { Double("\($0)") } }
        let at = failures.map { times.value[$0] }
        #expect(failures.count >= 4, "\(failures.count) failures")
        // The announced delays double (0.2, 0.4, 0.8 s, each ± 20 %) ...
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $1 >= $0 * 1.3 }, "delays do not grow: \(delays)")
        // ... and no attempt came before its delay was over (every check would be 0.2 s apart).
        for (k, gap) in zip(at, at.dropFirst()).map({ $1.timeIntervalSince($0) }).enumerated() {
            #expect(gap >= delays[k] * 0.95, "attempt \(k + 2) came \(gap) s after the one before, announced \(delays[k]) s")
        }
    }
}
