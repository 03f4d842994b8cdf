import Dispatch
import Foundation
import NewsdSystem

/// Which parameters fine-tuning updates.
public enum TrainableScope: Sendable, Equatable, CustomStringConvertible, Codable {
    /// Only the classification head (the encoder's pooled outputs are computed once and cached).
    case head
    /// The top K layers and the head (the frozen lower layers' outputs are computed once and cached).
    case top(Int)
    /// Everything, embeddings included.
    case all

    /// Parses `head`, `top:K` or `all`.
    public init(parsing text: String) throws {
        switch text {
        case "head": self = .head
        case "all": self = .all
        default:
            guard text.hasPrefix("top:"), let k = Int(text.dropFirst(4)), k > 0 else {
                throw ModelError.invalidArgument("trainable scope \"\(text)\": expected head, top:K (K > 0) or all")
            }
            self = .top(k)
        }
    }

    /// `head`, `top:K` or `all`.
    public var description: String {
        switch self { case .head: return "head"; case .all: return "all"; case let .top(k): return "top:\(k)" }
    }

    /// The depth `trainable = "auto"` picks for a training set of `labels` labels: the last
    /// `automaticDepth` entry whose minimum the count reaches. Measured by cross-validation on
    /// the shared data (docs/experiments.md, "Depth by label count"): four layers beat two by
    /// 1.7 points of macro-F1 at 400 labels and by 0.5 (within noise) at 1,450, and every layer
    /// lost at both; a step costs 1.7 times as much with four. So four while labels are few (the
    /// gain is largest, a run is short) and two from 5,000, where the gain has faded and a full
    /// top-4 run on two cores beside ingest would pass 3 minutes and keep growing (136 s
    /// measured at 3,947 labels).
    /// `layers`: the encoder's depth (a smaller encoder trains at most all of its layers).
    public static func automatic(labels: Int, layers: Int = .max) -> TrainableScope {
        let scope = automaticDepth.last { labels >= $0.minimumLabels }?.scope ?? .top(2)
        if case let .top(k) = scope, k > layers { return .top(max(1, layers)) }
        return scope
    }

    /// The table behind `automatic(labels:)`, in rising order of labels.
    public static let automaticDepth: [(minimumLabels: Int, scope: TrainableScope)] = [(0, .top(4)), (5000, .top(2))]

    /// Parses `head`, `top:K`, `all`, or `auto` (resolved with `automatic(labels:layers:)`).
    public init(parsing text: String, labels: Int, layers: Int = .max) throws {
        self = text == "auto" ? .automatic(labels: labels, layers: layers) : try TrainableScope(parsing: text)
    }

    /// Encodes as its description.
    public func encode(to encoder: Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(description) }
    /// Decodes from its description.
    public init(from decoder: Decoder) throws { try self.init(parsing: try decoder.singleValueContainer().decode(String.self)) }
}

