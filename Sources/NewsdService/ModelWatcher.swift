import Foundation
import Logging
import NewsdCore
import NewsdModel
import NewsdPostgres
#if canImport(Glibc)
import Glibc
#endif

/// Hot swap: listens on `newsd_models` (and checks the registry every `checkSeconds` in case a
/// notification was missed while disconnected); when the active version differs from the one
/// serving, it loads the artifact from the database on its own thread, verifies every checksum,
/// and hands it to the pipeline, which swaps it in between batches. A corrupt artifact is refused:
/// the host keeps its model and says so in the log and in `/metrics`.
public final class ModelWatcher: @unchecked Sendable {
    private let configuration: NewsdConfiguration
    private let pipeline: IngestPipeline
    private let logger: Logger
    private let stopFlag = LockedValue(false)
    private let done = DispatchSemaphore(value: 0)
    /// Seconds between registry checks without a notification.
    public var checkSeconds = 15.0
    /// Versions refused (not retried until notified again).
    private var refused = Set<String>()

    /// A watcher for `pipeline`.
    public init(configuration: NewsdConfiguration, pipeline: IngestPipeline, logger: Logger) {
        self.configuration = configuration
        self.pipeline = pipeline
        self.logger = logger
    }

    /// Where artifacts are materialised: `model.cache_dir`, else `$STATE_DIRECTORY/models`, else
    /// the temporary directory.
    public static func cacheDirectory(_ c: NewsdConfiguration) -> URL {
        if !c.model.cacheDir.isEmpty { return URL(fileURLWithPath: c.model.cacheDir) }
        if let state = ProcessInfo.processInfo.environment["STATE_DIRECTORY"] { return URL(fileURLWithPath: state).appendingPathComponent("models") }
        return FileManager.default.temporaryDirectory.appendingPathComponent("newsd-models-\(getuid())")
    }

    /// Loads a registered version (materialise + verify). Throws if anything does not check out.
    public static func load(_ db: PostgresConnection, version: String, configuration c: NewsdConfiguration) throws -> StudentModel {
        let dir = try ModelRegistry.materialize(db, version: version, cache: cacheDirectory(c))
        let model = try Artifact.load(directory: dir, baseDirectory: c.model.baseDir.isEmpty ? nil : URL(fileURLWithPath: c.model.baseDir),
                                      threads: c.model.threads)
        guard model.version == version else { throw ServiceError("model \(version): the stored artifact has version \(model.version)") }
        return model
    }

    /// Starts the watching thread.
    public func start() {
        let t = Thread { [self] in loop(); done.signal() }
        t.name = "newsd-models"
        t.start()
    }

    /// Stops it and waits (at most a few seconds).
    public func stop() {
        stopFlag.withLock { $0 = true }
        _ = done.wait(timeout: .now() + 5)
    }

    private var stopping: Bool { stopFlag.withLock { $0 } }

    private func loop() {
        var db: PostgresConnection?
        var lastCheck = 0.0
        var backfilled = false
        while !stopping {
            do {
                if db == nil || !db!.isConnected {
                    db = try PostgresConnection(configuration.postgres.url)
                    try db!.execute("LISTEN \(ModelRegistry.channel)")
                    lastCheck = 0
                }
                var notified = false
                var pfd = pollfd(fd: db!.socket, events: Int16(POLLIN), revents: 0)
                if poll(&pfd, 1, 1000) > 0 {
                    let n = try db!.notifications().filter { $0.channel == ModelRegistry.channel }
                    if !n.isEmpty { notified = true; refused.subtract(n.map(\.payload)) }
                }
                // A host restarted after its first swap (or that crashed before backfilling)
                // finishes the cold-start backfill.
                if !backfilled && pipeline.activeModel.manifest != nil { try backfill(db!, model: pipeline.activeModel); backfilled = true }
                let now = Date().timeIntervalSince1970
                if notified || now - lastCheck > checkSeconds {
                    lastCheck = now
                    try check(db!)
                }
            } catch {
                logger.warning("model watcher: database unavailable, retrying", metadata: ["error": "\(error)"])
                db = nil
                Thread.sleep(forTimeInterval: 1)
            }
        }
    }

    /// Cold start: items that arrived before the first trained model got only the untrained
    /// base's prediction; classify them now (one host does it, under an advisory lock).
    func backfill(_ db: PostgresConnection, model: StudentModel) throws {
        guard try db.execute("SELECT pg_try_advisory_lock($1)", [String(Schema.migrationLock + 3)]).rows.first?[0] == "t" else { return }
        defer { _ = try? db.execute("SELECT pg_advisory_unlock($1)", [String(Schema.migrationLock + 3)]) }
        let n = try Rescorer.rescore(db, model: model, selection: .withoutTrainedPrediction)
        if n > 0 { logger.notice("cold start: items that arrived before the first model classified", metadata: ["items": "\(n)", "version": "\(model.version)"]) }
    }

    private func check(_ db: PostgresConnection) throws {
        guard let active = try ModelRegistry.active(db) else { return }
        let serving = pipeline.activeModel.version
        guard active.version != serving, !refused.contains(active.version) else { return }
        let start = Date()
        do {
            let model = try Self.load(db, version: active.version, configuration: configuration)
            let wasUntrained = pipeline.activeModel.manifest == nil
            pipeline.swapModel(model)
            pipeline.recordSwap(failed: false)
            logger.notice("model swapped in", metadata: ["version": "\(active.version)", "seq": "v\(active.seq)", "previous": "\(serving)",
                                                         "load_seconds": "\(String(format: "%.2f", Date().timeIntervalSince(start)))"])
            if wasUntrained { try backfill(db, model: model) }
        } catch let e as PostgresError {
            throw e   // transient: reconnect and try again at the next check
        } catch let e where e is ModelError || e is ServiceError {
            refused.insert(active.version)
            pipeline.recordSwap(failed: true)
            logger.error("refusing model: keeping the one serving", metadata: ["version": "\(active.version)", "serving": "\(serving)", "error": "\(e)"])
        } catch {
            // Disk full, cache not writable...: this host's problem, not the model's; retried.
            logger.error("cannot load model now; keeping the one serving, retrying", metadata: ["version": "\(active.version)", "error": "\(error)"])
        }
    }
}
