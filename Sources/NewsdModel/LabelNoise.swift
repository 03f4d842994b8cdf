import Foundation
import NewsdSystem

/// Finding the teacher labels that are probably wrong, confident-learning style: students that
/// never saw an example predict it ("cross-fitted": the examples are dealt into folds, and each
/// fold is predicted by a student trained on the others); an example whose teacher label such a
/// student gives a low probability is a suspect, and its weight in the final training is lowered.
///
/// Why cross-fitted: a student trained on an example has learned its label, wrong or not; only a
/// student that has not seen it disagrees honestly. The teacher is wrong on ~6 % of sentences,
/// most often calling mildly positive news neutral, and a student that fits those labels learns
/// the teacher's blind spot.
public enum LabelNoise {
    /// What the noise pass found.
    public struct Report: Sendable {
        /// Indices (into the training examples) of the suspects.
        public var suspects: [Int]
        /// Out-of-fold class probabilities of every example.
        public var outOfFold: [[Float]]
        /// Seconds spent on the cross-fitted students.
        public var seconds: Double
    }

    /// Whether an example is a suspect: its teacher label (the target's top class) gets less than
    /// `threshold` from the out-of-fold student.
    public static func isSuspect(target: [Float], outOfFold p: [Float], threshold: Float) -> Bool {
        guard let teacher = target.indices.max(by: { target[$0] < target[$1] }) else { return false }
        return p[teacher] < threshold
    }

    /// Cross-fits `folds` students on `examples` (each on the other folds, with `configuration`
    /// minus early stopping) and returns the out-of-fold probabilities and the suspects under
    /// `threshold`.
    public static func find(base: EncoderWeights, classes: Int, examples: [TrainingExample], configuration: TrainingConfiguration,
                            folds: Int, threshold: Float, cancel: StopFlag? = nil) throws -> Report {
        let start = Date()
        var outOfFold = [[Float]](repeating: [], count: examples.count)
        var cfg = configuration
        cfg.evaluationsPerEpoch = 0; cfg.patience = 0
        for fold in 0..<folds {
            let held = examples.indices.filter { $0 % folds == fold }, kept = examples.indices.filter { $0 % folds != fold }
            guard !held.isEmpty, !kept.isEmpty else { continue }
            let trainer = try Trainer(base: base, classes: classes, configuration: cfg)
            try trainer.train(kept.map { examples[$0] }, cancel: cancel)
            let runner = EncoderRunner(weights: trainer.weights, threads: cfg.threads)
            let pooled = runner.pooled(held.map { examples[$0].ids }, batchSize: 32)
            for (i, p) in zip(held, pooled) { outOfFold[i] = softmax(trainer.trainedHead.logits(p)) }
        }
        let suspects = examples.indices.filter { !outOfFold[$0].isEmpty && isSuspect(target: examples[$0].target, outOfFold: outOfFold[$0], threshold: threshold) }
        return Report(suspects: suspects, outOfFold: outOfFold, seconds: Date().timeIntervalSince(start))
    }

    /// The examples with each suspect's weight multiplied by `weight`.
    public static func downWeighted(_ examples: [TrainingExample], suspects: [Int], weight: Float) -> [TrainingExample] {
        var out = examples
        for i in suspects { out[i].weight *= weight }
        return out
    }
}
