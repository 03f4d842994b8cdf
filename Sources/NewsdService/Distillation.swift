import Foundation
import Logging
import NewsdCore
import NewsdModel
import NewsdPostgres
#if canImport(Glibc)
import Glibc
#endif

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
    static let lockKey = Schema.migrationLock + 2

    /// Labelled texts for training: (text, target over `labels`, source).
    public static func labelledTexts(_ db: PostgresConnection, labels: [String]) throws -> [(text: String, target: [Float], source: String)] {
        let rows = try db.execute("""
            SELECT coalesce(i.text, l.text), l.distribution::text, i.label
            FROM teacher_labels l FULL JOIN imported_labels i USING (text_hash)
            WHERE l.status = 'labelled' OR i.label IS NOT NULL
            ORDER BY 1
            """).rows
        let index = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($1, $0) })
        return rows.compactMap { r in
            guard let text = r[0] else { return nil }
            var target = [Float](repeating: 0, count: labels.count)
            if let imported = r[2], let i = index[imported.lowercased()] {
                target[i] = 1
                return (text, target, "imported")
            }
            guard let json = r[1], let d = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Double] else { return nil }
            for (k, v) in d { if let i = index[k] { target[i] = Float(v) } }
            let mass = target.reduce(0, +)
            guard mass > 0 else { return nil }
            return (text, target.map { $0 / mass }, "teacher")
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
    /// trains on permuted targets (to show the gate refusing a worse model).
    public static func runOnce(_ c: NewsdConfiguration, logger: Logger, force: Bool = false, shuffleLabels: Bool = false) throws -> DistillationOutcome {
        var db = try PostgresConnection(c.postgres.url)
        guard try db.execute("SELECT pg_try_advisory_lock($1)", [String(lockKey)]).rows.first?[0] == "t" else {
            return .skipped("another host is training")
        }
        defer { _ = try? db.execute("SELECT pg_advisory_unlock($1)", [String(lockKey)]) }
        let t = c.trainer
        let labels = c.teacher.labels.map { $0.lowercased() }.sorted()
        let counts = try db.execute("""
            SELECT (SELECT count(*) FROM teacher_labels WHERE status = 'labelled') + (SELECT count(*) FROM imported_labels),
                   (SELECT count(*) FROM teacher_labels WHERE status = 'labelled' AND labelled_at > coalesce((SELECT max(created_at) FROM models), '-infinity'))
                 + (SELECT count(*) FROM imported_labels WHERE imported_at > coalesce((SELECT max(created_at) FROM models), '-infinity')),
                   coalesce(extract(epoch FROM now() - (SELECT max(created_at) FROM models)), 1e12)
            """).rows[0]
        let total = Int(counts[0] ?? "0") ?? 0, fresh = Int(counts[1] ?? "0") ?? 0, age = Double(counts[2] ?? "0") ?? 0
        if !force {
            if total < t.minLabels { return .skipped("\(total) labels, \(t.minLabels) needed") }
            if fresh < t.minNewLabels && !(age >= t.intervalSeconds && fresh > 0) {
                return .skipped("\(fresh) new labels since the last model (\(t.minNewLabels) start a run, or any after \(Int(t.intervalSeconds)) s)")
            }
        }
        guard let baseDir = baseDirectory(c) else { throw ServiceError("no base checkpoint: set model.base_dir or NEWSD_BASE_MODEL_DIR") }
        let base = try CheckpointCache.shared.checkpoint(baseDir)
        var data = try labelledTexts(db, labels: labels)
        guard data.count >= 10 else { return .skipped("\(data.count) usable labels") }
        var isValidation = data.map { TextHash.isValidation($0.text, fraction: t.validationFraction) }
        if shuffleLabels {
            // Only the training targets: the validation split keeps the truth it is scored on.
            let train = data.indices.filter { !isValidation[$0] }
            var state: UInt64 = 0x5EED_CAFE
            var targets = train.map { data[$0].target }
            for i in stride(from: targets.count - 1, to: 0, by: -1) {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                targets.swapAt(i, Int((state >> 33) % UInt64(i + 1)))
            }
            for (k, i) in train.enumerated() { data[i].target = targets[k] }
        }
        // Self-training: the active student's confident predictions on recent unlabelled items
        // (never validation texts) join as soft targets; the teacher's labels stay the anchor.
        let active = try ModelRegistry.active(db)
        let activeModel = try active.map { try ModelWatcher.load(db, version: $0.version, configuration: c) }
        if let activeModel, t.pseudoLabelMinMargin > 0, t.pseudoLabelItems > 0, !shuffleLabels {
            let labelled = Set(data.map { teacherTextHash($0.text) })
            let recent = try db.execute("SELECT DISTINCT ON (text) text FROM (SELECT text FROM news_items ORDER BY id DESC LIMIT $1) r",
                                        [String(t.pseudoLabelItems)]).rows.compactMap { $0[0] }
                .filter { !labelled.contains(teacherTextHash($0)) && !TextHash.isValidation($0, fraction: t.validationFraction) }
            let predictions = activeModel.predict(recent)
            var added = 0
            for (text, p) in zip(recent, predictions) where Double(p.margin) >= t.pseudoLabelMinMargin && activeModel.labels == labels {
                data.append((text, p.probabilities, "pseudo"))
                added += 1
            }
            logger.info("pseudo-labels from the active model", metadata: ["considered": "\(recent.count)", "added": "\(added)"])
        }
        var training: [TrainingExample] = [], validation: [(ids: [Int32], label: Int)] = []
        var validationTexts: [String] = []
        var labelCounts: [String: Int] = [:]
        isValidation += [Bool](repeating: false, count: data.count - isValidation.count)   // pseudo-labels: training only
        for (i, d) in data.enumerated() {
            let ids = base.tokenizer.encode(d.text)
            if isValidation[i] {
                let truth = d.target.indices.max { d.target[$0] < d.target[$1] }!
                validation.append((ids, truth)); validationTexts.append(d.text)
            } else {
                training.append(TrainingExample(ids: ids, target: d.target))
                labelCounts[d.source, default: 0] += 1
            }
        }
        labelCounts["validation"] = validation.count
        guard training.count >= 8, validation.count >= 3 else { return .skipped("too few labels for a training and a validation split (\(training.count) / \(validation.count))") }
        var cfg = TrainingConfiguration()
        // A fixed minimum of optimizer steps: a few hundred labels need more passes than thousands.
        cfg.epochs = min(20, max(t.epochs, (t.minSteps * cfg.batchSize + training.count - 1) / max(training.count, 1)))
        cfg.learningRate = Float(t.learningRate)
        cfg.threads = t.threads
        cfg.trainable = try TrainableScope(parsing: t.trainable)
        cfg.validationFraction = t.validationFraction
        // Training yields to ingest: this thread (the trainer's own) and the threads it starts
        // run at nice 10 (Linux nice is per thread and inherited; it cannot be raised back
        // without privileges, so callers run this on a dedicated thread).
        // (On Linux, PRIO_PROCESS with who = 0 is the calling thread.)
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, 10)
        logger.info("training a candidate", metadata: ["train": "\(training.count)", "validation": "\(validation.count)", "threads": "\(t.threads)"])
        let result = try FineTune.run(base: base, labels: labels, training: training, validation: validation, configuration: cfg, servingThreads: c.model.threads)
        let dir = ModelWatcher.cacheDirectory(c).appendingPathComponent("candidate-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        defer { try? FileManager.default.removeItem(at: dir) }
        let candidate = try FineTune.save(result, trainer: cfg, base: base, to: dir, threads: c.model.threads)
        // Training took minutes with the connection idle; if it was lost (Postgres restarted, an
        // idle timeout), reconnect and take the lock again: without it another host may train.
        if (try? db.execute("SELECT 1")) == nil {
            db = try PostgresConnection(c.postgres.url)
            guard try db.execute("SELECT pg_try_advisory_lock($1)", [String(lockKey)]).rows.first?[0] == "t" else {
                return .skipped("lost the training lock while training (connection dropped); another host is training")
            }
        }

        // Evaluate candidate and active on the same held-out sets.
        func score(_ m: StudentModel, _ texts: [String], _ truth: [Int]) -> EvaluationMetrics {
            EvaluationMetrics(probabilities: m.predict(texts).map(\.probabilities), truth: truth, labels: labels)
        }
        var metrics = result.metrics
        var sets: [(name: String, texts: [String], truth: [Int])] = [("validation", validationTexts, validation.map(\.label))]
        for g in t.goldSets {
            let table = try CSVTable(contentsOf: URL(fileURLWithPath: g))
            let column = table.header.contains("label_experts") ? "label_experts" : "label"
            let gold = try LabelledData(table: table, textColumn: "text", labelColumn: column, labels: labels)
            sets.append(("gold_" + URL(fileURLWithPath: g).deletingPathExtension().lastPathComponent, gold.texts, gold.truth))
        }
        var reasons: [String] = []
        let negative = labels.firstIndex(of: "negative").map { labels[$0] }
        for set in sets {
            let cm = score(candidate, set.texts, set.truth)
            metrics["\(set.name)_accuracy"] = cm.accuracy
            metrics["\(set.name)_macro_f1"] = cm.macroF1
            metrics["\(set.name)_ece"] = cm.expectedCalibrationError
            for (l, pc) in cm.perClass { metrics["\(set.name)_f1_\(l)"] = pc.f1; metrics["\(set.name)_recall_\(l)"] = pc.recall }
            guard let activeModel else { continue }
            let am = score(activeModel, set.texts, set.truth)
            metrics["active_\(set.name)_macro_f1"] = am.macroF1
            if cm.macroF1 < am.macroF1 - t.f1Tolerance {
                reasons.append(String(format: "%@ macro-F1 %.4f < active %.4f - %.3f", set.name, cm.macroF1, am.macroF1, t.f1Tolerance))
            }
            if let negative, let cr = cm.perClass[negative]?.recall, let ar = am.perClass[negative]?.recall {
                metrics["active_\(set.name)_recall_negative"] = ar
                if cr < ar - t.negativeRecallTolerance {
                    reasons.append(String(format: "%@ negative recall %.4f < active %.4f - %.3f", set.name, cr, ar, t.negativeRecallTolerance))
                }
            }
        }
        if activeModel == nil {
            // No model to beat: refuse only a candidate no better than the majority class.
            let majority = Double(validation.map(\.label).reduce(into: [:]) { $0[$1, default: 0] += 1 }.values.max() ?? 0) / Double(validation.count)
            if metrics["validation_accuracy"] ?? 0 < majority - 1e-9 && (metrics["validation_macro_f1"] ?? 0) < 0.34 {
                reasons.append(String(format: "validation accuracy %.4f below the majority class share %.4f", metrics["validation_accuracy"] ?? 0, majority))
            }
        }
        if let activeModel, t.shadowItems > 0 {
            let recent = try db.execute("SELECT text FROM news_items ORDER BY id DESC LIMIT $1", [String(t.shadowItems)]).rows.compactMap { $0[0] }
            if !recent.isEmpty {
                let a = activeModel.predict(recent).map(\.labelIndex), b = candidate.predict(recent).map(\.labelIndex)
                metrics["shadow_items"] = Double(recent.count)
                metrics["shadow_agreement"] = Double(zip(a, b).filter { $0 == $1 }.count) / Double(recent.count)
            }
        }
        let registered = try ModelRegistry.register(db, artifact: dir, parent: active?.version, status: reasons.isEmpty ? "candidate" : "rejected",
                                                    labelCounts: labelCounts, metrics: metrics, reasons: reasons.isEmpty ? nil : reasons.joined(separator: "; "))
        if !reasons.isEmpty {
            logger.warning("candidate rejected by the gate", metadata: ["version": "\(registered.version)", "seq": "v\(registered.seq)", "reasons": "\(reasons)"])
            return .rejected(registered, reasons.joined(separator: "; "))
        }
        try ModelRegistry.promote(db, registered.version)
        logger.notice("candidate promoted", metadata: ["version": "\(registered.version)", "seq": "v\(registered.seq)",
                                                       "validation_macro_f1": "\(String(format: "%.4f", metrics["validation_macro_f1"] ?? 0))"])
        return .promoted(try ModelRegistry.get(db, registered.version)!)
    }
}

