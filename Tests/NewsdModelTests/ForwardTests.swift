import Foundation
import Testing
@testable import NewsdModel

@Suite struct ForwardTests {
    /// Mean-pooled MiniLM-L6 outputs equal those of the independent numpy reference within 1e-4.
    @Test(.serialized, arguments: [1, 2])
    func pooledOutputMatchesReference(threads: Int) throws {
        let base = try Fixtures.base.get()
        let golden = try Fixtures.json("forward_golden.json")
        let cases = golden["cases"] as! [[String: Any]]
        let ids = cases.map { ($0["ids"] as! [NSNumber]).map { Int32($0.intValue) } }
        let expected = cases.map { ($0["pooled"] as! [NSNumber]).map(\.floatValue) }
        for (text, want) in zip(cases.map { $0["text"] as! String }, ids) { #expect(base.tokenizer.encode(text) == want) }
        // Batched (all at once) and one by one, with each build of the vector kernels this CPU
        // runs (the portable one always): all must match.
        let kernels = VectorKernels.avx2Available ? [true, false] : [false]
        for (avx2, batchSize) in kernels.flatMap({ k in [1, 8].map { (k, $0) } }) {
            let runner = EncoderRunner(weights: base.weights, threads: threads, vector: VectorKernels(avx2: avx2))
            let got = runner.pooled(ids, batchSize: batchSize)
            for (g, e) in zip(got, expected) {
                let diff = zip(g, e).map { abs($0 - $1) }.max()!
                #expect(diff < 1e-4, "max abs difference \(diff) at batch \(batchSize), avx2 \(avx2)")
            }
        }
    }

    @Test func predictionCarriesProbabilitiesMarginAndEntropy() {
        let p = Prediction(probabilities: [0.1, 0.7, 0.2], labels: ["negative", "neutral", "positive"])
        #expect(p.label == "neutral")
        #expect(abs(p.margin - 0.5) < 1e-6)
        #expect(abs(p.entropy - 0.8018) < 1e-3)
    }

    @Test func shapeMismatchIsRefusedWithTheTensorName() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var tensors = EncoderWeights(random: Fixtures.tinyConfig, seed: 1).namedTensors(embeddings: true, layers: 0..<2)
        tensors["encoder.layer.1.intermediate.dense.weight"]!.shape = [6, 16]
        try SafeTensors.encode(tensors).write(to: dir.appendingPathComponent("model.safetensors"))
        do {
            _ = try EncoderWeights(config: Fixtures.tinyConfig, safetensors: dir.appendingPathComponent("model.safetensors"))
            Issue.record("loaded a wrong shape")
        } catch let e as ModelError {
            #expect("\(e)".contains("encoder.layer.1.intermediate.dense.weight"))
        }
    }
}