/// Fine-tuning hyper-parameters. The defaults are the configuration that won the cross-validated
/// experiments of docs/experiments.md on the financial-news task with MiniLM-L6 (4 epochs, batch
/// 16, lr 1e-4, label smoothing 0.3; the trainer and `newsd train` choose the depth by label
/// count with `TrainableScope.automatic`): 0.93 accuracy against the experts' labels when trained
/// on a real LLM teacher's labels only.
public struct TrainingConfiguration: Codable, Sendable, Equatable {
    /// Passes over the training data. Default 4.
    public var epochs: Int = 4
    /// Peak AdamW learning rate. Default 1e-4.
    public var learningRate: Float = 1e-4
    /// Examples per optimiser step. Default 16.
    public var batchSize: Int = 16
    /// Seed of initialisation, shuffling and dropout. Default 42.
    public var seed: UInt64 = 42
    /// Worker threads. Default 2. Results are deterministic for a given seed and thread count.
    public var threads: Int = 2
    /// Parameters updated. Default top:2 (what configurations written before the `auto` depth
    /// mean; callers resolve `auto` with `TrainableScope.automatic(labels:)`).
    public var trainable: TrainableScope = .top(2)
    /// Share of steps with linearly rising learning rate; the rest decays linearly to 0. Default 0.1.
    public var warmupFraction: Float = 0.1
    /// Decoupled weight decay on weight matrices (not biases or LayerNorm). Default 0.01.
    public var weightDecay: Float = 0.01
    /// Dropout on hidden states, attention probabilities and the pooled vector. Default 0.1.
    public var dropout: Float = 0.1
    /// The randomly initialised head learns this many times faster than the pre-trained encoder
    /// layers (it starts from nothing; they only need nudging). Default 10.
    public var headLearningRateMultiplier: Float = 10
    /// Global gradient-norm clipping threshold (0 = off). Default 1.0.
    public var maxGradientNorm: Float = 1.0
    /// Share of the data held out for validation and temperature fitting. Default 0.1.
    public var validationFraction: Double = 0.1
    /// Optimiser steps in all (0: `epochs` passes). Steps, not epochs, make the schedule the same
    /// length whatever the label count; the data is reshuffled after each pass. Default 0.
    public var steps: Int = 0
    /// ε of label smoothing: targets become (1 − ε)·target + ε/classes, so a wrong teacher label
    /// cannot be fitted with certainty. Default 0.3: the best of 0–0.4 in the cross-validated
    /// experiment (docs/experiments.md), +1 point of macro-F1 against the experts.
    public var labelSmoothing: Float = 0.3
    /// Exponent α of class balancing: an example of class c weighs (N / (classes · n_c))^α, the
    /// factors scaled so the examples' total weight is unchanged (0 = off, 1 = fully balanced;
    /// n_c sums the soft targets). Default 0.
    public var classBalance: Float = 0
    /// Layer-wise learning-rate decay: layer l of L learns at rate · decay^(L − 1 − l), the
    /// embeddings at rate · decay^L (1 = off). Default 1.
    public var layerDecay: Float = 1
    /// Evaluate on the validation split this many times per pass over the data and keep the
    /// parameters with the lowest validation loss (0 = off: the last step's). Default 0.
    public var evaluationsPerEpoch: Int = 0
    /// Stop after this many evaluations without improvement (0 = never stop early). Default 0.
    public var patience: Int = 0
    /// Label-noise pass: cross-fit this many students first and down-weight the examples whose
    /// teacher label they doubt (see `LabelNoise`; 0 = off, else at least 2). Default 0.
    public var noiseFolds: Int = 0
    /// An example is a suspect when the out-of-fold student gives its teacher label less than this. Default 0.2.
    public var suspectThreshold: Float = 0.2
    /// A suspect's weight is multiplied by this. Default 0.25.
    public var suspectWeight: Float = 0.25

    /// The defaults.
    public init() {}

    /// Checks ranges, naming the bad value.
    public func validate() throws {
        guard epochs > 0 else { throw ModelError.invalidArgument("epochs \(epochs) must be > 0") }
        guard learningRate > 0, learningRate.isFinite else { throw ModelError.invalidArgument("learning rate \(learningRate) must be > 0") }
        guard batchSize > 0 else { throw ModelError.invalidArgument("batch size \(batchSize) must be > 0") }
        guard threads > 0 else { throw ModelError.invalidArgument("threads \(threads) must be > 0") }
        guard headLearningRateMultiplier > 0 else { throw ModelError.invalidArgument("head learning-rate multiplier \(headLearningRateMultiplier) must be > 0") }
        guard (0..<1).contains(dropout) else { throw ModelError.invalidArgument("dropout \(dropout) must be in [0, 1)") }
        guard (0..<1).contains(validationFraction) else { throw ModelError.invalidArgument("validation fraction \(validationFraction) must be in [0, 1)") }
        guard (0...1).contains(warmupFraction) else { throw ModelError.invalidArgument("warm-up fraction \(warmupFraction) must be in [0, 1]") }
        guard steps >= 0 else { throw ModelError.invalidArgument("steps \(steps) must be >= 0") }
        guard (0..<1).contains(labelSmoothing) else { throw ModelError.invalidArgument("label smoothing \(labelSmoothing) must be in [0, 1)") }
        guard (0...2).contains(classBalance) else { throw ModelError.invalidArgument("class balance \(classBalance) must be in [0, 2]") }
        guard layerDecay > 0, layerDecay <= 1 else { throw ModelError.invalidArgument("layer decay \(layerDecay) must be in (0, 1]") }
        guard evaluationsPerEpoch >= 0 else { throw ModelError.invalidArgument("evaluations per epoch \(evaluationsPerEpoch) must be >= 0") }
        guard patience >= 0 else { throw ModelError.invalidArgument("patience \(patience) must be >= 0") }
        guard noiseFolds == 0 || noiseFolds >= 2 else { throw ModelError.invalidArgument("noise folds \(noiseFolds) must be 0 (off) or >= 2") }
        guard (0...1).contains(suspectThreshold) else { throw ModelError.invalidArgument("suspect threshold \(suspectThreshold) must be in [0, 1]") }
        guard (0...1).contains(suspectWeight) else { throw ModelError.invalidArgument("suspect weight \(suspectWeight) must be in [0, 1]") }
    }

