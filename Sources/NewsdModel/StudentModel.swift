import Foundation
import NewsdSystem

/// One classification with its uncertainty.
public struct Prediction: Sendable, Codable, Equatable {
    /// The winning label.
    public var label: String
    /// Index of `label` in the model's label list.
    public var labelIndex: Int
    /// Calibrated class probabilities, in the model's label order.
    public var probabilities: [Float]
    /// Top-1 minus top-2 probability (0 = undecided, 1 = certain).
    public var margin: Float
    /// Entropy of `probabilities` in nats.
    public var entropy: Float

    /// Derives label, margin and entropy from probabilities.
    public init(probabilities: [Float], labels: [String]) {
        let order = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] }
        labelIndex = order.first ?? 0
        label = labels.isEmpty ? "" : labels[labelIndex]
        self.probabilities = probabilities
        margin = order.count > 1 ? probabilities[order[0]] - probabilities[order[1]] : 1
        entropy = -probabilities.reduce(0) { $0 + ($1 > 0 ? $1 * logf($1) : 0) }
    }

    /// The probabilities as a JSON object keyed by label (`{"negative":0.1,...}`; a non-finite
    /// value is `null`), as stored in `predictions.probabilities`.
    public func probabilitiesJSON(labels: [String]) -> String {
        var object: [String: Float?] = [:]
        for (label, p) in zip(labels, probabilities) { object[label] = p.isFinite ? p : nil }
        return (try? JSONText.encode(object)) ?? "{}"
    }
}

/// The linear classification head: logits[C] = W[C, H] pooled[H] + b[C].
public struct ClassifierHead: Sendable {
    /// Number of classes C.
    public let classes: Int
    /// Input width H.
    public let hidden: Int
    /// W (C*H floats) then b (C floats).
    let parameters: FloatBuffer

    /// A head with weights drawn from N(0, 0.02) and zero bias (deterministic for `seed`).
    public init(classes: Int, hidden: Int, seed: UInt64) {
        self.classes = classes
        self.hidden = hidden
        parameters = FloatBuffer(count: classes * hidden + classes)
        var rng = SeededGenerator(seed: seed ^ 0x4845_4144)
        for i in 0..<(classes * hidden) { parameters.pointer[i] = 0.02 * rng.nextGaussian() }
    }

    init(classes: Int, hidden: Int, parameters: FloatBuffer) {
        self.classes = classes
        self.hidden = hidden
        self.parameters = parameters
    }

    /// logits[B, C] for pooled[B, H].
    func logits(pooled: ConstFloatPointer, rows: Int, into out: FloatPointer) {
        Kernels.linearForward(y: out, x: pooled, w: parameters.pointer, b: parameters.pointer + classes * hidden,
                              n: rows, inDim: hidden, outDim: classes)
    }

    /// Logits of one pooled vector.
    public func logits(_ pooled: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: classes)
        pooled.withUnsafeBufferPointer { p in out.withUnsafeMutableBufferPointer { logits(pooled: p.baseAddress!, rows: 1, into: $0.baseAddress!) } }
        return out
    }

    var namedTensors: [String: NamedTensor] { namedTensors(prefix: "classifier") }

    /// `<prefix>.weight` and `<prefix>.bias`.
    func namedTensors(prefix: String) -> [String: NamedTensor] {
        let n = classes * hidden
        return [prefix + ".weight": NamedTensor(shape: [classes, hidden], values: Array(UnsafeBufferPointer(start: parameters.pointer, count: n))),
                prefix + ".bias": NamedTensor(shape: [classes], values: Array(UnsafeBufferPointer(start: parameters.pointer + n, count: classes)))]
    }
}

/// Softmax of `logits / temperature`.
public func softmax(_ logits: [Float], temperature: Float = 1) -> [Float] {
    let t = max(temperature, 1e-3)
    let m = logits.max() ?? 0
    let e = logits.map { expf(($0 - m) / t) }
    let s = e.reduce(0, +)
    return e.map { $0 / s }
}

