import Foundation
import Logging
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// What a distillation check did.
public enum DistillationOutcome: Sendable {
    /// Nothing trained, and why.
    case skipped(String)
    /// A candidate passed the gate and is active now.
    case promoted(RegisteredModel)
    /// A candidate failed the gate; the reasons.
    case rejected(RegisteredModel, String)
}

/// One distillation step: when enough new labels arrived (or the period passed with some), train
/// a candidate on every non-ambiguous teacher label (vote shares as soft targets) and every
/// imported label (which wins over the teacher's), hold out a validation split fixed by text hash,
/// score candidate and active model on it and on the gold sets, measure their agreement on recent
/// live items, and promote only if macro-F1 >= active - ε and negative recall >= active - δ.
/// One host at a time (a session advisory lock).
public enum Distiller {
    static let lockKey = AdvisoryLock.training

    /// Labelled texts for training: (text, target over `labels`, source).
    public static func labelledTexts(_ db: PostgresConnection, labels: [String]) throws -> [LabelledText] {
        let rows = try db.query("""
            SELECT coalesce(i.text, l.text) AS text, l.distribution::text AS distribution, i.label AS imported,
                   extract(epoch FROM coalesce(i.imported_at, l.labelled_at))::float8 AS at
            FROM teacher_labels l FULL JOIN imported_labels i USING (text_hash)
            WHERE l.status = 'labelled' OR i.label IS NOT NULL
            ORDER BY 1
            """).typed
        let index = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        return try rows.compactMap { r in
            let text: String = try r.decode("text"), at: Double = (try r.decode("at") as Double?) ?? 0
            var target = [Float](repeating: 0, count: labels.count)
            if let imported: String = try r.decode("imported"), let i = index[imported.lowercased()] {
                target[i] = 1
                return LabelledText(text: text, target: target, source: "imported", labelledAt: at)
            }
            guard let json: String = try r.decode("distribution") else { return nil }
            let shares = try JSONText.decode([String: Double].self, from: json)
            for (k, v) in shares { if let i = index[k] { target[i] = Float(v) } }
            let mass = target.reduce(0, +)
            guard mass > 0 else { return nil }
            return LabelledText(text: text, target: target.map { $0 / mass }, source: "teacher", labelledAt: at)
        }
    }

    /// The base checkpoint students are trained from: `model.base_dir`, else the base recorded in
    /// the `model.dir` artifact, else `model.dir` itself (a bare checkpoint), else `NEWSD_BASE_MODEL_DIR`.
    public static func baseDirectory(_ c: NewsdConfiguration) -> URL? {
        let fm = FileManager.default
        var candidates: [String] = []
        if !c.model.baseDir.isEmpty { candidates.append(c.model.baseDir) }
        if let m = try? Artifact.verifiedManifest(directory: URL(fileURLWithPath: c.model.dir)) { candidates.append(m.base.path) }
        candidates.append(c.model.dir)
        if let env = ProcessInfo.processInfo.environment["NEWSD_BASE_MODEL_DIR"] { candidates.append(env) }
        return candidates.first { !$0.isEmpty && fm.fileExists(atPath: $0 + "/model.safetensors") }.map { URL(fileURLWithPath: $0) }
    }

