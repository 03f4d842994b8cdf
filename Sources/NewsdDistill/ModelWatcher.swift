import Foundation
import Logging
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher
import ServiceLifecycle

/// Hot swap: listens on `newsd_models` (and checks the registry every `checkSeconds` in case a
/// notification was missed while disconnected); when the active version differs from the one
/// serving, it loads the artifact from the database on its own thread, verifies every checksum,
/// and hands it to the pipeline, which swaps it in between batches. A corrupt artifact is refused:
/// the host keeps its model and says so in the log and in `/metrics`. A `Service`: a stop
/// (graceful shutdown or cancellation) ends the loop within a second, also mid-backfill (the
/// backfill stops between chunks).
public final class ModelWatcher: Service, Sendable {
    private let configuration: NewsdConfiguration
    private let serving: ServingModel
    private let logger: Logger
    private let stop = StopFlag()
    /// Seconds between registry checks without a notification.
    public let checkSeconds: Double
    /// Versions refused (not retried until notified again); touched by the watcher thread only.
    private let refused = LockedValue(Set<String>())
    /// Cancels the statement the watcher's connection is running (a backfill chunk), so a stop
    /// never waits for a query.
    private let canceller = LockedValue<PostgresCanceller?>(nil)

    /// A watcher that swaps promoted models into `serving`.
    public init(configuration: NewsdConfiguration, serving: ServingModel, logger: Logger, checkSeconds: Double = 15) {
        self.configuration = configuration
        self.serving = serving
        self.logger = logger
        self.checkSeconds = checkSeconds
    }

    /// Where artifacts are materialised: `model.cache_dir`, else `$STATE_DIRECTORY/models`, else
    /// the temporary directory.
    public static func cacheDirectory(_ c: NewsdConfiguration) -> URL {
        if !c.model.cacheDir.isEmpty { return URL(fileURLWithPath: c.model.cacheDir) }
        if let state = ProcessInfo.processInfo.environment["STATE_DIRECTORY"] { return URL(fileURLWithPath: state).appendingPathComponent("models") }
        return FileManager.default.temporaryDirectory.appendingPathComponent("newsd-models-\(currentUserID)")
    }

    /// The encoder precision `model.precision` names, on this CPU: `int8` takes the fastest
    /// kernel path of the CPU's feature flags; a named path the CPU cannot run stops start-up.
    public static func precision(_ c: NewsdConfiguration) throws -> EncoderPrecision {
        guard let p = EncoderPrecision(configuration: c.model.precision) else {
            throw ConfigurationError(key: "model.precision", value: c.model.precision,
                                             reason: "this CPU cannot run that kernel path (CPU features: \(CPUFeatures.host)); use int8 to take the fastest it can")
        }
        return p
    }

    /// Loads a registered version (materialise + verify). Throws if anything does not check out.
    /// `serving`: the model will serve ingest, so it gets the prediction cache (`model.cache_entries`)
    /// and is serving-only (int8 drops the float weights; it cannot be trained from).
    public static func load(_ db: PostgresConnection, version: String, configuration c: NewsdConfiguration, serving: Bool = false) throws -> StudentModel {
        let dir = try ModelRegistry.materialize(db, version: version, cache: cacheDirectory(c))
        let model = try Artifact.load(directory: dir, baseDirectory: c.model.baseDir.isEmpty ? nil : URL(fileURLWithPath: c.model.baseDir),
                                      threads: c.model.threads, precision: try precision(c), cacheCapacity: serving ? c.model.cacheEntries : 0,
                                      earlyExit: c.model.earlyExit, servingOnly: serving)
        guard model.version == version else { throw DistillError("model \(version): the stored artifact has version \(model.version)") }
        return model
    }

