import Testing
@testable import NewsdDistill
@testable import NewsdModel

/// The gate's paired test and the incremental training set: pure logic, no I/O.
@Suite struct GateAndTrainingSetTests {
    static let labels = ["negative", "neutral", "positive"]

    /// `n` items; each model is wrong (answering the next class) on the items given.
    static func evaluation(n: Int, activeWrong: Set<Int>, candidateWrong: Set<Int>) -> PromotionGate.Evaluation {
        let truth = (0..<n).map { $0 % 3 }
        let active = truth.enumerated().map { i, t in activeWrong.contains(i) ? (t + 1) % 3 : t }
        let candidate = truth.enumerated().map { i, t in candidateWrong.contains(i) ? (t + 1) % 3 : t }
        func metrics(_ p: [Int]) -> EvaluationMetrics {
            EvaluationMetrics(probabilities: p.map { k in (0..<3).map { $0 == k ? Float(1) : 0 } }, truth: truth, labels: labels)
        }
        return PromotionGate.Evaluation(name: "gold_old", candidate: metrics(candidate), active: metrics(active),
                                        paired: PromotionGate.PairedPredictions(truth: truth, candidate: candidate, active: active))
    }

    @Test func aModelThatIsSignificantlyWorseIsRefusedEvenWithinTolerance() {
        // 3,000 items; the candidate keeps the active model's 30 mistakes and adds 15: half a
        // point, within ε = 0.01, but every difference goes one way: it forgot something.
        let activeWrong = Set(stride(from: 0, to: 3000, by: 100)), added = Set(stride(from: 1, to: 3000, by: 200))
        let gate = PromotionGate(f1Tolerance: 0.01, negativeRecallTolerance: 1)
        let decision = gate.decide([Self.evaluation(n: 3000, activeWrong: activeWrong, candidateWrong: activeWrong.union(added))])
        #expect(!decision.promote)
        #expect(decision.reasons.count == 1 && decision.reasons[0].contains("significantly worse"), "\(decision.reasons)")
        #expect(decision.metrics["gold_old_macro_f1_difference_high"].map { $0 < 0 } == true)
    }

    @Test func aSmallSetsNoiseIsNotARefusal() {
        // 60 items: the candidate fixes one mistake and makes two new ones.
        let gate = PromotionGate(f1Tolerance: 0.05, negativeRecallTolerance: 1)
        let decision = gate.decide([Self.evaluation(n: 60, activeWrong: [5, 17, 40], candidateWrong: [17, 40, 22, 51])])
        #expect(decision.promote, "\(decision.reasons)")
        let low = decision.metrics["gold_old_macro_f1_difference_low"] ?? 0, high = decision.metrics["gold_old_macro_f1_difference_high"] ?? 0
        #expect(low < 0 && high >= 0, "[\(low), \(high)]")
    }

    @Test func anEqualOrBetterModelPasses() {
        let gate = PromotionGate(f1Tolerance: 0.01, negativeRecallTolerance: 0.02)
        let activeWrong = Set(stride(from: 0, to: 3000, by: 20))
        #expect(gate.decide([Self.evaluation(n: 3000, activeWrong: activeWrong, candidateWrong: Set(activeWrong.prefix(60)))]).promote)
        #expect(gate.decide([Self.evaluation(n: 3000, activeWrong: activeWrong, candidateWrong: activeWrong)]).promote)
    }

    @Test func incrementalSetKeepsNewLabelsAndReplaysOldOnes() {
        let labelled = (0..<2000).map { i in
            LabelledText(text: "sentence \(i)", target: [0, 1, 0], source: "teacher", labelledAt: Double(i))
        }
        var set = TrainingSet(labelled, validationFraction: 0.1)
        let validation = set.validationTexts
        let kept = set.keepIncremental(since: 1900, replayRatio: 2, minimumReplay: 50, seed: 1)
        let fresh = labelled.filter { $0.labelledAt > 1900 && !validation.contains($0.text) }.count
        #expect(kept.new == fresh)
        #expect(kept.replayed == 2 * fresh)
        #expect(set.training.filter { $0.source == "replay" }.allSatisfy { $0.labelledAt <= 1900 })
        #expect(set.validationTexts == validation, "the gate still sees every held-out label")
        #expect(set.labelCounts["replay"] == kept.replayed)
        var small = TrainingSet(labelled, validationFraction: 0.1)
        #expect(small.keepIncremental(since: 1995, replayRatio: 2, minimumReplay: 50, seed: 1).replayed == 50, "at least the minimum replay")
    }
}
