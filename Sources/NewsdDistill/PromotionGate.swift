import Foundation
import NewsdModel

/// The promotion rule, pure: no database, no files. A candidate is promoted only if, on every
/// evaluation set, its macro-F1 is at least the active model's minus ε, its negative-class
/// recall at least the active's minus δ, and, where both models' answers on the same items are
/// given, it is not significantly worse: a paired bootstrap of the macro-F1 difference (the same
/// resampled items for both models, so the items' own difficulty cancels) must not put the whole
/// 95 % interval below zero. On a large regression set of an old kind of news that catches a
/// model that forgets even within ε; on a small set it refuses only a clear loss. With no active
/// model, a candidate is refused only if it is no better than always answering the majority class.
public struct PromotionGate: Sendable, Equatable {
    /// ε (`trainer.f1_tolerance`).
    public var f1Tolerance: Double
    /// δ (`trainer.negative_recall_tolerance`).
    public var negativeRecallTolerance: Double
    /// The class whose recall is guarded (nil: none).
    public var guardedLabel: String?

    /// A gate with these tolerances.
    public init(f1Tolerance: Double, negativeRecallTolerance: Double, guardedLabel: String? = "negative") {
        self.f1Tolerance = f1Tolerance
        self.negativeRecallTolerance = negativeRecallTolerance
        self.guardedLabel = guardedLabel
    }

    /// One evaluation set scored for both models.
    public struct Evaluation: Sendable, Equatable {
        /// Set name (`validation`, `gold_<file>`).
        public var name: String
        /// The candidate's scores.
        public var candidate: EvaluationMetrics
        /// The active model's scores (nil: no active model).
        public var active: EvaluationMetrics?
        /// Per item: the true label index and each model's predicted index (for the paired test).
        public var paired: PairedPredictions?
        /// An evaluation.
        public init(name: String, candidate: EvaluationMetrics, active: EvaluationMetrics?, paired: PairedPredictions? = nil) {
            self.name = name; self.candidate = candidate; self.active = active; self.paired = paired
        }
    }

    /// Both models' answers on the same items.
    public struct PairedPredictions: Sendable, Equatable {
        /// True label indices.
        public var truth: [Int]
        /// The candidate's predicted indices.
        public var candidate: [Int]
        /// The active model's predicted indices.
        public var active: [Int]
        /// Paired predictions (the three arrays in the same item order).
        public init(truth: [Int], candidate: [Int], active: [Int]) { self.truth = truth; self.candidate = candidate; self.active = active }

        /// The 95 % paired-bootstrap interval of candidate minus active macro-F1 over `classes`
        /// classes (`resamples` resamples, deterministic for `seed`).
        public func macroF1DifferenceInterval(classes: Int, resamples: Int = 1000, seed: UInt64 = 0x6A7E) -> (low: Double, high: Double) {
            let n = truth.count
            guard n > 0 else { return (0, 0) }
            var rng = SeededGenerator(seed: seed)
            var differences: [Double] = []
            differences.reserveCapacity(resamples)
            var sample = [Int](repeating: 0, count: n)
            for _ in 0..<resamples {
                for i in 0..<n { sample[i] = Int(rng.next() % UInt64(n)) }
                differences.append(Self.macroF1(sample, truth, candidate, classes) - Self.macroF1(sample, truth, active, classes))
            }
            differences.sort()
            return (differences[Int(0.025 * Double(resamples))], differences[max(0, Int(0.975 * Double(resamples)) - 1)])
        }

        /// Macro-F1 of `predicted` on the items `sample` (with repeats).
        static func macroF1(_ sample: [Int], _ truth: [Int], _ predicted: [Int], _ classes: Int) -> Double {
            var tp = [Int](repeating: 0, count: classes), fp = tp, fn = tp
            for i in sample {
                let t = truth[i], p = predicted[i]
                if t == p { tp[t] += 1 } else { fp[p] += 1; fn[t] += 1 }
            }
            var sum = 0.0
            for k in 0..<classes where tp[k] + fp[k] + fn[k] > 0 { sum += 2 * Double(tp[k]) / Double(2 * tp[k] + fp[k] + fn[k]) }
            return sum / Double(classes)
        }
    }

    /// The gate's verdict: the reasons for refusal (empty: promote) and the figures recorded.
    public struct Decision: Sendable, Equatable {
        /// Why the candidate is refused; empty when it passes.
        public var reasons: [String]
        /// Figures for the registry (`<set>_accuracy`, `active_<set>_macro_f1`, ...).
        public var metrics: [String: Double]
        /// Whether the candidate passes.
        public var promote: Bool { reasons.isEmpty }
    }

    /// Judges a candidate on `evaluations` (the first is the validation split).
    public func decide(_ evaluations: [Evaluation]) -> Decision {
        var reasons: [String] = []
        var metrics: [String: Double] = [:]
        for e in evaluations {
            let c = e.candidate
            metrics["\(e.name)_accuracy"] = c.accuracy
            metrics["\(e.name)_macro_f1"] = c.macroF1
            metrics["\(e.name)_ece"] = c.expectedCalibrationError
            for (l, pc) in c.perClass { metrics["\(e.name)_f1_\(l)"] = pc.f1; metrics["\(e.name)_recall_\(l)"] = pc.recall }
            guard let a = e.active else { continue }
            metrics["active_\(e.name)_macro_f1"] = a.macroF1
            if c.macroF1 < a.macroF1 - f1Tolerance {
                reasons.append(format("%@ macro-F1 %.4f < active %.4f - %.3f", e.name, c.macroF1, a.macroF1, f1Tolerance))
            }
            if let paired = e.paired {
                let interval = paired.macroF1DifferenceInterval(classes: c.labels.count)
                metrics["\(e.name)_macro_f1_difference_low"] = interval.low
                metrics["\(e.name)_macro_f1_difference_high"] = interval.high
                if interval.high < 0 {
                    reasons.append(format("%@ macro-F1 significantly worse than active (paired bootstrap, 95%% interval of the difference [%.4f, %.4f])",
                                          e.name, interval.low, interval.high))
                }
            }
            if let label = guardedLabel, let cr = c.perClass[label]?.recall, let ar = a.perClass[label]?.recall {
                metrics["active_\(e.name)_recall_\(label)"] = ar
                if cr < ar - negativeRecallTolerance {
                    reasons.append(format("%@ %@ recall %.4f < active %.4f - %.3f", e.name, label, cr, ar, negativeRecallTolerance))
                }
            }
        }
        if let first = evaluations.first, first.active == nil {
            // No model to beat: refuse only a candidate no better than the majority class.
            let c = first.candidate
            let majority = Double(c.confusion.map { $0.reduce(0, +) }.max() ?? 0) / Double(max(c.n, 1))
            if c.accuracy < majority - 1e-9 && c.macroF1 < 0.34 {
                reasons.append(format("%@ accuracy %.4f below the majority class share %.4f", first.name, c.accuracy, majority))
            }
        }
        return Decision(reasons: reasons, metrics: metrics)
    }

    private func format(_ f: String, _ args: CVarArg...) -> String { String(format: f, arguments: args) }
}