    /// The passes over `examples` examples that make at least `minSteps` optimiser steps of
    /// `batchSize`: a few hundred labels need more passes than thousands. Never fewer than
    /// `epochs`, and no more than 20 to reach `minSteps`. The trainer (`trainer.min_steps`) and
    /// `newsd train` (`--min-steps`) both count passes this way.
    public static func epochs(_ epochs: Int, minSteps: Int, examples: Int, batchSize: Int) -> Int {
        max(epochs, min(20, (minSteps * batchSize + examples - 1) / max(examples, 1)))
    }

    /// Total optimiser steps for `examples` examples.
    public func totalSteps(examples: Int) -> Int {
        steps > 0 ? steps : (examples + batchSize - 1) / batchSize * epochs
    }

    /// The JSON keys (the property names).
    enum CodingKeys: String, CodingKey {
        case epochs, learningRate, batchSize, seed, threads, trainable, warmupFraction, weightDecay, dropout
        case headLearningRateMultiplier, maxGradientNorm, validationFraction, steps, labelSmoothing, classBalance
        case layerDecay, evaluationsPerEpoch, patience, noiseFolds, suspectThreshold, suspectWeight
    }

    /// The settings that came after the first artifacts, with the values that reproduce training
    /// as it was before they existed (no smoothing, no balancing, ...). A manifest without a key
    /// was trained that way, whatever today's default is.
    static var legacy: TrainingConfiguration {
        var c = TrainingConfiguration()
        c.steps = 0; c.labelSmoothing = 0; c.classBalance = 0; c.layerDecay = 1; c.evaluationsPerEpoch = 0; c.patience = 0
        c.noiseFolds = 0; c.suspectThreshold = 0.2; c.suspectWeight = 0.25
        return c
    }

    /// Encodes every setting older versions know, and the newer ones only where they differ
    /// from their legacy values: an artifact's checksum covers its manifest's canonical JSON, so
    /// an artifact written before they existed must re-encode to the same bytes (else every
    /// stored model would be refused after an upgrade).
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        let d = TrainingConfiguration.legacy
        try c.encode(epochs, forKey: .epochs); try c.encode(learningRate, forKey: .learningRate)
        try c.encode(batchSize, forKey: .batchSize); try c.encode(seed, forKey: .seed); try c.encode(threads, forKey: .threads)
        try c.encode(trainable, forKey: .trainable); try c.encode(warmupFraction, forKey: .warmupFraction)
        try c.encode(weightDecay, forKey: .weightDecay); try c.encode(dropout, forKey: .dropout)
        try c.encode(headLearningRateMultiplier, forKey: .headLearningRateMultiplier)
        try c.encode(maxGradientNorm, forKey: .maxGradientNorm); try c.encode(validationFraction, forKey: .validationFraction)
        if steps != d.steps { try c.encode(steps, forKey: .steps) }
        if labelSmoothing != d.labelSmoothing { try c.encode(labelSmoothing, forKey: .labelSmoothing) }
        if classBalance != d.classBalance { try c.encode(classBalance, forKey: .classBalance) }
        if layerDecay != d.layerDecay { try c.encode(layerDecay, forKey: .layerDecay) }
        if evaluationsPerEpoch != d.evaluationsPerEpoch { try c.encode(evaluationsPerEpoch, forKey: .evaluationsPerEpoch) }
        if patience != d.patience { try c.encode(patience, forKey: .patience) }
        if noiseFolds != d.noiseFolds { try c.encode(noiseFolds, forKey: .noiseFolds) }
        if suspectThreshold != d.suspectThreshold { try c.encode(suspectThreshold, forKey: .suspectThreshold) }
        if suspectWeight != d.suspectWeight { try c.encode(suspectWeight, forKey: .suspectWeight) }
    }

    /// Decodes, taking the legacy values for keys that older artifacts do not have.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TrainingConfiguration.legacy
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? d.epochs
        learningRate = try c.decodeIfPresent(Float.self, forKey: .learningRate) ?? d.learningRate
        batchSize = try c.decodeIfPresent(Int.self, forKey: .batchSize) ?? d.batchSize
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        threads = try c.decodeIfPresent(Int.self, forKey: .threads) ?? d.threads
        trainable = try c.decodeIfPresent(TrainableScope.self, forKey: .trainable) ?? d.trainable
        warmupFraction = try c.decodeIfPresent(Float.self, forKey: .warmupFraction) ?? d.warmupFraction
        weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? d.weightDecay
        dropout = try c.decodeIfPresent(Float.self, forKey: .dropout) ?? d.dropout
        headLearningRateMultiplier = try c.decodeIfPresent(Float.self, forKey: .headLearningRateMultiplier) ?? d.headLearningRateMultiplier
        maxGradientNorm = try c.decodeIfPresent(Float.self, forKey: .maxGradientNorm) ?? d.maxGradientNorm
        validationFraction = try c.decodeIfPresent(Double.self, forKey: .validationFraction) ?? d.validationFraction
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        labelSmoothing = try c.decodeIfPresent(Float.self, forKey: .labelSmoothing) ?? d.labelSmoothing
        classBalance = try c.decodeIfPresent(Float.self, forKey: .classBalance) ?? d.classBalance
        layerDecay = try c.decodeIfPresent(Float.self, forKey: .layerDecay) ?? d.layerDecay
        evaluationsPerEpoch = try c.decodeIfPresent(Int.self, forKey: .evaluationsPerEpoch) ?? d.evaluationsPerEpoch
        patience = try c.decodeIfPresent(Int.self, forKey: .patience) ?? d.patience
        noiseFolds = try c.decodeIfPresent(Int.self, forKey: .noiseFolds) ?? d.noiseFolds
        suspectThreshold = try c.decodeIfPresent(Float.self, forKey: .suspectThreshold) ?? d.suspectThreshold
        suspectWeight = try c.decodeIfPresent(Float.self, forKey: .suspectWeight) ?? d.suspectWeight
    }
}

