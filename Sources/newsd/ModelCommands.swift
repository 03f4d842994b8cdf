import ArgumentParser
import Foundation
import NewsdDaemon
import NewsdDevTools
import NewsdDistill
import NewsdIngest
import NewsdKafka
import NewsdModel
import NewsdOps
import NewsdPostgres
import NewsdSystem
import NewsdTeacher

/// `newsd train`: fine-tunes a student on a labelled CSV and writes an artifact.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "train", abstract: "Fine-tune a student model on labelled sentences.")

    @Option(help: "CSV file with a header row.") var data: String
    @Option(help: "Column with the sentence.") var textColumn = "text"
    @Option(help: "Column with the hard label (also defines the label set).") var labelColumn: String
    @Option(help: "Comma-separated columns for soft labels: one label per column (votes) or one probability per column named after its label.")
    var softLabelColumns: String?
    @Option(help: "Trainable parameters: head, top:K, all, or auto (by the training rows: top:4 below 5,000, top:2 from 5,000).") var trainable = "auto"
    @Option(help: "Epochs (at least: see --min-steps).") var epochs = 4
    @Option(help: "Peak learning rate.") var lr: Float = 1e-4
    @Option(help: "Batch size.") var batch = 16
    @Option(help: "Learning-rate multiplier of the (randomly initialised) head.") var headLrMultiplier: Float = 10
    @Option(help: "Random seed.") var seed: UInt64 = 42
    @Option(help: "Worker threads.") var threads = 2
    @Option(help: "Share of rows held out (chosen by text hash) for validation and calibration.") var validationFraction = 0.1
    @Option(help: "Base checkpoint directory (default: $NEWSD_BASE_MODEL_DIR or .models/all-MiniLM-L6-v2).") var base: String?
    @Option(help: "Output artifact directory.") var out: String
    @Option(help: "Precision the model will serve with (validation figures and temperature): int8, int8-<path> or fp32.") var precision = "int8"
    @Option(help: "Optimiser steps in all (0: --epochs passes).") var steps = TrainingConfiguration().steps
    @Option(help: "With --steps 0, at least this many optimiser steps: more passes (up to 20) for a small set, as the trainer's min_steps.")
    var minSteps = NewsdConfiguration.Trainer().minSteps
    @Option(help: "Label smoothing ε in [0, 1).") var labelSmoothing = TrainingConfiguration().labelSmoothing
    @Option(help: "Class-balance exponent α (0 off, 1 fully balanced).") var classBalance = TrainingConfiguration().classBalance
    @Option(help: "Layer-wise learning-rate decay in (0, 1] (1 off).") var layerDecay = TrainingConfiguration().layerDecay
    @Option(help: "Validation evaluations per pass; the parameters with the lowest validation loss are kept (0 off).")
    var evaluationsPerEpoch = TrainingConfiguration().evaluationsPerEpoch
    @Option(help: "Stop after this many evaluations without improvement (0 never).") var patience = TrainingConfiguration().patience
    @Option(help: "Weight decay.") var weightDecay = TrainingConfiguration().weightDecay
    @Option(help: "Dropout.") var dropout = TrainingConfiguration().dropout
    @Flag(inversion: .prefixedNo, help: "Fit early-exit classifiers (experiments can skip them to save time).") var earlyExit = true
    @Option(help: "Label-noise pass: cross-fit this many students and down-weight the labels they doubt (0 off).") var noiseFolds = TrainingConfiguration().noiseFolds
    @Option(help: "A label is suspect when the out-of-fold student gives it less than this.") var suspectThreshold = TrainingConfiguration().suspectThreshold
    @Option(help: "Weight multiplier of a suspect label.") var suspectWeight = TrainingConfiguration().suspectWeight
    @Option(help: "Write the suspect labels (text, teacher label, out-of-fold probabilities) to this CSV.") var suspectsOut: String?

    func run() throws {
        if let warning = BLASCore.weakerKernelsWarning { note("warning: \(warning)") }
        var cfg = TrainingConfiguration()
        cfg.epochs = epochs; cfg.learningRate = lr; cfg.headLearningRateMultiplier = headLrMultiplier; cfg.batchSize = batch; cfg.seed = seed; cfg.threads = threads
        cfg.validationFraction = validationFraction
        _ = try TrainableScope(parsing: trainable, labels: 0)   // a bad --trainable fails before any loading
        guard (0...1_000_000).contains(minSteps) else { throw ValidationError("--min-steps \(minSteps): must be in 0...1000000") }
        cfg.steps = steps; cfg.labelSmoothing = labelSmoothing; cfg.classBalance = classBalance; cfg.layerDecay = layerDecay
        cfg.evaluationsPerEpoch = evaluationsPerEpoch; cfg.patience = patience; cfg.weightDecay = weightDecay; cfg.dropout = dropout
        cfg.noiseFolds = noiseFolds; cfg.suspectThreshold = suspectThreshold; cfg.suspectWeight = suspectWeight
        try cfg.validate()
        let checkpoint = try Checkpoint(directory: URL(fileURLWithPath: base ?? defaultBaseModelDirectory()))
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: data))
        let soft = softLabelColumns?.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } ?? []
        let all = try LabelledData(table: table, textColumn: textColumn, labelColumn: labelColumn, softLabelColumns: soft)
        let train = all.filter { !TextHash.isValidation($0, fraction: validationFraction) }
        let valid = all.filter { TextHash.isValidation($0, fraction: validationFraction) }
        cfg.trainable = try TrainableScope(parsing: trainable, labels: train.texts.count, layers: checkpoint.config.numLayers)
        note("training on \(train.texts.count) rows, validating on \(valid.texts.count), labels \(all.labels), \(all.skipped.count) rows skipped; trainable \(cfg.trainable), \(threads) threads")
        for s in all.skipped.prefix(5) { note("  skipped row \(s.row): \(s.reason)") }
        let tok = checkpoint.tokenizer
        let examples = zip(train.texts, train.targets).map { TrainingExample(ids: tok.encode($0), target: $1) }
        cfg.epochs = TrainingConfiguration.epochs(epochs, minSteps: minSteps, examples: examples.count, batchSize: batch)
        let validation = zip(valid.texts, valid.truth).map { (ids: tok.encode($0), label: $1) }
        let bar = ProgressReporter()
        guard let serving = EncoderPrecision(configuration: precision) else {
            throw ValidationError("--precision \(precision): unknown, or a path this CPU cannot run (CPU features: \(CPUFeatures.host))")
        }
        let result = try FineTune.run(base: checkpoint, labels: all.labels, training: examples, validation: validation,
                                      configuration: cfg, servingPrecision: serving, earlyExit: earlyExit) { p in
            bar.update(fraction: Double(p.step) / Double(p.steps), label: "epoch \(p.epoch)/\(p.epochs)",
                       details: "step \(p.step)/\(p.steps)  loss \(String(format: "%.4f", p.loss))  \(String(format: "%.0f", p.examplesPerSecond)) ex/s  ETA \(ProgressReporter.duration(p.remaining))")
        }
        let model = try FineTune.save(result, trainer: cfg, base: checkpoint, to: URL(fileURLWithPath: out), threads: threads, precision: serving)
        var rows = [["metric", "value"]]
        if let noise = result.labelNoise {
            rows.append(["suspect labels (down-weighted)", "\(noise.suspects.count) of \(examples.count) (\(String(format: "%.1f", noise.seconds)) s)"])
            if let suspectsOut {
                var table = [["text", "teacher"] + all.labels.map { "p_" + $0 }]
                for i in noise.suspects {
                    let t = examples[i].target
                    table.append([train.texts[i], all.labels[t.indices.max { t[$0] < t[$1] }!]] + noise.outOfFold[i].map { String(format: "%.4f", $0) })
                }
                try table.map { $0.map(CSVTable.quote).joined(separator: ",") + "\n" }.joined()
                    .write(toFile: suspectsOut, atomically: true, encoding: .utf8)
            }
        }
        rows.append(["epoch losses", result.epochLosses.map { String(format: "%.4f", $0) }.joined(separator: " ")])
        rows.append(["training seconds", String(format: "%.1f", result.seconds)])
        if let v = result.validation, let u = result.validationUncalibrated {
            rows.append(["validation n", "\(v.n)"])
            rows.append(["validation accuracy", String(format: "%.4f", v.accuracy)])
            rows.append(["validation macro-F1", String(format: "%.4f", v.macroF1)])
            for l in v.labels { rows.append(["  F1 \(l)", String(format: "%.4f", v.perClass[l]?.f1 ?? 0)]) }
            rows.append(["temperature", String(format: "%.3f", result.temperature)])
            rows.append(["ECE before / after", String(format: "%.4f / %.4f", u.expectedCalibrationError, v.expectedCalibrationError)])
            rows.append(["NLL before / after", String(format: "%.4f / %.4f", u.negativeLogLikelihood, v.negativeLogLikelihood)])
        }
        if let e = result.earlyExit, let o = result.earlyExitValidation {
            rows.append(["early exit", "after layers \(e.exits.map(\.afterLayers)), threshold \(String(format: "%.3f", e.threshold))"])
            rows.append(["  validation macro-F1 / accuracy", String(format: "%.4f / %.4f", o.macroF1, o.accuracy)])
            rows.append(["  validation mean layers", String(format: "%.2f of %d (same label as all layers: %.1f%%)", o.meanLayers, checkpoint.config.numLayers, o.agreement * 100)])
        }
        rows.append(["peak RSS MB", "\(peakResidentBytes() / 1_048_576)"])
        rows.append(["artifact", "\(out) (\(model.version))"])
        print(formatTable(rows))
    }
}

