import Foundation
import Testing
@testable import NewsdModel

/// The training recipe's parts: smoothing, balancing, weights, the step schedule, keeping the best
/// parameters, layer-wise decay and the label-noise pass.
@Suite struct RecipeTests {
    @Test func automaticDepthGrowsWithTheLabelCount() throws {
        #expect(TrainableScope.automatic(labels: 0) == .top(4))
        #expect(TrainableScope.automatic(labels: 4_999) == .top(4))
        #expect(TrainableScope.automatic(labels: 5_000) == .top(2))
        #expect(TrainableScope.automatic(labels: 1_000_000) == .top(2))
        #expect(try TrainableScope(parsing: "auto", labels: 500) == .top(4))
        #expect(TrainableScope.automatic(labels: 500, layers: 2) == .top(2))   // a smaller encoder: all of its layers
        #expect(try TrainableScope(parsing: "all", labels: 500) == .all)
        #expect(throws: ModelError.self) { try TrainableScope(parsing: "auto") }   // resolved only with a label count
        let rising = TrainableScope.automaticDepth.map(\.minimumLabels)
        #expect(rising == rising.sorted() && rising.first == 0)
    }

    /// A small set gets passes enough for the minimum steps (at most 20), a large one its epochs.
    @Test func minimumStepsGiveSmallSetsMorePasses() {
        // 250 steps of 16 are 4,000 examples: 10 passes over 434.
        #expect(TrainingConfiguration.epochs(4, minSteps: 250, examples: 434, batchSize: 16) == 10)
        #expect(TrainingConfiguration.epochs(4, minSteps: 250, examples: 1_300, batchSize: 16) == 4)
        #expect(TrainingConfiguration.epochs(4, minSteps: 250, examples: 20, batchSize: 16) == 20)
        #expect(TrainingConfiguration.epochs(30, minSteps: 250, examples: 20, batchSize: 16) == 30)
        #expect(TrainingConfiguration.epochs(4, minSteps: 0, examples: 100, batchSize: 16) == 4)
        #expect(TrainingConfiguration.epochs(4, minSteps: 250, examples: 0, batchSize: 16) == 20)
    }

    @Test func labelSmoothingAndClassBalanceShapeTargetsAndWeights() {
        // 6 neutral, 2 negative, 2 positive (one of them soft).
        var examples = (0..<6).map { _ in TrainingExample(ids: [2, 5, 3], target: [0, 1, 0]) }
        examples += (0..<2).map { _ in TrainingExample(ids: [2, 6, 3], target: [1, 0, 0]) }
        examples.append(TrainingExample(ids: [2, 7, 3], target: [0, 0, 1]))
        examples.append(TrainingExample(ids: [2, 7, 3], target: [0, 0.5, 0.5]))
        let smoothed = Trainer.prepared(examples, classes: 3, labelSmoothing: 0.3, classBalance: 0)
        #expect(smoothed[0].target == [0.1, 0.8, 0.1])
        #expect(smoothed.allSatisfy { $0.weight == 1 })
        let balanced = Trainer.prepared(examples, classes: 3, labelSmoothing: 0, classBalance: 1)
        let mean = balanced.reduce(0) { $0 + $1.weight } / Float(balanced.count)
        #expect(abs(mean - 1) < 1e-5, "mean weight \(mean)")
        #expect(balanced[6].weight > 2 * balanced[0].weight, "a minority example must weigh more: \(balanced.map(\.weight))")
        #expect(balanced[9].weight > balanced[0].weight && balanced[9].weight < balanced[8].weight)
        #expect(balanced[0].target == [0, 1, 0])
    }

    @Test func zeroWeightExamplesGiveNoGradient() throws {
        var cfg = TrainingConfiguration(); cfg.trainable = .top(1); cfg.dropout = 0
        let trainer = try Trainer(base: EncoderWeights(random: Fixtures.tinyConfig, seed: 9), classes: 3, configuration: cfg)
        let examples = Fixtures.randomExamples(count: 8, classes: 3, seed: 2).map { TrainingExample(ids: $0.ids, target: $0.target, weight: 0) }
        try trainer.load(examples)
        let loss = trainer.lossAndGradients(Array(0..<8), dropout: 0, stepSeed: 1)
        #expect(loss == 0)
        #expect(trainer.blocks.allSatisfy { $0.gradients[0].array.allSatisfy { $0 == 0 } })
    }

    @Test func stepScheduleRunsExactlyTheStepsAskedFor() throws {
        var cfg = TrainingConfiguration(); cfg.trainable = .top(1); cfg.steps = 7; cfg.batchSize = 4
        let trainer = try Trainer(base: EncoderWeights(random: Fixtures.tinyConfig, seed: 9), classes: 3, configuration: cfg)
        var seen: [Int] = []
        let losses = try trainer.train(Fixtures.randomExamples(count: 10, classes: 3, seed: 3)) { seen.append($0.step) }
        #expect(seen == Array(1...7))
        #expect(losses.count == 3, "three passes over 10 examples in batches of 4 (3 steps each): \(losses)")
    }