/// One training example: token ids and a target distribution over the classes (one-hot for a hard
/// label, the vote shares for a soft label), with a weight (how much its label is trusted).
public struct TrainingExample: Sendable {
    /// Token ids including `[CLS]` and `[SEP]`.
    public var ids: [Int32]
    /// Target probabilities, summing to 1.
    public var target: [Float]
    /// Weight of the example's loss (1 = normal; less for a label suspected wrong). Default 1.
    public var weight: Float
    /// Creates an example.
    public init(ids: [Int32], target: [Float], weight: Float = 1) { self.ids = ids; self.target = target; self.weight = weight }
}

/// Progress of a training run, reported after every step.
public struct TrainingProgress: Sendable {
    /// Current epoch, from 1.
    public var epoch: Int
    /// Total epochs.
    public var epochs: Int
    /// Steps done.
    public var step: Int
    /// Total steps.
    public var steps: Int
    /// Mean loss over the current epoch so far.
    public var loss: Double
    /// Examples per second since the start of the optimisation.
    public var examplesPerSecond: Double
    /// Seconds since the start.
    public var elapsed: Double
    /// Estimated seconds left.
    public var remaining: Double
}

/// A parameter block being trained, with its AdamW moments and per-thread gradients.
final class TrainableBlock {
    let parameters: FloatBuffer
    let decayed: [Range<Int>]
    let m: FloatBuffer, v: FloatBuffer
    let gradients: [FloatBuffer]   // one per thread; [0] holds the sum after reduction

    init(parameters: FloatBuffer, decayed: [Range<Int>], threads: Int) {
        self.parameters = parameters
        self.decayed = decayed
        m = FloatBuffer(count: parameters.count)
        v = FloatBuffer(count: parameters.count)
        gradients = (0..<threads).map { _ in FloatBuffer(count: parameters.count) }
    }
}

/// Per-thread training buffers.
final class TrainingWorkspace {
    var layers: [LayerActivations] = []
    let embeddings = EmbeddingActivations()
    var input = Scratch(), dOut = Scratch(), dX = Scratch(), pooled = Scratch(), poolMask = Scratch()
    var dPooled = Scratch(), logits = Scratch(), embeddingScratch = Scratch()
    var gradients = LayerGradientScratch()
    var loss: Double = 0
}

/// Fine-tunes a classifier on an encoder: AdamW with linear warm-up and decay, dropout, gradient
/// clipping, soft or hard targets, deterministic for a seed and thread count. Training works on
/// copies: the weights it was given keep serving unchanged.
///
/// `@unchecked Sendable` without a lock: one thread drives a trainer (`train`); the worker threads
/// it starts per step use disjoint workspaces and gradient slices and are joined before the step
/// applies the update.
public final class Trainer: @unchecked Sendable {
    /// The hyper-parameters.
    public let configuration: TrainingConfiguration
    let config: BertConfig
    let classes: Int
    let base: EncoderWeights
    /// Index of the first trainable layer (layers below it are frozen and cached).
    let firstTrainable: Int
    /// Layer weights as trained (frozen layers are shared with `base`).
    private(set) var layers: [FloatBuffer]
    private(set) var embeddings: FloatBuffer
    let head: ClassifierHead
    var blocks: [TrainableBlock] = []
    private var workspaces: [TrainingWorkspace]
    /// Cached frozen outputs: hidden states after `firstTrainable` layers ([len*H] per example), or
    /// pooled vectors when only the head trains.
    private var cache: [[Float]] = []
    private var examples: [TrainingExample] = []