/// `newsd eval`: scores a model on a labelled CSV.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval", abstract: "Evaluate a model on labelled sentences.")

    @Option(help: "Artifact or base checkpoint directory.") var model: String
    @Option(help: "CSV file with a header row.") var data: String
    @Option(help: "Column with the sentence.") var textColumn = "text"
    @Option(help: "Column with the true label.") var labelColumn: String
    @Option(help: "Worker threads.") var threads = 2
    @Option(help: "Batch size.") var batch = 32
    @Option(help: "Encoder precision: fp32, int8 (the fastest int8 path of this CPU) or int8-<portable|avx2|avx512-vnni>.") var precision = "fp32"
    @Flag(inversion: .prefixedNo, help: "Stop sure sentences at an intermediate layer (models that carry exit classifiers), as the daemon does.") var earlyExit = true
    @Option(help: "Exit threshold instead of the model's (experiments: the trade-off of speed and accuracy).") var exitThreshold: Float?
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "Also write each row's predicted label and probabilities to this CSV (experiments: bootstrap intervals, ensembles).")
    var predictionsOut: String?

    func run() throws {
        guard let chosen = EncoderPrecision(configuration: precision) else {
            throw ValidationError("--precision \(precision): unknown, or a path this CPU cannot run (CPU features: \(CPUFeatures.host))")
        }
        var student = try Artifact.load(directory: URL(fileURLWithPath: model), threads: threads, precision: chosen, earlyExit: earlyExit)
        if let exitThreshold, let exits = student.earlyExit {
            student = student.with(precision: chosen, earlyExit: EarlyExit(exits: exits.exits, threshold: exitThreshold))
        }
        let table = try CSVTable(contentsOf: URL(fileURLWithPath: data))
        let set = try LabelledData(table: table, textColumn: textColumn, labelColumn: labelColumn, labels: student.labels)
        let predictions = student.predict(set.texts, batchSize: batch)
        let m = EvaluationMetrics(probabilities: predictions.map(\.probabilities), truth: set.truth, labels: student.labels)
        let usage = student.usage.counts, meanLayers = Double(usage.layers) / Double(max(1, usage.sentences))
        if let predictionsOut {
            var lines = ["row,truth,predicted," + student.labels.map { "p_" + $0 }.joined(separator: ",")]
            for (i, p) in predictions.enumerated() {
                lines.append("\(i),\(student.labels[set.truth[i]]),\(p.label)," + p.probabilities.map { String(format: "%.6f", $0) }.joined(separator: ","))
            }
            try (lines.joined(separator: "\n") + "\n").write(toFile: predictionsOut, atomically: true, encoding: .utf8)
        }
        if json {
            let perClass = m.perClass.mapValues { c in
                EvaluationReport.ClassReport(precision: rounded(c.precision), recall: rounded(c.recall), f1: rounded(c.f1), support: c.support)
            }
            print(jsonLine(EvaluationReport(accuracy: rounded(m.accuracy), macroF1: rounded(m.macroF1), perClass: perClass, confusion: m.confusion,
                                            labels: m.labels, n: m.n, skipped: set.skipped.count, ece: rounded(m.expectedCalibrationError),
                                            modelVersion: student.version, meanLayers: rounded(meanLayers))))
            return
        }
        print("model \(student.version) on \(data): n=\(m.n) (\(set.skipped.count) rows skipped)")
        print(String(format: "accuracy  %.4f\nmacro-F1  %.4f\nECE       %.4f\nlayers    %.2f of %d per sentence (early exit %@)\n", m.accuracy, m.macroF1,
                     m.expectedCalibrationError, meanLayers, student.runner.config.numLayers, student.earlyExit == nil ? "off" : "on"))
        var rows = [["class", "precision", "recall", "F1", "support"]]
        for l in m.labels { let c = m.perClass[l]!; rows.append([l, String(format: "%.4f", c.precision), String(format: "%.4f", c.recall), String(format: "%.4f", c.f1), "\(c.support)"]) }
        print(formatTable(rows) + "\n")
        var conf = [["true \\ predicted"] + m.labels]
        for (i, l) in m.labels.enumerated() { conf.append([l] + m.confusion[i].map(String.init)) }
        print(formatTable(conf))
    }
}

