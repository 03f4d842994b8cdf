import Foundation
import NewsdSystem

/// The outcome of a fine-tuning run: the trained student (already calibrated) and its figures.
public struct FineTuneResult: Sendable {
    /// The trained, calibrated model, ready to serve.
    public var model: StudentModel
    /// Mean training loss per epoch.
    public var epochLosses: [Double]
    /// Validation metrics before calibration (nil without validation data).
    public var validationUncalibrated: EvaluationMetrics?
    /// Validation metrics with the fitted temperature.
    public var validation: EvaluationMetrics?
    /// The fitted temperature.
    public var temperature: Float
    /// The intermediate classifiers and their threshold (nil without validation data).
    public var earlyExit: EarlyExit?
    /// What early exit does on the validation split (nil without validation data).
    public var earlyExitValidation: EarlyExit.Outcome?
    /// The label-noise pass's findings (nil when `noiseFolds` is 0).
    public var labelNoise: LabelNoise.Report?
    /// Layers (and whether the embeddings) the starting model of an incremental run had changed
    /// from the base: the artifact must carry them too.
    public var inheritedLayers: [Int] = [], inheritedEmbeddings = false
    /// Wall-clock seconds of the whole run (caching, training, calibration).
    public var seconds: Double
    /// Artifact metrics by name, as stored in the manifest.
    public var metrics: [String: Double]
}

/// One complete fine-tuning run: train on examples, score the validation split, fit the
/// temperature on it, and assemble the servable model. Writing the artifact is separate.
public enum FineTune {
    /// Runs training. `validation` holds token ids and true label indices (may be empty: the
    /// temperature then stays 1). The validation figures and the temperature are computed with
    /// `servingPrecision`, the precision the model will serve with. With `continuing`, training
    /// starts from that model's encoder and head (an incremental run) instead of the base's. With validation data, it also
    /// distils early-exit classifiers from the trained model and chooses their threshold (unless
    /// `earlyExit` is false).
    public static func run(base: Checkpoint, labels: [String], training examples: [TrainingExample],
                           validation: [(ids: [Int32], label: Int)], configuration: TrainingConfiguration,
                           servingThreads: Int? = nil, servingPrecision: EncoderPrecision = .fp32, earlyExit fitExits: Bool = true,
                           continuing startModel: StudentModel? = nil, cancel: StopFlag? = nil, progress: (TrainingProgress) -> Void = { _ in }) throws -> FineTuneResult {
        let start = Date()
        var examples = examples, noise: LabelNoise.Report?
        if configuration.noiseFolds >= 2 {
            let report = try LabelNoise.find(base: base.weights, classes: labels.count, examples: examples, configuration: configuration,
                                             folds: configuration.noiseFolds, threshold: configuration.suspectThreshold, cancel: cancel)
            examples = LabelNoise.downWeighted(examples, suspects: report.suspects, weight: configuration.suspectWeight)
            noise = report
        }
        var startWeights = base.weights
        if let startModel {
            guard let w = startModel.runner.floatWeights else {
                throw ModelError.invalidArgument("an incremental run needs its starting model's float weights (it was loaded serving-only)")
            }
            startWeights = w
        }
        let trainer = try Trainer(base: startWeights, classes: labels.count, configuration: configuration, head: startModel?.head)
        let losses = try trainer.train(examples, validation: validation, cancel: cancel, progress: progress)
        if cancel?.isSet == true { throw ModelError.cancelled("training") }
        let weights = trainer.weights
        let head = trainer.trainedHead
        var temperature: Float = 1
        var before: EvaluationMetrics?, after: EvaluationMetrics?
        var metrics: [String: Double] = ["train_examples": Double(examples.count), "final_train_loss": losses.last ?? 0]
        if let best = trainer.bestValidationLoss { metrics["best_validation_loss"] = best }
        if startModel != nil { metrics["incremental"] = 1 }
        if let noise { metrics["label_suspects"] = Double(noise.suspects.count); metrics["label_noise_seconds"] = noise.seconds }
        var earlyExit: EarlyExit?, exitOutcome: EarlyExit.Outcome?
        if !validation.isEmpty {
            let layers = base.config.numLayers, exitLayers = EarlyExit.exitLayers(encoderLayers: layers)
            let runner = EncoderRunner(weights: weights, threads: configuration.threads, precision: servingPrecision)
            let validationPooled = runner.pooled(validation.map(\.ids), atLayers: exitLayers + [layers], batchSize: 32)
            let logits = validationPooled[exitLayers.count].map(head.logits)
            let truth = validation.map(\.label)
            before = EvaluationMetrics(probabilities: logits.map { softmax($0) }, truth: truth, labels: labels)
            temperature = Calibration.fitTemperature(logits: logits, truth: truth)
            let calibrated = logits.map { softmax($0, temperature: temperature) }
            after = EvaluationMetrics(probabilities: calibrated, truth: truth, labels: labels)
            if let before, let after {
                metrics["validation_examples"] = Double(validation.count)
                metrics["validation_accuracy"] = after.accuracy
                metrics["validation_macro_f1"] = after.macroF1
                metrics["validation_ece_uncalibrated"] = before.expectedCalibrationError
                metrics["validation_ece"] = after.expectedCalibrationError
                metrics["validation_nll_uncalibrated"] = before.negativeLogLikelihood
                metrics["validation_nll"] = after.negativeLogLikelihood
                for (label, m) in after.perClass { metrics["validation_f1_\(label)"] = m.f1; metrics["validation_recall_\(label)"] = m.recall }
            }
            if fitExits && !exitLayers.isEmpty {
                if cancel?.isSet == true { throw ModelError.cancelled("training") }
                // Early exit: each intermediate classifier learns the final layer's calibrated
                // outputs on the training sentences; the threshold is chosen on validation.
                let trainingPooled = runner.pooled(examples.map(\.ids), atLayers: exitLayers + [layers], batchSize: 32)
                let targets = trainingPooled[exitLayers.count].map { softmax(head.logits($0), temperature: temperature) }
                let fitted = exitLayers.indices.map { k in
                    EarlyExit.fitCrossValidated(features: trainingPooled[k], targets: targets, classes: labels.count, hidden: base.config.hiddenSize)
                }
                let exits = zip(exitLayers, fitted).map { EarlyExit.Exit(afterLayers: $0, head: $1.head) }
                let exitProbabilities = exits.enumerated().map { k, e in validationPooled[k].map { softmax(e.head.logits($0)) } }
                let chosen = EarlyExit.chooseThreshold(exitLayers: exitLayers, exitProbabilities: exitProbabilities, final: calibrated,
                                                       encoderLayers: layers, truth: truth, labels: labels,
                                                       outOfFold: (fitted.map(\.outOfFold), targets))
                earlyExit = EarlyExit(exits: exits, threshold: chosen.threshold)
                exitOutcome = chosen
                metrics["early_exit_threshold"] = Double(chosen.threshold)
                metrics["early_exit_validation_macro_f1"] = chosen.macroF1
                metrics["early_exit_validation_mean_layers"] = chosen.meanLayers
            }
        }
        let seconds = Date().timeIntervalSince(start)
        metrics["train_seconds"] = seconds
        metrics["temperature"] = Double(temperature)
        let model = StudentModel(labels: labels, tokenizer: base.tokenizer, weights: weights, head: head, temperature: temperature,
                                 threads: servingThreads ?? configuration.threads, manifest: nil, baseChecksum: base.weightsChecksum,
                                 earlyExit: earlyExit)
        // An incremental run inherits the layers its starting model had changed from the base.
        let inherited = startModel?.manifest.map { (layers: $0.trainedLayers, embeddings: $0.trainedEmbeddings) }
        return FineTuneResult(model: model, epochLosses: losses, validationUncalibrated: before, validation: after,
                              temperature: temperature, earlyExit: earlyExit, earlyExitValidation: exitOutcome, labelNoise: noise,
                              inheritedLayers: inherited?.layers ?? [], inheritedEmbeddings: inherited?.embeddings ?? false, seconds: seconds, metrics: metrics)
    }