    /// Runs one check (and training when due). `force` ignores the thresholds; `shuffleLabels`
    /// trains on permuted targets (to show the gate refusing a worse model). Setting `cancel`
    /// stops a training run between two steps (it throws `ModelError.cancelled`; nothing is
    /// registered).
    public static func runOnce(_ c: NewsdConfiguration, logger: Logger, force: Bool = false, shuffleLabels: Bool = false,
                               cancel: StopFlag? = nil, onLowPriority: (Int32) -> Void = { _ in }) throws -> DistillationOutcome {
        var db = try PostgresConnection(c.postgres.url)
        guard try tryLock(db) else { return .skipped("another host is training") }
        defer { _ = try? db.query("SELECT pg_advisory_unlock(\(lockKey))") }
        let t = c.trainer
        let labels = c.teacher.labels.map { $0.lowercased() }.sorted()
        if !force, let why = try notDue(db, t, marginThreshold: c.teacher.marginThreshold, logger: logger) { return .skipped(why) }
        guard let baseDir = baseDirectory(c) else { throw DistillError("no base checkpoint: set model.base_dir or NEWSD_BASE_MODEL_DIR") }
        let base = try CheckpointCache.shared.checkpoint(baseDir)
        let labelled = try labelledTexts(db, labels: labels)
        guard labelled.count >= 10 else { return .skipped("\(labelled.count) usable labels") }
        let active = try ModelRegistry.active(db)
        let activeModel = try active.map { try ModelWatcher.load(db, version: $0.version, configuration: c) }
        var set = TrainingSet(labelled, validationFraction: t.validationFraction)
        if shuffleLabels { set.shuffleTrainingTargets(seed: 0x5EED_CAFE) }
        // Self-training: the active student's confident predictions on recent unlabelled items
        // (never validation texts) join as soft targets; the teacher's labels stay the anchor.
        if let activeModel, t.pseudoLabelMinMargin > 0, t.pseudoLabelItems > 0, !shuffleLabels, activeModel.labels == labels {
            let recent: [String] = try db.query("SELECT DISTINCT ON (text) text FROM (SELECT text FROM news_items ORDER BY id DESC LIMIT \(t.pseudoLabelItems)) r")
                .typed.map { try $0.decode("text") }
            let added = set.addPseudoLabels(recent, model: activeModel, minMargin: t.pseudoLabelMinMargin)
            logger.info("pseudo-labels from the active model", metadata: ["considered": "\(recent.count)", "added": "\(added)"])
        }
        // Incremental: continue from the active model on what it has not seen (labels newer than
        // the newest it read) plus a replay of the rest, unless it is time for a full run (every
        // `full_retrain_every`-th model), the
        // active model is not a student of this base and label set, or no label is new to it.
        var start: StudentModel?
        if t.incremental, !shuffleLabels, let activeModel, let active, activeModel.labels == labels, activeModel.manifest != nil,
           activeModel.baseChecksum == base.weightsChecksum {
            let r = try db.query("""
                SELECT coalesce((metrics->>'labels_until')::float8,
                                extract(epoch FROM created_at)::float8 - coalesce((metrics->>'train_seconds')::float8, 0)) AS trained_from,
                       (SELECT count(*) FROM models WHERE status IN ('active', 'retired', 'rejected') AND seq > coalesce((SELECT max(seq) FROM models
                          WHERE status IN ('active', 'retired') AND coalesce((metrics->>'incremental')::float8, 0) = 0), 0)) AS since_full
                FROM models WHERE version = \(active.version)
                """).single()
            let trainedFrom: Double = try r.decode("trained_from"), sinceFull: Int = try r.decode("since_full")
            // Models since the last full one, refused candidates included: incremental runs the gate
            // keeps refusing give way to a full run.
            if sinceFull + 1 < t.fullRetrainEvery {
                var incremental = set
                let kept = incremental.keepIncremental(since: trainedFrom, replayRatio: t.replayRatio, seed: UInt64(labelled.count))
                if kept.new > 0 {
                    set = incremental
                    start = activeModel
                    logger.info("incremental run from the active model", metadata: ["active": "\(active.version)", "new": "\(kept.new)", "replayed": "\(kept.replayed)"])
                }
            }
        }
        try checkCancelled(cancel)
        let (training, validation) = set.encoded(with: base.tokenizer)
        try checkCancelled(cancel)
        guard training.count >= 8, validation.count >= 3 else {
            return .skipped("too few labels for a training and a validation split (\(training.count) / \(validation.count))")
        }
        let cfg = try trainingConfiguration(t, examples: training.count, labels: labelled.count, layers: base.config.numLayers, incremental: start != nil)
        // Training yields to ingest: this thread (the trainer's own) and the threads it starts
        // run at nice 10 (Linux nice is per thread and inherited; it cannot be raised back
        // without privileges, so callers run this on a dedicated thread).
        onLowPriority(ThreadPriority.lowerCurrentThread(nice: 10))
        logger.info("training a candidate", metadata: ["train": "\(training.count)", "validation": "\(validation.count)", "threads": "\(t.threads)"])
        let servingPrecision = try ModelWatcher.precision(c)
        let result = try FineTune.run(base: base, labels: labels, training: training, validation: validation, configuration: cfg,
                                      servingThreads: c.model.threads, servingPrecision: servingPrecision, continuing: start, cancel: cancel)
        try checkCancelled(cancel)
        let dir = ModelWatcher.cacheDirectory(c).appendingPathComponent("candidate-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: dir) }
        let candidate = try FineTune.save(result, trainer: cfg, base: base, to: dir, threads: c.model.threads, precision: servingPrecision)
        // Training took minutes with the connection idle; if it was lost (Postgres restarted, an
        // idle timeout), reconnect and take the lock again: without it another host may train.
        if (try? db.query("SELECT 1")) == nil {
            db = try PostgresConnection(c.postgres.url)
            guard try tryLock(db) else { return .skipped("lost the training lock while training (connection dropped); another host is training") }
        }
        // Evaluate candidate and active on the same held-out sets; the gate decides.
        var sets = [(name: "validation", texts: set.validationTexts, truth: validation.map(\.label))]
        for g in t.goldSets {
            let table = try CSVTable(contentsOf: URL(fileURLWithPath: g))
            let column = table.header.contains("label_experts") ? "label_experts" : "label"
            let gold = try LabelledData(table: table, textColumn: "text", labelColumn: column, labels: labels)
            sets.append(("gold_" + URL(fileURLWithPath: g).deletingPathExtension().lastPathComponent, gold.texts, gold.truth))
        }
        try checkCancelled(cancel)
        let evaluations = sets.map { s in
            let c = candidate.predict(s.texts), a = activeModel?.predict(s.texts)
            return PromotionGate.Evaluation(
                name: s.name, candidate: EvaluationMetrics(probabilities: c.map(\.probabilities), truth: s.truth, labels: labels),
                active: a.map { EvaluationMetrics(probabilities: $0.map(\.probabilities), truth: s.truth, labels: labels) },
                paired: a.map { PromotionGate.PairedPredictions(truth: s.truth, candidate: c.map(\.labelIndex), active: $0.map(\.labelIndex)) })
        }
        let gate = PromotionGate(f1Tolerance: t.f1Tolerance, negativeRecallTolerance: t.negativeRecallTolerance)
        let decision = gate.decide(evaluations)
        var metrics = result.metrics.merging(decision.metrics) { _, new in new }
        // The newest label this run read: the next incremental run's "new" starts after it.
        if let newest = labelled.map(\.labelledAt).max() { metrics["labels_until"] = newest }
        if let activeModel, t.shadowItems > 0 {
            let recent: [String] = try db.query("SELECT text FROM news_items ORDER BY id DESC LIMIT \(t.shadowItems)").typed.map { try $0.decode("text") }
            if !recent.isEmpty {
                let a = activeModel.predict(recent).map(\.labelIndex), b = candidate.predict(recent).map(\.labelIndex)
                metrics["shadow_items"] = Double(recent.count)
                metrics["shadow_agreement"] = Double(zip(a, b).filter { $0 == $1 }.count) / Double(recent.count)
            }
        }
        let reasons = decision.reasons.joined(separator: "; ")
        let registered = try ModelRegistry.register(db, artifact: dir, parent: active?.version, status: decision.promote ? "candidate" : "rejected",
                                                    labelCounts: set.labelCounts, metrics: metrics, reasons: decision.promote ? nil : reasons)
        guard decision.promote else {
            logger.warning("candidate rejected by the gate", metadata: ["version": "\(registered.version)", "seq": "v\(registered.seq)", "reasons": "\(reasons)"])
            return .rejected(registered, reasons)
        }
        try ModelRegistry.promote(db, registered.version)
        logger.notice("candidate promoted", metadata: ["version": "\(registered.version)", "seq": "v\(registered.seq)",
                                                       "validation_macro_f1": "\(String(format: "%.4f", metrics["validation_macro_f1"] ?? 0))"])
        return .promoted(try ModelRegistry.get(db, registered.version)!)
    }

    /// Between the phases of a run (loading, tokenising, training, saving, scoring): a stop ends
    /// the run at the next boundary, so shutdown never waits for a whole run.
    private static func checkCancelled(_ cancel: StopFlag?) throws {
        if cancel?.isSet == true { throw ModelError.cancelled("training run") }
    }

    /// Takes the training lock (session-scoped) if no other host holds it.
    private static func tryLock(_ db: PostgresConnection) throws -> Bool {
        try db.query("SELECT pg_try_advisory_lock(\(lockKey)) AS locked").single().decode("locked")
    }

    /// The shift signals for the active model, from the database (any host can train): the share
    /// of uncertain items among its last 300 predictions against its earlier ones, and the
    /// teacher's disagreement with it on the last 100 labels against its earlier ones.
    public struct ShiftSignals: Sendable, Equatable {
        /// Uncertain share: recent, baseline (nil: too few items).
        public var uncertainRecent: Double?, uncertainBaseline: Double?
        /// Disagreement share: recent, baseline (nil: too few labels).
        public var disagreementRecent: Double?, disagreementBaseline: Double?
        /// Signals as read (nil: not enough data).
        public init(uncertainRecent: Double? = nil, uncertainBaseline: Double? = nil, disagreementRecent: Double? = nil, disagreementBaseline: Double? = nil) {
            self.uncertainRecent = uncertainRecent; self.uncertainBaseline = uncertainBaseline
            self.disagreementRecent = disagreementRecent; self.disagreementBaseline = disagreementBaseline
        }
        /// Whether either signal shows a shift by `ShiftDetector`'s rule.
        public var isShift: Bool {
            let rule = ShiftDetector()
            func shifted(_ r: Double?, _ b: Double?) -> Bool { r.flatMap { r in b.map { rule.isShift(recent: r, baseline: $0) } } ?? false }
            return shifted(uncertainRecent, uncertainBaseline) || shifted(disagreementRecent, disagreementBaseline)
        }
    }

    /// Reads the shift signals (`marginThreshold`: what counts as uncertain).
    public static func shiftSignals(_ db: PostgresConnection, marginThreshold: Double) throws -> ShiftSignals {
        let r = try db.query("""
            WITH active AS (SELECT version FROM models WHERE status = 'active' LIMIT 1),
            p AS (SELECT margin, row_number() OVER (ORDER BY id DESC) AS r FROM (
                    SELECT id, margin FROM predictions WHERE model_version = (SELECT version FROM active) AND NOT rescored ORDER BY id DESC LIMIT 5300) x),
            l AS (SELECT (l.label <> q.predicted_label) AS disagree, row_number() OVER (ORDER BY l.labelled_at DESC) AS r
                  FROM teacher_labels l JOIN teacher_queue q ON q.text_hash = l.text_hash
                  WHERE l.status = 'labelled' AND q.model_version = (SELECT version FROM active) AND q.reason IN ('uncertain', 'explore', 'random'))
            SELECT (SELECT avg((margin < \(marginThreshold))::int)::float8 FROM p WHERE r <= 300 HAVING count(*) >= 300) AS uncertain_recent,
                   (SELECT avg((margin < \(marginThreshold))::int)::float8 FROM p WHERE r > 300 HAVING count(*) >= 700) AS uncertain_baseline,
                   (SELECT avg(disagree::int)::float8 FROM l WHERE r <= 100 HAVING count(*) >= 100) AS disagreement_recent,
                   (SELECT avg(disagree::int)::float8 FROM l WHERE r > 100 HAVING count(*) >= 100) AS disagreement_baseline
            """).single()
        return ShiftSignals(uncertainRecent: try r.decode("uncertain_recent"), uncertainBaseline: try r.decode("uncertain_baseline"),
                            disagreementRecent: try r.decode("disagreement_recent"), disagreementBaseline: try r.decode("disagreement_baseline"))
    }

    /// Why no run is due (nil: train): too few labels, too few new ones and the period not over.
    public static func notDue(_ db: PostgresConnection, _ t: NewsdConfiguration.Trainer, marginThreshold: Double, logger: Logger? = nil) throws -> String? {
        let r = try db.query("""
            SELECT (SELECT count(*) FROM teacher_labels WHERE status = 'labelled') + (SELECT count(*) FROM imported_labels) AS total,
                   (SELECT count(*) FROM teacher_labels WHERE status = 'labelled' AND labelled_at > coalesce((SELECT max(created_at) FROM models), '-infinity'))
                 + (SELECT count(*) FROM imported_labels WHERE imported_at > coalesce((SELECT max(created_at) FROM models), '-infinity')) AS fresh,
                   coalesce(extract(epoch FROM now() - (SELECT max(created_at) FROM models)), 1e12)::double precision AS age
            """).single()
        let total: Int = try r.decode("total"), fresh: Int = try r.decode("fresh"), age: Double = try r.decode("age")
        if total < t.minLabels { return "\(total) labels, \(t.minLabels) needed" }
        if fresh < t.minNewLabels && !(age >= t.intervalSeconds.value && fresh > 0) {
            // A shift starts a run early: the new kind of news should not wait for the usual count.
            if t.shiftMinNewLabels > 0, fresh >= t.shiftMinNewLabels {
                let signals = try shiftSignals(db, marginThreshold: marginThreshold)
                if signals.isShift {
                    logger?.notice("training early: shift", metadata: [
                        "new_labels": "\(fresh)", "uncertain_share": "\(signals.uncertainRecent.map { String(format: "%.3f", $0) } ?? "-") vs \(signals.uncertainBaseline.map { String(format: "%.3f", $0) } ?? "-")",
                        "disagreement": "\(signals.disagreementRecent.map { String(format: "%.3f", $0) } ?? "-") vs \(signals.disagreementBaseline.map { String(format: "%.3f", $0) } ?? "-")"])
                    return nil
                }
            }
            return "\(fresh) new labels since the last model (\(t.minNewLabels) start a run, or any after \(Int(t.intervalSeconds.value)) s)"
        }
        return nil
    }

    /// The trainer's settings: a fixed minimum of optimizer steps (a few hundred labels need more
    /// passes than thousands; up to 20 epochs to reach it, `TrainingConfiguration.epochs`). An incremental run starts from a trained model
    /// and only needs `epochs` passes. `trainable = "auto"` chooses the depth by `labels`, every
    /// teacher label in store (an incremental run trains on a part of them, but its model
    /// stands for all of them).
    static func trainingConfiguration(_ t: NewsdConfiguration.Trainer, examples: Int, labels: Int, layers: Int, incremental: Bool = false) throws -> TrainingConfiguration {
        var cfg = TrainingConfiguration()
        cfg.epochs = incremental ? t.epochs : TrainingConfiguration.epochs(t.epochs, minSteps: t.minSteps, examples: examples, batchSize: cfg.batchSize)
        cfg.learningRate = Float(t.learningRate)
        cfg.threads = t.threads
        cfg.trainable = try TrainableScope(parsing: t.trainable, labels: labels, layers: layers)
        cfg.validationFraction = t.validationFraction
        cfg.labelSmoothing = Float(t.labelSmoothing)
        cfg.classBalance = Float(t.classBalance)
        cfg.layerDecay = Float(t.layerDecay)
        cfg.noiseFolds = t.noiseFolds
        return cfg
    }
}
