import Foundation
import Testing
@testable import NewsdModel

/// Finite-difference checks of every backward pass on a tiny random encoder: embeddings, each
/// tensor of each layer (attention, output projection, both LayerNorms, feed-forward), mean
/// pooling and the head, with padding in the batch, with and without dropout.
@Suite struct GradientTests {
    static let tolerance: (absolute: Double, relative: Double) = (1e-4, 2e-2)

    func check(scope: TrainableScope, dropout: Float, seed: UInt64) throws {
        var cfg = TrainingConfiguration()
        cfg.trainable = scope; cfg.threads = 2; cfg.dropout = dropout; cfg.seed = seed
        let base = EncoderWeights(random: Fixtures.tinyConfig, seed: seed)
        // Sharper attention than the random init gives, so query/key gradients are far from zero.
        let L = LayerLayout(Fixtures.tinyConfig)
        for layer in base.layers { for i in L.wqkv..<(L.wqkv + 2 * 8 * 8) { layer.pointer[i] *= 6 } }
        let trainer = try Trainer(base: base, classes: 3, configuration: cfg)
        try trainer.load(Fixtures.randomExamples(count: 5, classes: 3, seed: seed))
        let batch = [0, 1, 2, 3, 4]
        _ = trainer.lossAndGradients(batch, dropout: dropout, stepSeed: 99)
        let analytic = trainer.blocks.map { $0.gradients[0].array }
        var rng = SeededGenerator(seed: seed)
        var checked = 0
        for (bi, block) in trainer.blocks.enumerated() {
            // Every tensor of the block: sample coordinates inside each named range.
            for (name, range) in tensorRanges(trainer: trainer, block: bi) {
                for _ in 0..<4 {
                    let i = range.lowerBound + Int(rng.next() % UInt64(range.count))
                    let p = block.parameters.pointer
                    let saved = p[i], eps: Float = 1e-2
                    p[i] = saved + eps
                    let plus = trainer.lossAndGradients(batch, dropout: dropout, stepSeed: 99)
                    p[i] = saved - eps
                    let minus = trainer.lossAndGradients(batch, dropout: dropout, stepSeed: 99)
                    p[i] = saved
                    let numeric = (plus - minus) / Double(2 * eps)
                    let a = Double(analytic[bi][i])
                    #expect(abs(a - numeric) <= Self.tolerance.absolute + Self.tolerance.relative * max(abs(a), abs(numeric)),
                            "\(scope) dropout \(dropout): \(name)[\(i - range.lowerBound)] analytic \(a) numeric \(numeric)")
                    checked += 1
                }
            }
        }
        #expect(checked >= 8)
    }

    /// Named ranges of a trainer's block (embeddings, layers, head).
    func tensorRanges(trainer: Trainer, block: Int) -> [(String, Range<Int>)] {
        let c = trainer.config
        let isHead = block == trainer.blocks.count - 1
        if isHead { return [("classifier.weight", 0..<(3 * c.hiddenSize)), ("classifier.bias", (3 * c.hiddenSize)..<(3 * c.hiddenSize + 3))] }
        if trainer.trainsEmbeddings && block == 0 {
            let e = EmbeddingLayout(c)
            // Only rows that the examples use have non-zero gradients; position rows 0..2 always do.
            return e.tensors().map { t in
                let count = t.name.contains("word") ? 40 * c.hiddenSize : (t.name.contains("position") ? 3 * c.hiddenSize : (t.name.contains("token_type") ? c.hiddenSize : t.shape.reduce(1, *)))
                return (t.name, t.offset..<(t.offset + count))
            }
        }
        let layer = trainer.trainedLayers.lowerBound + block - (trainer.trainsEmbeddings ? 1 : 0)
        return LayerLayout(c).tensors(layer: layer).map { ($0.name, $0.offset..<($0.offset + $0.shape.reduce(1, *))) }
    }

    @Test func wholeStackWithoutDropout() throws { try check(scope: .all, dropout: 0, seed: 1) }
    @Test func wholeStackWithDropout() throws { try check(scope: .all, dropout: 0.1, seed: 2) }
    @Test func topLayerOverCachedLowerLayers() throws { try check(scope: .top(1), dropout: 0, seed: 3) }
    @Test func headOnly() throws { try check(scope: .head, dropout: 0.1, seed: 4) }

    /// The cached frozen prefix gives the same gradients as running the whole stack.
    @Test func cachedPrefixMatchesFullStack() throws {
        var cfg = TrainingConfiguration(); cfg.dropout = 0; cfg.threads = 1
        let base = EncoderWeights(random: Fixtures.tinyConfig, seed: 5)
        let examples = Fixtures.randomExamples(count: 4, classes: 3, seed: 5)
        cfg.trainable = .all
        let full = try Trainer(base: base, classes: 3, configuration: cfg)
        try full.load(examples)
        let lossFull = full.lossAndGradients([0, 1, 2, 3], dropout: 0, stepSeed: 1)
        cfg.trainable = .top(1)
        let top = try Trainer(base: base, classes: 3, configuration: cfg)
        try top.load(examples)
        let lossTop = top.lossAndGradients([0, 1, 2, 3], dropout: 0, stepSeed: 1)
        #expect(abs(lossFull - lossTop) < 1e-5)
        let a = full.blocks[2].gradients[0].array, b = top.blocks[0].gradients[0].array   // layer 1 in both
        #expect(zip(a, b).map { abs($0 - $1) }.max()! < 1e-5)
    }
}