    /// Prepares training of `classes` classes on top of `base` (copied where trainable).
    public init(base: EncoderWeights, classes: Int, configuration: TrainingConfiguration, head: ClassifierHead? = nil) throws {
        try configuration.validate()
        _ = BLAS.configured
        let c = base.config
        self.configuration = configuration
        self.config = c
        self.classes = classes
        self.base = base
        switch configuration.trainable {
        case .head: firstTrainable = c.numLayers
        case .all: firstTrainable = 0
        case let .top(k):
            guard k <= c.numLayers else {
                throw ModelError.invalidArgument("trainable top:\(k) but the encoder has \(c.numLayers) layers")
            }
            firstTrainable = c.numLayers - k
        }
        let threads = configuration.threads
        let first = firstTrainable
        embeddings = configuration.trainable == .all ? base.embeddings.copy() : base.embeddings
        layers = base.layers.enumerated().map { $0.offset >= first ? $0.element.copy() : $0.element }
        let head = head.map { ClassifierHead(classes: $0.classes, hidden: $0.hidden, parameters: $0.parameters.copy()) }
            ?? ClassifierHead(classes: classes, hidden: c.hiddenSize, seed: configuration.seed)
        self.head = head
        if configuration.trainable == .all {
            blocks.append(TrainableBlock(parameters: embeddings, decayed: EmbeddingLayout(c).decayed, threads: threads))
        }
        for l in firstTrainable..<c.numLayers {
            blocks.append(TrainableBlock(parameters: layers[l], decayed: LayerLayout(c).decayed, threads: threads))
        }
        blocks.append(TrainableBlock(parameters: head.parameters, decayed: [0..<(classes * c.hiddenSize)], threads: threads))
        workspaces = (0..<threads).map { _ in
            let w = TrainingWorkspace()
            w.layers = (first..<c.numLayers).map { _ in LayerActivations(saveForBackward: true) }
            return w
        }
    }

    /// The encoder as trained so far (frozen layers shared with the base).
    public var weights: EncoderWeights {
        EncoderWeights(config: config, embeddings: embeddings, layers: layers, sharedBase: base.sharedBase ?? base)
    }
    /// The head as trained so far.
    public var trainedHead: ClassifierHead { head }
    /// Indices of the layers that training changes.
    public var trainedLayers: Range<Int> { firstTrainable..<config.numLayers }
    /// Whether training changes the embeddings.
    public var trainsEmbeddings: Bool { configuration.trainable == .all }

    /// Sets the examples and computes the frozen part of the network for them once.
    func load(_ examples: [TrainingExample], cancel: StopFlag? = nil) throws {
        for (i, e) in examples.enumerated() {
            guard e.target.count == classes else {
                throw ModelError.invalidArgument("example \(i) has \(e.target.count) target values, expected \(classes)")
            }
            guard !e.ids.isEmpty else { throw ModelError.invalidArgument("example \(i) has no tokens") }
        }
        self.examples = Trainer.prepared(examples, classes: classes, labelSmoothing: configuration.labelSmoothing,
                                         classBalance: configuration.classBalance).map { e in
            var e = e
            if e.ids.count > config.maxPositions { e.ids = Array(e.ids.prefix(config.maxPositions)) }
            return e
        }
        let runner = EncoderRunner(weights: base, threads: configuration.threads)
        // The frozen layers' outputs are computed in slices (each example on its own, so slicing
        // changes no number) with a cancellation check between them.
        let ids = self.examples.map(\.ids), slice = 256
        cache = []
        if case .all = configuration.trainable { return }
        for start in stride(from: 0, to: ids.count, by: slice) {
            if cancel?.isSet == true { throw ModelError.cancelled("training") }
            let part = Array(ids[start..<min(ids.count, start + slice)])
            switch configuration.trainable {
            case .all: break
            case .head: cache += runner.pooled(part, batchSize: 32)
            case .top: cache += runner.hiddenStates(part, layers: firstTrainable, batchSize: 32)
            }
        }
    }