    @Test func evaluationKeepsTheParametersWithTheLowestValidationLoss() throws {
        let tok = try WordPieceTokenizer(tokens: Fixtures.tinyTokens)
        var cfg = TrainingConfiguration()
        cfg.trainable = .all; cfg.epochs = 6; cfg.learningRate = 3e-2; cfg.batchSize = 8; cfg.evaluationsPerEpoch = 2
        let train = TrainingTests.toyData(count: 64, seed: 1, tokenizer: tok)
        // Validation labels are the opposite of the cue: training makes them worse, so the best
        // parameters are early ones, and the trainer must restore them.
        let held = TrainingTests.toyData(count: 32, seed: 2, tokenizer: tok)
        let validation = zip(held.examples, held.truth).map { (ids: $0.ids, label: 2 - $1) }
        let trainer = try Trainer(base: EncoderWeights(random: Fixtures.tinyConfig, seed: 9), classes: 3, configuration: cfg)
        try trainer.train(train.examples, validation: validation)
        let best = try #require(trainer.bestValidationLoss)
        #expect(abs(trainer.validationLoss(validation) - best) < 1e-9)
    }

    @Test func layerDecayMovesLowerLayersLess() throws {
        func change(decay: Float) throws -> (bottom: Float, top: Float) {
            var cfg = TrainingConfiguration(); cfg.trainable = .all; cfg.epochs = 1; cfg.layerDecay = decay; cfg.dropout = 0
            let base = EncoderWeights(random: Fixtures.tinyConfig, seed: 9)
            let trainer = try Trainer(base: base, classes: 3, configuration: cfg)
            try trainer.train(Fixtures.randomExamples(count: 32, classes: 3, seed: 5))
            func distance(_ l: Int) -> Float { zip(trainer.weights.layers[l].array, base.layers[l].array).reduce(0) { $0 + abs($1.0 - $1.1) } }
            return (distance(0), distance(1))
        }
        let flat = try change(decay: 1), decayed = try change(decay: 0.1)
        #expect(decayed.bottom < flat.bottom * 0.3, "layer 0 moved \(decayed.bottom) with decay 0.1, \(flat.bottom) without")
        #expect(abs(decayed.top - flat.top) < flat.top * 0.5, "the top layer learns at the full rate in both: \(decayed.top) vs \(flat.top)")
    }

    @Test func labelNoisePassFindsFlippedLabels() throws {
        let tok = try WordPieceTokenizer(tokens: Fixtures.tinyTokens)
        var data = TrainingTests.toyData(count: 300, seed: 1, tokenizer: tok)
        // Flip every 10th label: those 30 are the teacher's mistakes.
        let flipped = Set(stride(from: 0, to: 300, by: 10))
        for i in flipped { let y = (data.truth[i] + 1) % 3; var t: [Float] = [0, 0, 0]; t[y] = 1; data.examples[i].target = t }
        var cfg = TrainingConfiguration()
        cfg.trainable = .all; cfg.epochs = 12; cfg.learningRate = 3e-3; cfg.batchSize = 16; cfg.dropout = 0.05
        let config = BertConfig(vocabSize: 40, hiddenSize: 16, numLayers: 2, numHeads: 2, intermediateSize: 32, maxPositions: 16)
        let report = try LabelNoise.find(base: EncoderWeights(random: config, seed: 3), classes: 3, examples: data.examples,
                                         configuration: cfg, folds: 2, threshold: 0.2)
        let suspects = Set(report.suspects)
        let caught = suspects.intersection(flipped).count
        #expect(caught >= 24, "caught \(caught) of 30 flipped labels")
        // A tenth of the labels are wrong: suspects picked at random would be 10 % wrong labels.
        #expect(Double(caught) >= 0.6 * Double(suspects.count), "\(suspects.count - caught) right labels suspected, \(caught) wrong ones")
        let weighted = LabelNoise.downWeighted(data.examples, suspects: report.suspects, weight: 0.25)
        #expect(weighted.enumerated().allSatisfy { suspects.contains($0.offset) ? $0.element.weight == 0.25 : $0.element.weight == 1 })
    }

    @Test func configurationsOfOlderArtifactsDecodeAsTheyWereTrained() throws {
        let old = #"{"epochs":3,"learningRate":0.0002,"batchSize":16,"seed":1,"threads":2,"trainable":"top:2","warmupFraction":0.1,"weightDecay":0.01,"dropout":0.1,"headLearningRateMultiplier":10,"maxGradientNorm":1,"validationFraction":0.1}"#
        let decoded = try JSONDecoder().decode(TrainingConfiguration.self, from: Data(old.utf8))
        var expected = TrainingConfiguration.legacy; expected.epochs = 3; expected.learningRate = 2e-4; expected.seed = 1
        #expect(decoded == expected, "a manifest without the newer keys was trained without them, whatever today's defaults")
        let roundTrip = try JSONDecoder().decode(TrainingConfiguration.self, from: JSONEncoder().encode(decoded))
        #expect(roundTrip == decoded)
        // Re-encoded, an old configuration has exactly its old keys: the manifest checksum of an
        // artifact written before the new settings existed still matches.
        let keys = { (data: Data) in Set((try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]).keys) }
        #expect(try keys(JSONEncoder().encode(decoded)) == keys(Data(old.utf8)))
        var tuned = decoded; tuned.labelSmoothing = 0.1; tuned.noiseFolds = 2
        #expect(try JSONDecoder().decode(TrainingConfiguration.self, from: JSONEncoder().encode(tuned)) == tuned)
    }
}
