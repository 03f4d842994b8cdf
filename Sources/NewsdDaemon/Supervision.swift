import Foundation
import Logging
import NewsdIngest
import NewsdOps
import NewsdSystem
import NewsdTeacher
import ServiceLifecycle
import UnixSignals

/// Figures of this process read from `/proc`.
enum ProcessFigures {
    /// Resident set size in bytes (`/proc/self/statm`, second field, in pages).
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Open file descriptors.
    static func openDescriptors() -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
    }
}

/// Talks to systemd while the daemon runs: `WATCHDOG=1` only while the ingest loop makes
/// progress (a loop blocked in a call stops the pings, and systemd restarts the service after
/// `WatchdogSec=`), and a one-line `STATUS=` every ten seconds (rate, lag, model, teacher spend
/// today). It also keeps the gauges that are read rather than counted up to date.
public final class SystemdSupervisor: Service, Sendable {
    private let pipeline: IngestPipeline
    private let worker: TeacherWorker?
    private let metrics: NewsdMetrics
    private let logger: Logger
    /// Seconds between pings (half of systemd's interval); nil when the watchdog is off.
    public let pingInterval: Double?
    private let stop = StopFlag()

    /// A supervisor of `pipeline`; the watchdog interval comes from `WATCHDOG_USEC`.
    public init(pipeline: IngestPipeline, worker: TeacherWorker?, metrics: NewsdMetrics, logger: Logger,
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.pipeline = pipeline
        self.worker = worker
        self.metrics = metrics
        self.logger = logger
        pingInterval = SystemdNotifier.watchdogInterval(environment: environment).map { $0 / 2 }
    }

    /// Stops at once (the daemon is shutting down; systemd's stop timeout bounds the rest).
    public func requestStop() { stop.set() }

    /// Runs until shutdown.
    public func run() async throws {
        if let pingInterval { logger.info("systemd watchdog on", metadata: ["ping_every_s": "\(pingInterval)"]) }
        var lastProgress = pipeline.progress, lastPing = monotonicSeconds(), lastStatus = -1e9
        var servingVersion = "", swapsSeen = 0, refusedSeen = 0
        var rate = RateWindow()
        while !stop.isSet && !Task.isCancelled && !Task.isShuttingDownGracefully {
            let now = monotonicSeconds()
            if let pingInterval, now - lastPing >= pingInterval {
                let progress = pipeline.progress
                if progress != lastProgress {
                    SystemdNotifier.notify("WATCHDOG=1")
                    metrics.increment("newsd_watchdog_pings_total")
                    lastProgress = progress
                } else if !pipeline.isStopping {
                    logger.warning("ingest loop made no progress; withholding the systemd watchdog ping", metadata: ["for_s": "\(Int(now - lastPing))"])
                }
                lastPing = now
            }
            // The model serving, and swaps done or refused by the watcher.
            let model = pipeline.activeModel
            if model.version != servingVersion {
                if !servingVersion.isEmpty { metrics.remove("newsd_model_info", [("version", servingVersion)]) }
                metrics.set("newsd_model_info", [("version", model.version)], 1)
                servingVersion = model.version
            }
            let counts = pipeline.serving.counts
            metrics.increment("newsd_model_swaps_total", by: counts.swaps - swapsSeen)
            metrics.increment("newsd_model_swap_failures_total", by: counts.refused - refusedSeen)
            (swapsSeen, refusedSeen) = (counts.swaps, counts.refused)
            worker?.publishGauges()
            rate.add(consumed: pipeline.statistics.consumed, at: now)
            if now - lastStatus >= 10 {
                lastStatus = now
                SystemdNotifier.notify("STATUS=" + statusLine(rate: rate.perSecond, model: model.version))
            }
            try? await Task.sleep(for: .milliseconds(250))
        }
        await awaitShutdownTurn()
    }

    /// One human line for `systemctl status`.
    func statusLine(rate: Double, model: String) -> String {
        let h = pipeline.health
        let lag = metrics.gaugeSum("newsd_consumer_lag_messages")
        var parts = [String(format: "%.1f msg/s", rate), "lag \(Int(lag))", "partitions \(h.assignedPartitions)", "model \(model)"]
        if let worker {
            parts.append(String(format: "teacher $%.2f today", worker.teacherClient.ledger.spentToday))
        }
        if !h.postgresUp { parts.append("postgres DOWN") }
        if !h.kafkaUp { parts.append("kafka DOWN") }
        return parts.joined(separator: ", ")
    }
}

/// Messages consumed per second over the last minute, from samples of the running total.
struct RateWindow {
    private var samples: [(at: Double, consumed: Int)] = []

    mutating func add(consumed: Int, at now: Double) {
        samples.append((now, consumed))
        while let first = samples.first, now - first.at > 60 { samples.removeFirst() }
    }

    var perSecond: Double {
        guard let a = samples.first, let b = samples.last, b.at > a.at else { return 0 }
        return Double(b.consumed - a.consumed) / (b.at - a.at)
    }
}

/// SIGHUP: re-reads the configuration and applies the safe parts (see `ReloadPlan`).
public final class ReloadService: Service, Sendable {
    private let reload: @Sendable () async -> Void

    /// Calls `reload` on every SIGHUP.
    public init(reload: @escaping @Sendable () async -> Void) { self.reload = reload }

    /// Waits for signals until shutdown.
    public func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await withGracefulShutdownHandler {
            for await _ in signals.cancelOnGracefulShutdown() { await reload() }
        } onGracefulShutdown: {}
    }
}
