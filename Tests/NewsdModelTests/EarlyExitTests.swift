import Foundation
import Testing
@testable import NewsdModel
import NewsdSystem

@Suite struct EarlyExitTests {
    static let labels = ["negative", "neutral", "positive"]

    /// Sentences of many lengths (so that removing the ones that exit moves rows around).
    static func sentences(_ base: Checkpoint) -> [[Int32]] {
        let words = ["profit", "rose", "sharply", "in", "the", "third", "quarter", "while", "sales", "fell", "and", "costs", "were", "flat"]
        var rng = SeededGenerator(seed: 5)
        return (0..<40).map { _ in
            base.tokenizer.encode((0..<(1 + Int(rng.next() % 24))).map { _ in words[Int(rng.next() % UInt64(words.count))] }.joined(separator: " "))
        }
    }

    /// Random exit heads after layers 3, 4 and 5 of MiniLM, with a threshold that lets about half
    /// of the sentences stop at the first one.
    static func exits(_ runner: EncoderRunner, _ ids: [[Int32]]) -> EarlyExit {
        let layers = EarlyExit.exitLayers(encoderLayers: runner.config.numLayers)
        let heads = layers.map { l in EarlyExit.Exit(afterLayers: l, head: ClassifierHead(classes: 3, hidden: runner.config.hiddenSize, seed: UInt64(l))) }
        let first = runner.pooled(ids, atLayers: [layers[0]], batchSize: 8)[0].map { softmax(heads[0].head.logits($0)).max()! }.sorted()
        return EarlyExit(exits: heads, threshold: first[first.count / 2])
    }

    /// Every precision this CPU runs: fp32 and int8 on each runnable kernel path.
    static var precisions: [EncoderPrecision] { [.fp32] + Int8KernelPath.runnable.map { .int8($0) } }

    @Test func exitLayersAreTheUpperHalfButTheLast() {
        #expect(EarlyExit.exitLayers(encoderLayers: 6) == [3, 4, 5])
        #expect(EarlyExit.exitLayers(encoderLayers: 2) == [1])
        #expect(EarlyExit.exitLayers(encoderLayers: 1) == [])
    }

    /// `pooled(atLayers:)` gives, in one pass, the mean of the hidden states after each layer count.
    @Test func pooledAtLayersMatchesHiddenStates() throws {
        let base = try Fixtures.base.get()
        let ids = Array(Self.sentences(base).prefix(12))
        let runner = EncoderRunner(weights: base.weights, threads: 2)
        let pooled = runner.pooled(ids, atLayers: [2, 6], batchSize: 8)
        for (k, l) in [2, 6].enumerated() {
            let hidden = runner.hiddenStates(ids, layers: l, batchSize: 8)
            for (i, seq) in ids.enumerated() {
                let h = base.config.hiddenSize, len = max(1, seq.count)
                let mean = (0..<h).map { d in (0..<len).reduce(Float(0)) { $0 + hidden[i][$1 * h + d] } / Float(len) }
                #expect(zip(mean, pooled[k][i]).allSatisfy { abs($0 - $1) < 1e-4 }, "layer \(l), sentence \(i)")
            }
        }
        #expect(zip(pooled[1], runner.pooled(ids, batchSize: 8)).allSatisfy { a, b in zip(a, b).allSatisfy { abs($0 - $1) < 1e-5 } })
    }