    /// The examples as trained on: targets smoothed by `labelSmoothing`, weights multiplied by the
    /// class-balance factor of their target and normalised so the mean weight stays as given.
    static func prepared(_ examples: [TrainingExample], classes: Int, labelSmoothing: Float, classBalance: Float) -> [TrainingExample] {
        var counts = [Double](repeating: 0, count: classes)
        for e in examples { for k in 0..<classes { counts[k] += Double(e.target[k]) } }
        let n = Double(examples.count)
        let factor = counts.map { c in classBalance == 0 || c == 0 ? 1 : pow(n / (Double(classes) * c), Double(classBalance)) }
        var out = examples.map { e -> TrainingExample in
            var e = e
            if classBalance != 0 { e.weight *= Float(zip(e.target, factor).reduce(0) { $0 + Double($1.0) * $1.1 }) }
            if labelSmoothing > 0 { e.target = e.target.map { (1 - labelSmoothing) * $0 + labelSmoothing / Float(classes) } }
            return e
        }
        if classBalance != 0 {
            let before = examples.reduce(0) { $0 + Double($1.weight) }, after = out.reduce(0) { $0 + Double($1.weight) }
            if after > 0 { let scale = Float(before / after); for i in out.indices { out[i].weight *= scale } }
        }
        return out
    }

    /// Trains on `examples`, calling `progress` after each step. Returns the mean loss per pass.
    ///
    /// With `validation` and `evaluationsPerEpoch > 0`, the validation loss is measured that many
    /// times per pass and the parameters with the lowest one are kept (and, with `patience`, the
    /// run stops after that many evaluations without improvement): more steps can then no longer
    /// make the student fit its teacher's mistakes past the point where it generalises best.
    @discardableResult
    public func train(_ examples: [TrainingExample], validation: [(ids: [Int32], label: Int)] = [], cancel: StopFlag? = nil,
                      progress: (TrainingProgress) -> Void = { _ in }) throws -> [Double] {
        guard !examples.isEmpty else { throw ModelError.invalidArgument("no training examples") }
        bestValidationLoss = nil
        try load(examples, cancel: cancel)
        let n = examples.count, bs = configuration.batchSize
        let stepsPerEpoch = (n + bs - 1) / bs, total = configuration.totalSteps(examples: n)
        let passes = (total + stepsPerEpoch - 1) / stepsPerEpoch
        let warmup = Int((Float(total) * configuration.warmupFraction).rounded(.up))
        let evaluating = configuration.evaluationsPerEpoch > 0 && !validation.isEmpty
        let evaluationInterval = max(1, stepsPerEpoch / max(1, configuration.evaluationsPerEpoch))
        var best: (loss: Double, parameters: [[Float]])?
        var sinceBest = 0
        var rng = SeededGenerator(seed: configuration.seed)
        var order = Array(0..<n)
        var epochLosses: [Double] = []
        var lossSum = 0.0, seen = 0
        let start = DispatchTime.now().uptimeNanoseconds
        training: for step in 1...total {
            // A shutdown stops training between two optimizer steps (within one step's time).
            if cancel?.isSet == true { throw ModelError.cancelled("training") }
            let s = (step - 1) % stepsPerEpoch, epoch = (step - 1) / stepsPerEpoch + 1
            if s == 0 { order.shuffle(using: &rng); lossSum = 0; seen = 0 }
            let batch = Array(order[(s * bs)..<min(n, (s + 1) * bs)])
            let loss = lossAndGradients(batch, dropout: configuration.dropout, stepSeed: configuration.seed &* 1_000_003 &+ UInt64(step - 1))
            lossSum += loss * Double(batch.count); seen += batch.count
            let lr: Float = step <= warmup && warmup > 0
                ? configuration.learningRate * Float(step) / Float(warmup)
                : configuration.learningRate * Float(max(0, total - step)) / Float(max(1, total - warmup))
            clipGradients()
            adamW(step: step, learningRate: lr)
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            progress(TrainingProgress(epoch: epoch, epochs: passes, step: step, steps: total,
                                      loss: lossSum / Double(seen), examplesPerSecond: Double(step * bs) / max(elapsed, 1e-9),
                                      elapsed: elapsed, remaining: elapsed / Double(step) * Double(total - step)))
            if s == stepsPerEpoch - 1 || step == total { epochLosses.append(lossSum / Double(seen)) }
            if evaluating && (step % evaluationInterval == 0 || step == total) {
                let validationLoss = self.validationLoss(validation)
                if best == nil || validationLoss < best!.loss {
                    best = (validationLoss, blocks.map { Array(UnsafeBufferPointer(start: $0.parameters.pointer, count: $0.parameters.count)) })
                    sinceBest = 0
                } else {
                    sinceBest += 1
                    if configuration.patience > 0 && sinceBest >= configuration.patience {
                        if s != stepsPerEpoch - 1 && step != total { epochLosses.append(lossSum / Double(seen)) }
                        break training
                    }
                }
            }
        }
        if let best {
            for (b, p) in zip(blocks, best.parameters) { p.withUnsafeBufferPointer { b.parameters.pointer.update(from: $0.baseAddress!, count: p.count) } }
            bestValidationLoss = best.loss
        }
        return epochLosses
    }