/// `newsd classify`: sentences on stdin, one JSON line each on stdout.
struct ClassifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "classify", abstract: "Classify sentences read from standard input, one per line.")

    @Option(help: "Artifact or base checkpoint directory.") var model: String
    @Option(help: "Worker threads.") var threads = 2
    @Option(help: "Lines classified together.") var batch = 32
    @Option(help: "Encoder precision: int8 (as the daemon serves by default), int8-<path> or fp32.") var precision = "int8"

    func run() throws {
        guard let chosen = EncoderPrecision(configuration: precision) else {
            throw ValidationError("--precision \(precision): unknown, or a path this CPU cannot run (CPU features: \(CPUFeatures.host))")
        }
        let student = try Artifact.load(directory: URL(fileURLWithPath: model), threads: threads, precision: chosen)
        var pending: [String] = []
        func flush() {
            for (text, p) in zip(pending, student.predict(pending, batchSize: batch)) {
                var probabilities: [String: Double] = [:]
                for (l, v) in zip(student.labels, p.probabilities) { probabilities[l] = rounded(Double(v), 6) }
                let line = jsonLine(ClassifiedLine(text: text, label: p.label, probabilities: probabilities, margin: rounded(Double(p.margin), 6),
                                                   entropy: rounded(Double(p.entropy), 6), modelVersion: student.version))
                FileHandle.standardOutput.write(Data((line + "\n").utf8))   // unbuffered: one line per sentence, at once
            }
            pending.removeAll()
        }
        while let line = readLine(strippingNewline: true) {
            pending.append(line)
            if pending.count >= batch { flush() }
        }
        flush()
    }
}

/// `newsd eval --json`.
struct EvaluationReport: Encodable {
    struct ClassReport: Encodable { var precision: Double, recall: Double, f1: Double, support: Int }
    var accuracy: Double, macroF1: Double, perClass: [String: ClassReport], confusion: [[Int]], labels: [String]
    var n: Int, skipped: Int, ece: Double, modelVersion: String, meanLayers: Double
    enum CodingKeys: String, CodingKey {
        case accuracy, macroF1 = "macro_f1", perClass = "per_class", confusion, labels, n, skipped, ece, modelVersion = "model_version"
        case meanLayers = "mean_layers"
    }
}

/// One line of `newsd classify`.
struct ClassifiedLine: Encodable {
    var text: String, label: String, probabilities: [String: Double], margin: Double, entropy: Double, modelVersion: String
    enum CodingKeys: String, CodingKey { case text, label, probabilities, margin, entropy, modelVersion = "model_version" }
}