    /// Stops the loop (idempotent): sets the flag the loop checks between statements and
    /// cancels the statement in flight. A statement that started just after the cancel (the
    /// flag was checked before it was set) is cancelled by the repeats a second and three
    /// seconds later, well within the shutdown bound.
    public func requestStop() {
        stop.set()
        let canceller = canceller
        canceller.cancelInBackground()
        for delay in [1.0, 3.0] {
            DispatchQueue.global().asyncAfter(deadline: .now() + delay) { canceller.cancelInBackground() }
        }
    }

    /// Watches until stopped.
    public func run() async throws {
        try await runBlockingService(thread: "newsd-models", stop: { [self] in requestStop() }) { [self] in loop() }
        await awaitShutdownTurn()
    }

    private func loop() {
        var db: PostgresConnection?
        var lastCheck = 0.0
        var backfilled = false
        while !stop.isSet {
            do {
                if db == nil || !db!.isConnected {
                    db = try PostgresConnection(configuration.postgres.url)
                    canceller.withLock { $0 = db!.canceller() }
                    try db!.execute("LISTEN \(ModelRegistry.channel)")
                    lastCheck = 0
                }
                var notified = false
                if waitReadable(db!.socket, milliseconds: 1000) {
                    let n = try db!.notifications().filter { $0.channel == ModelRegistry.channel }
                    if !n.isEmpty { notified = true; refused.withLock { $0.subtract(n.map(\.payload)) } }
                }
                // A host restarted after its first swap (or that crashed before backfilling)
                // finishes the cold-start backfill.
                if !backfilled && serving.model.manifest != nil { try backfill(db!, model: serving.model); backfilled = true }
                let now = Date().timeIntervalSince1970
                if notified || now - lastCheck > checkSeconds {
                    lastCheck = now
                    try check(db!)
                }
            } catch ModelError.cancelled {
                return
            } catch where stop.isSet {
                return   // the statement in flight was cancelled by the stop
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
        guard try db.query("SELECT pg_try_advisory_lock(\(AdvisoryLock.backfill)) AS locked").single().decode("locked") else { return }
        defer { _ = try? db.query("SELECT pg_advisory_unlock(\(AdvisoryLock.backfill))") }
        let n = try Rescorer.rescore(db, model: model, selection: .withoutTrainedPrediction, encoderShare: configuration.model.backfillShare, cancel: stop)
        if n > 0 { logger.notice("cold start: items that arrived before the first model classified", metadata: ["items": "\(n)", "version": "\(model.version)"]) }
    }

    private func check(_ db: PostgresConnection) throws {
        guard let active = try ModelRegistry.active(db) else { return }
        let servingVersion = serving.model.version
        guard active.version != servingVersion, !refused.withLock({ $0.contains(active.version) }) else { return }
        let start = Date()
        do {
            let model = try Self.load(db, version: active.version, configuration: configuration, serving: true)
            let wasUntrained = serving.model.manifest == nil
            serving.swap(to: model)
            logger.notice("model swapped in", metadata: ["version": "\(active.version)", "seq": "v\(active.seq)", "previous": "\(servingVersion)",
                                                         "load_seconds": "\(String(format: "%.2f", Date().timeIntervalSince(start)))",
                                                         "early_exit": "\(model.earlyExitSummary)"])
            if wasUntrained { try backfill(db, model: model) }
        } catch ModelError.cancelled {
            throw ModelError.cancelled("backfill")   // stopping: not the model's fault
        } catch where stop.isSet {
            throw ModelError.cancelled("backfill")   // a statement cancelled by the stop
        } catch let e as PostgresError {
            throw e   // transient: reconnect and try again at the next check
        } catch let e where e is ModelError || e is DistillError {
            refused.withLock { _ = $0.insert(active.version) }
            serving.recordRefusal()
            logger.error("refusing model: keeping the one serving", metadata: ["version": "\(active.version)", "serving": "\(servingVersion)", "error": "\(e)"])
        } catch {
            // Disk full, cache not writable...: this host's problem, not the model's; retried.
            logger.error("cannot load model now; keeping the one serving, retrying", metadata: ["version": "\(active.version)", "error": "\(error)"])
        }
    }
}