    /// The lowest validation loss seen by the last `train` (nil when it did not evaluate).
    public private(set) var bestValidationLoss: Double?

    /// Mean cross-entropy of the true labels of `validation` under the current parameters.
    func validationLoss(_ validation: [(ids: [Int32], label: Int)]) -> Double {
        let runner = EncoderRunner(weights: weights, threads: configuration.threads)
        let pooled = runner.pooled(validation.map(\.ids), batchSize: 32)
        var sum = 0.0
        for (v, p) in zip(validation, pooled) { sum -= log(Double(max(softmax(head.logits(p))[v.label], 1e-30))) }
        return sum / Double(validation.count)
    }

    /// Mean soft cross-entropy of `batch` (indices into the loaded examples); the gradient of that
    /// mean is left in `blocks[*].gradients[0]` (earlier contents are discarded).
    func lossAndGradients(_ batch: [Int], dropout: Float, stepSeed: UInt64) -> Double {
        let threads = min(configuration.threads, batch.count)
        let per = (batch.count + threads - 1) / threads
        for b in blocks { for g in b.gradients { g.zero() } }
        DispatchQueue.concurrentPerform(iterations: threads) { part in
            let lo = part * per, hi = min(batch.count, lo + per)
            let ws = workspaces[part]
            ws.loss = 0
            guard lo < hi else { return }
            var d = Dropout(rate: dropout, rng: SeededGenerator(seed: stepSeed &* 31 &+ UInt64(part)))
            ws.loss = chunk(Array(batch[lo..<hi]), total: batch.count, thread: part, workspace: ws, dropout: &d)
        }
        // Sum the per-thread gradients into thread 0's, in a fixed order (deterministic).
        for b in blocks where b.gradients.count > 1 {
            let g0 = b.gradients[0].pointer
            for t in 1..<threads { let gt = b.gradients[t].pointer; for i in 0..<b.parameters.count { g0[i] += gt[i] } }
        }
        return workspaces.prefix(threads).reduce(0) { $0 + $1.loss } / Double(batch.count)
    }

