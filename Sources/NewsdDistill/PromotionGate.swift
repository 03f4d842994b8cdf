import Foundation
import NewsdModel

/// The promotion rule, pure: no database, no files. A candidate is promoted only if, on every
/// evaluation set, its macro-F1 is at least the active model's minus ε and its negative-class
/// recall at least the active's minus δ. With no active model, it is refused only if it is no
/// better than always answering the majority class.
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
        /// An evaluation.
        public init(name: String, candidate: EvaluationMetrics, active: EvaluationMetrics?) {
            self.name = name; self.candidate = candidate; self.active = active
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