/// A servable student: tokenizer, encoder, head, labels and calibration temperature. Thread-safe
/// for concurrent `predict` calls (they are serialised on the encoder's workspaces).
public final class StudentModel: Sendable {
    /// Class names, in logit order.
    public let labels: [String]
    /// The tokenizer the model was trained with.
    public let tokenizer: WordPieceTokenizer
    /// The encoder and its worker threads.
    public let runner: EncoderRunner
    /// The classification head.
    public let head: ClassifierHead
    /// Softmax temperature fitted on validation data (1 = uncalibrated).
    public let temperature: Float
    /// The artifact this model came from, if any (nil for a bare base checkpoint).
    public let manifest: ArtifactManifest?
    /// The base checkpoint's weight checksum.
    public let baseChecksum: String
    /// Outputs for texts this model has seen (`predict` answers exact repeats from it).
    public let cache: PredictionCache
    /// Intermediate classifiers and their threshold (nil: every sentence runs every layer).
    public let earlyExit: EarlyExit?
    /// Sentences encoded and the encoder layers they ran (their ratio is the mean depth).
    public let usage = EncoderUsage()

    /// Assembles a model from parts.
    /// `precision` is fp32 unless given (serving hosts pass their configured `model.precision`).
    /// `earlyExit` is used by `predict` when given. `keepingFloatWeights: false` makes an int8
    /// model serving-only: it drops the float weights (it cannot train, be saved or change
    /// precision, and holds a quarter of the memory).
    public init(labels: [String], tokenizer: WordPieceTokenizer, weights: EncoderWeights, head: ClassifierHead,
                temperature: Float, threads: Int, manifest: ArtifactManifest?, baseChecksum: String, precision: EncoderPrecision = .fp32,
                cacheCapacity: Int = 0, earlyExit: EarlyExit? = nil, keepingFloatWeights: Bool = true) {
        self.labels = labels
        self.earlyExit = earlyExit
        self.cache = PredictionCache(capacity: cacheCapacity)
        self.tokenizer = tokenizer
        self.runner = EncoderRunner(weights: weights, threads: threads, precision: precision, keepingFloatWeights: keepingFloatWeights)
        self.head = head
        self.temperature = temperature
        self.manifest = manifest
        self.baseChecksum = baseChecksum
    }

    /// A base checkpoint with an untrained (random, seeded) head: for benchmarks and cold start.
    public convenience init(base: Checkpoint, labels: [String] = ["negative", "neutral", "positive"], threads: Int, seed: UInt64 = 0,
                            precision: EncoderPrecision = .fp32, cacheCapacity: Int = 0, keepingFloatWeights: Bool = true) {
        self.init(labels: labels, tokenizer: base.tokenizer, weights: base.weights,
                  head: ClassifierHead(classes: labels.count, hidden: base.config.hiddenSize, seed: seed),
                  temperature: 1, threads: threads, manifest: nil, baseChecksum: base.weightsChecksum, precision: precision,
                  cacheCapacity: cacheCapacity, keepingFloatWeights: keepingFloatWeights)
    }

    /// The same model computing with another precision (the weights are shared; int8 quantises),
    /// with an empty cache of `cacheCapacity` entries, and without early exit unless `earlyExit`.
    /// `servingOnly`: an int8 copy drops its reference to the float weights (as serving hosts load).
    public func with(precision: EncoderPrecision, cacheCapacity: Int = 0, earlyExit: Bool = true, servingOnly: Bool = false) -> StudentModel {
        with(precision: precision, cacheCapacity: cacheCapacity, earlyExit: earlyExit ? self.earlyExit : nil, servingOnly: servingOnly)
    }

