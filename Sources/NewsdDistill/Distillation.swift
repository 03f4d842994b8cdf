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
            SELECT coalesce(i.text, l.text) AS text, l.distribution::text AS distribution, i.label AS imported
            FROM teacher_labels l FULL JOIN imported_labels i USING (text_hash)
            WHERE l.status = 'labelled' OR i.label IS NOT NULL
            ORDER BY 1
            """).typed
        let index = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        return try rows.compactMap { r in
            let text: String = try r.decode("text")
            var target = [Float](repeating: 0, count: labels.count)
            if let imported: String = try r.decode("imported"), let i = index[imported.lowercased()] {
                target[i] = 1
                return LabelledText(text: text, target: target, source: "imported")
            }
            guard let json: String = try r.decode("distribution") else { return nil }
            let shares = try JSONText.decode([String: Double].self, from: json)
            for (k, v) in shares { if let i = index[k] { target[i] = Float(v) } }
            let mass = target.reduce(0, +)
            guard mass > 0 else { return nil }
            return LabelledText(text: text, target: target.map { $0 / mass }, source: "teacher")
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
        if !force, let why = try notDue(db, t) { return .skipped(why) }
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
        try checkCancelled(cancel)
        let (training, validation) = set.encoded(with: base.tokenizer)
        try checkCancelled(cancel)
        guard training.count >= 8, validation.count >= 3 else {
            return .skipped("too few labels for a training and a validation split (\(training.count) / \(validation.count))")
        }
        let cfg = try trainingConfiguration(t, examples: training.count)
        // Training yields to ingest: this thread (the trainer's own) and the threads it starts
        // run at nice 10 (Linux nice is per thread and inherited; it cannot be raised back
        // without privileges, so callers run this on a dedicated thread).
        onLowPriority(ThreadPriority.lowerCurrentThread(nice: 10))
        logger.info("training a candidate", metadata: ["train": "\(training.count)", "validation": "\(validation.count)", "threads": "\(t.threads)"])
        let servingPrecision = try ModelWatcher.precision(c)
        let result = try FineTune.run(base: base, labels: labels, training: training, validation: validation, configuration: cfg,
                                      servingThreads: c.model.threads, servingPrecision: servingPrecision, cancel: cancel)
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
        func score(_ m: StudentModel, _ texts: [String], _ truth: [Int]) -> EvaluationMetrics {
            EvaluationMetrics(probabilities: m.predict(texts).map(\.probabilities), truth: truth, labels: labels)
        }
        try checkCancelled(cancel)
        let evaluations = sets.map { s in
            PromotionGate.Evaluation(name: s.name, candidate: score(candidate, s.texts, s.truth), active: activeModel.map { score($0, s.texts, s.truth) })
        }
        let gate = PromotionGate(f1Tolerance: t.f1Tolerance, negativeRecallTolerance: t.negativeRecallTolerance)
        let decision = gate.decide(evaluations)
        var metrics = result.metrics.merging(decision.metrics) { _, new in new }
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

    /// Why no run is due (nil: train): too few labels, too few new ones and the period not over.
    static func notDue(_ db: PostgresConnection, _ t: NewsdConfiguration.Trainer) throws -> String? {
        let r = try db.query("""
            SELECT (SELECT count(*) FROM teacher_labels WHERE status = 'labelled') + (SELECT count(*) FROM imported_labels) AS total,
                   (SELECT count(*) FROM teacher_labels WHERE status = 'labelled' AND labelled_at > coalesce((SELECT max(created_at) FROM models), '-infinity'))
                 + (SELECT count(*) FROM imported_labels WHERE imported_at > coalesce((SELECT max(created_at) FROM models), '-infinity')) AS fresh,
                   coalesce(extract(epoch FROM now() - (SELECT max(created_at) FROM models)), 1e12)::double precision AS age
            """).single()
        let total: Int = try r.decode("total"), fresh: Int = try r.decode("fresh"), age: Double = try r.decode("age")
        if total < t.minLabels { return "\(total) labels, \(t.minLabels) needed" }
        if fresh < t.minNewLabels && !(age >= t.intervalSeconds.value && fresh > 0) {
            return "\(fresh) new labels since the last model (\(t.minNewLabels) start a run, or any after \(Int(t.intervalSeconds.value)) s)"
        }
        return nil
    }

    /// The trainer's settings: a fixed minimum of optimizer steps (a few hundred labels need more
    /// passes than thousands), at most 20 epochs.
    static func trainingConfiguration(_ t: NewsdConfiguration.Trainer, examples: Int) throws -> TrainingConfiguration {
        var cfg = TrainingConfiguration()
        cfg.epochs = min(20, max(t.epochs, (t.minSteps * cfg.batchSize + examples - 1) / max(examples, 1)))
        cfg.learningRate = Float(t.learningRate)
        cfg.threads = t.threads
        cfg.trainable = try TrainableScope(parsing: t.trainable)
        cfg.validationFraction = t.validationFraction
        return cfg
    }
}