    /// Forward and backward of one thread's share; returns the summed loss of its examples.
    private func chunk(_ indices: [Int], total: Int, thread: Int, workspace ws: TrainingWorkspace, dropout: inout Dropout) -> Double {
        let c = config, h = c.hiddenSize, cls = classes
        let b = indices.count
        let onlyHead = configuration.trainable == .head
        let shape = BatchShape(lengths: indices.map { onlyHead ? 1 : examples[$0].ids.count }, heads: c.numHeads)
        let n = shape.n
        let gradientOf = { (block: Int) in self.blocks[block].gradients[thread] }
        let headBlock = blocks.count - 1
        let pooled = ws.pooled.pointer(b * h)
        let x = ws.input.pointer(n * h)
        // Forward: the trainable stack, from cached frozen outputs or from the embeddings.
        if onlyHead {
            for (r, i) in indices.enumerated() { cache[i].withUnsafeBufferPointer { (pooled + r * h).update(from: $0.baseAddress!, count: h) } }
        } else {
            if configuration.trainable == .all {
                let ids = indices.flatMap { examples[$0].ids }
                ws.embeddings.prepare(n: n, h: h)
                Transformer.embeddingsForward(c, embeddings, ids: ids, shape: shape, out: x, saved: ws.embeddings, dropout: &dropout, vector: .detected)
            } else {
                for (r, i) in indices.enumerated() {
                    cache[i].withUnsafeBufferPointer { (x + shape.offsets[r] * h).update(from: $0.baseAddress!, count: shape.lengths[r] * h) }
                }
            }
            var input = ConstFloatPointer(x)
            for (j, l) in trainedLayers.enumerated() {
                let a = ws.layers[j]
                a.prepare(c, shape, dropout: dropout.isActive)
                Transformer.layerForward(c, layers[l], x: input, out: a.out, a: a, shape: shape, dropout: &dropout, vector: .detected)
                input = ConstFloatPointer(a.out)
            }
            Transformer.meanPoolForward(pooled: pooled, x: input, shape: shape, h: h)
        }
        // Head: dropout on the pooled vector, logits, softmax cross-entropy against the targets.
        let mask = ws.poolMask.pointer(b * h)
        if dropout.isActive { dropout.fill(mask, count: b * h) } else { mask.update(repeating: 1, count: b * h) }
        let dropped = ws.dPooled.pointer(2 * b * h), dPooled = dropped + b * h
        for i in 0..<(b * h) { dropped[i] = pooled[i] * mask[i] }
        let logits = ws.logits.pointer(b * cls)
        head.logits(pooled: dropped, rows: b, into: logits)
        var loss = 0.0
        for (r, i) in indices.enumerated() {
            let z = Array(UnsafeBufferPointer(start: logits + r * cls, count: cls))
            let p = softmax(z)
            let y = examples[i].target, w = examples[i].weight
            for k in 0..<cls {
                if y[k] > 0 { loss -= Double(w) * Double(y[k]) * log(Double(max(p[k], 1e-30))) }
                logits[r * cls + k] = w * (p[k] - y[k]) / Float(total)        // dLoss/dlogits of the batch mean
            }
        }
        let hg = gradientOf(headBlock)
        Kernels.linearBackward(dx: dPooled, dw: hg.pointer, db: hg.pointer + cls * h, dy: logits, x: dropped,
                               w: head.parameters.pointer, n: b, inDim: h, outDim: cls)
        if onlyHead { return loss }
        for i in 0..<(b * h) { dPooled[i] *= mask[i] }
        // Backward through the trainable layers, top down.
        var dOut = ws.dOut.pointer(n * h), dX = ws.dX.pointer(n * h)
        Transformer.meanPoolBackward(dx: dOut, dPooled: dPooled, shape: shape, h: h)
        let layerBlockOffset = trainsEmbeddings ? 1 : 0
        for (j, l) in trainedLayers.enumerated().reversed() {
            let a = ws.layers[j]
            let input = j == 0 ? ConstFloatPointer(x) : ConstFloatPointer(ws.layers[j - 1].out!)
            let needInputGradient = j > 0 || trainsEmbeddings
            Transformer.layerBackward(c, layers[l], gradientOf(layerBlockOffset + j), x: input, a: a, dOut: dOut,
                                      dx: needInputGradient ? dX : nil, dropout: dropout.isActive, scratch: &ws.gradients)
            swap(&dOut, &dX)
        }
        if trainsEmbeddings {
            let ids = indices.flatMap { examples[$0].ids }
            Transformer.embeddingsBackward(c, embeddings, gradientOf(0), ids: ids, shape: shape, dOut: dOut,
                                           saved: ws.embeddings, dropout: dropout.isActive, scratch: &ws.embeddingScratch)
        }
        return loss
    }

    private func clipGradients() {
        guard configuration.maxGradientNorm > 0 else { return }
        var sq = 0.0
        for b in blocks { let g = b.gradients[0].pointer; for i in 0..<b.parameters.count { sq += Double(g[i]) * Double(g[i]) } }
        let norm = sq.squareRoot()
        guard norm > Double(configuration.maxGradientNorm) else { return }
        let scale = Float(Double(configuration.maxGradientNorm) / (norm + 1e-6))
        for b in blocks { let g = b.gradients[0].pointer; for i in 0..<b.parameters.count { g[i] *= scale } }
    }

    private func adamW(step: Int, learningRate lr: Float) {
        let beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
        let c1 = 1 - powf(beta1, Float(step)), c2 = 1 - powf(beta2, Float(step))
        let layerBlockOffset = trainsEmbeddings ? 1 : 0, topLayer = config.numLayers - 1
        for (index, b) in blocks.enumerated() {
            // Layer-wise decay: the lower a layer, the more general its features and the less it moves.
            let depthBelowTop = trainsEmbeddings && index == 0 ? config.numLayers : topLayer - (firstTrainable + index - layerBlockOffset)
            let lr = index == blocks.count - 1 ? lr * configuration.headLearningRateMultiplier
                : lr * powf(configuration.layerDecay, Float(depthBelowTop))
            let p = b.parameters.pointer, g = b.gradients[0].pointer, m = b.m.pointer, v = b.v.pointer
            for range in b.decayed where configuration.weightDecay > 0 {
                let f = 1 - lr * configuration.weightDecay
                for i in range { p[i] *= f }
            }
            for i in 0..<b.parameters.count {
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                p[i] -= lr * (m[i] / c1) / ((v[i] / c2).squareRoot() + eps)
            }
        }
    }
}