    /// The same model with other early-exit classifiers or threshold (nil: every layer runs).
    /// Needs the float weights: a serving-only model cannot re-quantise (a programming error).
    public func with(precision: EncoderPrecision, cacheCapacity: Int = 0, earlyExit: EarlyExit?, servingOnly: Bool = false) -> StudentModel {
        guard let weights = runner.floatWeights else { preconditionFailure("with(precision:) on a serving-only model (float weights dropped)") }
        return StudentModel(labels: labels, tokenizer: tokenizer, weights: weights, head: head, temperature: temperature,
                     threads: runner.threads, manifest: manifest, baseChecksum: baseChecksum, precision: precision, cacheCapacity: cacheCapacity,
                     earlyExit: earlyExit, keepingFloatWeights: !servingOnly)
    }

    /// For logs: `after layers [3, 4, 5] at 0.94`, or `off`.
    public var earlyExitSummary: String {
        earlyExit.map { "after layers \($0.exits.map(\.afterLayers)) at \($0.threshold)" } ?? "off"
    }

    /// Version string: the artifact's checksum prefix, or "base" for a bare checkpoint.
    public var version: String { manifest.map { String($0.checksum.prefix(12)) } ?? "base" }

    /// Token ids of every text.
    public func encode(_ texts: [String]) -> [[Int32]] { texts.map(tokenizer.encode) }

    /// Raw (uncalibrated) logits for token sequences.
    public func logits(ids: [[Int32]], batchSize: Int = 32) -> [[Float]] {
        runner.pooled(ids, batchSize: batchSize).map(head.logits)
    }

    /// Calibrated predictions for texts, in input order. Texts in the cache, and repeats inside
    /// `texts`, are not encoded again (the encoder's result for a text does not depend on the
    /// other texts of its batch, so a cached prediction is the one it would compute).
    /// `cached: false` bypasses the cache (rescoring old items must not evict the recent ones).
    public func predict(_ texts: [String], batchSize: Int = 32, cached: Bool = true) -> [Prediction] {
        guard cached, cache.capacity > 0 else { return compute(texts, batchSize: batchSize) }
        var result = cache.lookup(texts)
        var firstIndex: [String: Int] = [:]
        var missing: [String] = []
        for (i, t) in texts.enumerated() where result[i] == nil && firstIndex[t] == nil {
            firstIndex[t] = missing.count
            missing.append(t)
        }
        let computed = compute(missing, batchSize: batchSize)
        cache.store(missing, computed)
        for (i, t) in texts.enumerated() where result[i] == nil { result[i] = computed[firstIndex[t]!] }
        return result.map { $0! }
    }

    /// Calibrated predictions with early exit when the model has it, and the layers each ran.
    public func classify(ids: [[Int32]], batchSize: Int = 32) -> [(prediction: Prediction, layers: Int)] {
        let layers = runner.config.numLayers
        let outputs = runner.classify(ids, batchSize: batchSize, head: head, exits: earlyExit)
        usage.record(sentences: outputs.count, layers: outputs.reduce(0) { $0 + $1.layers })
        return outputs.map { o in
            // An exit head's logits are calibrated already (it learned the calibrated outputs).
            (Prediction(probabilities: softmax(o.logits, temperature: o.layers < layers ? 1 : temperature), labels: labels), o.layers)
        }
    }

    private func compute(_ texts: [String], batchSize: Int) -> [Prediction] {
        guard !texts.isEmpty else { return [] }
        return classify(ids: encode(texts), batchSize: batchSize).map(\.prediction)
    }
}

/// Running totals of a model's encoder work. Thread-safe.
public final class EncoderUsage: Sendable {
    private let totals = LockedValue((sentences: 0, layers: 0))

    /// Creates empty totals.
    public init() {}

    /// Adds `sentences` encoded with `layers` layers in all.
    public func record(sentences: Int, layers: Int) { totals.withLock { $0.sentences += sentences; $0.layers += layers } }

    /// Sentences encoded and layers run so far.
    public var counts: (sentences: Int, layers: Int) { totals.withLock { $0 } }
}
