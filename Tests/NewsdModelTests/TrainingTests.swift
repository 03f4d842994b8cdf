import Foundation
import Testing
@testable import NewsdModel

@Suite struct TrainingTests {
    /// A toy sentiment task: the label is set by which of "rose", "fell", "steady" a sentence holds,
    /// among random filler words. A tiny random encoder trained end to end must learn it.
    static func toyData(count: Int, seed: UInt64, tokenizer: WordPieceTokenizer) -> (examples: [TrainingExample], truth: [Int]) {
        var rng = SeededGenerator(seed: seed)
        let cue = ["fell", "steady", "rose"]      // negative, neutral, positive
        var examples: [TrainingExample] = [], truth: [Int] = []
        for _ in 0..<count {
            let label = Int(rng.next() % 3)
            var words = (0..<(2 + Int(rng.next() % 5))).map { _ in "w\(rng.next() % 20)" }
            words.insert(["profit", "sales", "loss"][Int(rng.next() % 3)], at: 0)
            words.insert(cue[label], at: Int(rng.next() % UInt64(words.count + 1)))
            var target: [Float] = [0, 0, 0]; target[label] = 1
            examples.append(TrainingExample(ids: tokenizer.encode(words.joined(separator: " ")), target: target))
            truth.append(label)
        }
        return (examples, truth)
    }

    @Test func tinyModelLearnsToyTask() throws {
        let tok = try WordPieceTokenizer(tokens: Fixtures.tinyTokens)
        let config = BertConfig(vocabSize: 40, hiddenSize: 16, numLayers: 2, numHeads: 2, intermediateSize: 32, maxPositions: 16)
        let train = Self.toyData(count: 300, seed: 1, tokenizer: tok), test = Self.toyData(count: 100, seed: 2, tokenizer: tok)
        var cfg = TrainingConfiguration()
        cfg.trainable = .all; cfg.epochs = 12; cfg.learningRate = 3e-3; cfg.batchSize = 16; cfg.dropout = 0.05
        cfg.labelSmoothing = 0   // the loss can then fall towards 0 (smoothing 0.3 puts its floor at 0.64)
        let trainer = try Trainer(base: EncoderWeights(random: config, seed: 3), classes: 3, configuration: cfg)
        let losses = try trainer.train(train.examples)
        #expect(losses.last! < losses.first! * 0.5, "losses \(losses)")
        let runner = EncoderRunner(weights: trainer.weights, threads: 2)
        let probs = runner.pooled(test.examples.map(\.ids), batchSize: 16).map { softmax(trainer.trainedHead.logits($0)) }
        let m = EvaluationMetrics(probabilities: probs, truth: test.truth, labels: ["negative", "neutral", "positive"])
        #expect(m.accuracy >= 0.95, "held-out accuracy \(m.accuracy), losses \(losses)")
    }

    func trainedWeights(seed: UInt64, threads: Int = 2) throws -> [Float] {
        let tok = try WordPieceTokenizer(tokens: Fixtures.tinyTokens)
        var cfg = TrainingConfiguration()
        cfg.trainable = .top(1); cfg.epochs = 2; cfg.seed = seed; cfg.threads = threads; cfg.learningRate = 1e-3
        let trainer = try Trainer(base: EncoderWeights(random: Fixtures.tinyConfig, seed: 9), classes: 3, configuration: cfg)
        try trainer.train(Self.toyData(count: 64, seed: 4, tokenizer: tok).examples)
        return trainer.weights.layers[1].array + trainer.trainedHead.parameters.array
    }

    @Test func sameSeedGivesSameWeights() throws {
        let a = try trainedWeights(seed: 11), b = try trainedWeights(seed: 11), c = try trainedWeights(seed: 12)
        #expect(a == b)
        #expect(a != c)
    }

    @Test func trainingLeavesTheServedWeightsUntouched() throws {
        let base = EncoderWeights(random: Fixtures.tinyConfig, seed: 9)
        let before = base.layers.map(\.array)
        var cfg = TrainingConfiguration(); cfg.trainable = .all; cfg.epochs = 1
        let trainer = try Trainer(base: base, classes: 3, configuration: cfg)
        try trainer.train(Fixtures.randomExamples(count: 20, classes: 3, seed: 1))
        #expect(base.layers.map(\.array) == before)
        #expect(trainer.weights.layers[0].array != before[0])
    }

    @Test func temperatureScalingReducesCalibrationError() {
        // Over-confident logits: right 70% of the time but ~99% sure.
        var rng = SeededGenerator(seed: 5)
        var logits: [[Float]] = [], truth: [Int] = []
        for _ in 0..<600 {
            let y = Int(rng.next() % 3)
            let guess = rng.nextUnit() < 0.7 ? y : (y + 1) % 3
            var z: [Float] = [0, 0, 0]; z[guess] = 6 + rng.nextGaussian()
            logits.append(z); truth.append(y)
        }
        let t = Calibration.fitTemperature(logits: logits, truth: truth)
        let before = Calibration.expectedCalibrationError(probabilities: logits.map { softmax($0) }, truth: truth)
        let after = Calibration.expectedCalibrationError(probabilities: logits.map { softmax($0, temperature: t) }, truth: truth)
        #expect(t > 2)
        #expect(after < before / 3, "ECE \(before) -> \(after) at T=\(t)")
    }

    @Test func invalidConfigurationNamesTheValue() {
        var cfg = TrainingConfiguration(); cfg.epochs = 0
        #expect(throws: ModelError.invalidArgument("epochs 0 must be > 0")) { try cfg.validate() }
        #expect(throws: ModelError.self) { try TrainableScope(parsing: "top:x") }
        #expect(throws: ModelError.self) {
            var c = TrainingConfiguration(); c.trainable = .top(7)
            _ = try Trainer(base: EncoderWeights(random: Fixtures.tinyConfig, seed: 1), classes: 3, configuration: c)
        }
    }
}