    /// With early exit, a sentence that stops gets its exit head's logits on its pooled state at
    /// that layer, the others the final head's on the full encoder; and each sentence's result is
    /// the one it gets alone (dropping finished sentences from a batch changes nothing for the
    /// rest), on every precision this CPU runs.
    @Test func exitsGiveTheLayerOutputsAndDoNotDependOnTheBatch() throws {
        let base = try Fixtures.base.get()
        let ids = Self.sentences(base)
        let head = ClassifierHead(classes: 3, hidden: base.config.hiddenSize, seed: 1)
        for precision in Self.precisions {
            let runner = EncoderRunner(weights: base.weights, threads: 2, precision: precision)
            let exits = Self.exits(runner, ids)
            let batched = runner.classify(ids, batchSize: 16, head: head, exits: exits)
            let layers = runner.config.numLayers
            #expect(batched.contains { $0.layers < layers } && batched.contains { $0.layers == layers }, "\(precision): \(batched.map(\.layers))")
            let pooled = runner.pooled(ids, atLayers: exits.exits.map(\.afterLayers) + [layers], batchSize: 16)
            let tolerance: Float = precision == .fp32 ? 1e-4 : 1e-5
            for (i, out) in batched.enumerated() {
                let k = exits.exits.firstIndex { $0.afterLayers == out.layers }
                let expected = k.map { exits.exits[$0].head.logits(pooled[$0][i]) } ?? head.logits(pooled[exits.exits.count][i])
                #expect(zip(out.logits, expected).allSatisfy { abs($0 - $1) < tolerance }, "\(precision) sentence \(i): \(out) vs \(expected)")
                // Layers before the one it stopped at were not sure enough.
                for (j, e) in exits.exits.enumerated().prefix(k ?? exits.exits.count) {
                    #expect(softmax(e.head.logits(pooled[j][i])).max()! < exits.threshold + 1e-4)
                }
                let alone = runner.classify([ids[i]], batchSize: 1, head: head, exits: exits)[0]
                #expect(alone.layers == out.layers, "\(precision) sentence \(i): \(alone.layers) alone, \(out.layers) in a batch")
                #expect(zip(alone.logits, out.logits).allSatisfy { abs($0 - $1) < tolerance })
            }
            // Without exits every sentence runs every layer.
            #expect(runner.classify(ids, batchSize: 16, head: head, exits: nil).allSatisfy { $0.layers == layers })
        }
    }

    /// A head distilled by `fit` reproduces a linear teacher's decisions.
    @Test func fitLearnsSoftTargets() {
        var rng = SeededGenerator(seed: 3)
        let hidden = 16
        let teacher = ClassifierHead(classes: 3, hidden: hidden, seed: 9)
        let features = (0..<400).map { _ in (0..<hidden).map { _ in rng.nextGaussian() } }
        let targets = features.map { softmax(teacher.logits($0).map { $0 * 40 }) }
        let head = EarlyExit.fit(features: features, targets: targets, classes: 3, hidden: hidden)
        let same = zip(features, targets).filter { f, t in
            let p = softmax(head.logits(f))
            return p.indices.max { p[$0] < p[$1] } == t.indices.max { t[$0] < t[$1] }
        }.count
        #expect(same >= 380, "\(same) of 400")
    }

    /// The threshold is the lowest that keeps macro-F1 within the tolerance at it and above.
    @Test func thresholdStopsWhereMacroF1WouldDrop() {
        var truth: [Int] = [], final: [[Float]] = [], exit: [[Float]] = []
        for i in 0..<120 {
            let t = i % 3
            truth.append(t)
            var f: [Float] = [0.05, 0.05, 0.05]; f[t] = 0.9; final.append(f)
            if i < 60 {
                var e: [Float] = [0.01, 0.01, 0.01]; e[t] = 0.98; exit.append(e)   // sure and right
            } else {
                var e: [Float] = [0.2, 0.2, 0.2]; e[(t + 1) % 3] = 0.6; exit.append(e) // fairly sure and wrong
            }
        }
        let o = EarlyExit.chooseThreshold(exitLayers: [3], exitProbabilities: [exit], final: final, encoderLayers: 6,
                                          truth: truth, labels: Self.labels)
        #expect(o.threshold > 0.6 && o.threshold <= 0.98, "\(o)")
        #expect(o.macroF1 == 1 && o.agreement == 1)
        #expect(abs(o.meanLayers - 4.5) < 1e-9)
        // Exits that are wrong even when sure are never used.
        var wrong = exit
        for i in 0..<60 {
            var e: [Float] = [0.005, 0.005, 0.005]
            e[(truth[i] + 1) % 3] = 0.99
            wrong[i] = e
        }
        let never = EarlyExit.chooseThreshold(exitLayers: [3], exitProbabilities: [wrong], final: final, encoderLayers: 6,
                                              truth: truth, labels: Self.labels)
        #expect(never.threshold > 0.99 && never.meanLayers == 6, "\(never)")
    }
}