    /// Writes a fine-tuned model as an artifact and returns it reloaded from disk (so what is
    /// returned is exactly what other hosts will load), computing with `precision` (the serving
    /// hosts' precision, so the gate judges what will serve).
    public static func save(_ result: FineTuneResult, trainer configuration: TrainingConfiguration, base: Checkpoint,
                            to directory: URL, threads: Int, precision: EncoderPrecision = .fp32) throws -> StudentModel {
        let m = result.model
        let trainedLayers: [Int]
        switch configuration.trainable {
        case .head: trainedLayers = []
        case .all: trainedLayers = Array(0..<base.config.numLayers)
        case let .top(k): trainedLayers = Array((base.config.numLayers - k)..<base.config.numLayers)
        }
        guard let weights = m.runner.floatWeights else { throw ModelError.invalidArgument("a serving-only model cannot be saved") }
        try Artifact.write(directory: directory, base: base, weights: weights, head: m.head, labels: m.labels,
                           trainedLayers: Array(Set(trainedLayers + result.inheritedLayers)).sorted(),
                           trainedEmbeddings: configuration.trainable == .all || result.inheritedEmbeddings,
                           training: configuration, trainingExamples: Int(result.metrics["train_examples"] ?? 0),
                           metrics: result.metrics, temperature: result.temperature, earlyExit: result.earlyExit)
        return try Artifact.load(directory: directory, baseDirectory: base.directory, threads: threads, precision: precision)
    }
}
