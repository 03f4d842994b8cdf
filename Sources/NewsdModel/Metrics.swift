import Foundation

/// Precision, recall and F1 of one class.
public struct ClassMetrics: Codable, Sendable, Equatable {
    /// Of the items predicted as this class, the share that are.
    public var precision: Double
    /// Of the items of this class, the share predicted as it.
    public var recall: Double
    /// Harmonic mean of precision and recall.
    public var f1: Double
    /// Number of items of this class.
    public var support: Int
}

/// Classification quality on a labelled set.
public struct EvaluationMetrics: Codable, Sendable, Equatable {
    /// Number of items.
    public var n: Int
    /// Share predicted correctly.
    public var accuracy: Double
    /// Unweighted mean of per-class F1.
    public var macroF1: Double
    /// Per-class figures, by label.
    public var perClass: [String: ClassMetrics]
    /// confusion[true][predicted] counts, rows and columns in `labels` order.
    public var confusion: [[Int]]
    /// The label order of `confusion`.
    public var labels: [String]
    /// Expected calibration error (10 equal-width confidence bins) of the probabilities given.
    public var expectedCalibrationError: Double
    /// Mean negative log-likelihood of the true labels.
    public var negativeLogLikelihood: Double

    /// Computes the metrics of predicted probability rows against true label indices.
    public init(probabilities: [[Float]], truth: [Int], labels: [String]) {
        let c = labels.count
        n = truth.count
        self.labels = labels
        var confusion = [[Int]](repeating: [Int](repeating: 0, count: c), count: c)
        var correct = 0
        var nll = 0.0
        for (p, y) in zip(probabilities, truth) {
            let guess = p.indices.max { p[$0] < p[$1] } ?? 0
            confusion[y][guess] += 1
            if guess == y { correct += 1 }
            nll -= log(Double(max(p[y], 1e-12)))
        }
        self.confusion = confusion
        accuracy = n == 0 ? 0 : Double(correct) / Double(n)
        negativeLogLikelihood = n == 0 ? 0 : nll / Double(n)
        var per: [String: ClassMetrics] = [:]
        var f1Sum = 0.0
        for k in 0..<c {
            let tp = Double(confusion[k][k])
            let predicted = Double((0..<c).reduce(0) { $0 + confusion[$1][k] })
            let actual = Double(confusion[k].reduce(0, +))
            let precision = predicted == 0 ? 0 : tp / predicted
            let recall = actual == 0 ? 0 : tp / actual
            let f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall)
            per[labels[k]] = ClassMetrics(precision: precision, recall: recall, f1: f1, support: Int(actual))
            f1Sum += f1
        }
        perClass = per
        macroF1 = c == 0 ? 0 : f1Sum / Double(c)
        expectedCalibrationError = Calibration.expectedCalibrationError(probabilities: probabilities, truth: truth)
    }
}

/// Temperature scaling: one scalar T dividing the logits, fitted to minimise validation NLL.
public enum Calibration {
    /// ECE with `bins` equal-width bins over the top-1 confidence.
    public static func expectedCalibrationError(probabilities: [[Float]], truth: [Int], bins: Int = 10) -> Double {
        guard !truth.isEmpty else { return 0 }
        var count = [Int](repeating: 0, count: bins), conf = [Double](repeating: 0, count: bins), acc = [Double](repeating: 0, count: bins)
        for (p, y) in zip(probabilities, truth) {
            let guess = p.indices.max { p[$0] < p[$1] } ?? 0
            let confidence = Double(p[guess])
            let b = min(bins - 1, Int(confidence * Double(bins)))
            count[b] += 1; conf[b] += confidence; acc[b] += guess == y ? 1 : 0
        }
        var ece = 0.0
        for b in 0..<bins where count[b] > 0 {
            ece += Double(count[b]) / Double(truth.count) * abs(acc[b] / Double(count[b]) - conf[b] / Double(count[b]))
        }
        return ece
    }

    /// Mean NLL of `truth` under softmax(logits / T).
    public static func negativeLogLikelihood(logits: [[Float]], truth: [Int], temperature: Float) -> Double {
        guard !truth.isEmpty else { return 0 }
        var total = 0.0
        for (z, y) in zip(logits, truth) { total -= log(Double(max(softmax(z, temperature: temperature)[y], 1e-12))) }
        return total / Double(truth.count)
    }

    /// The temperature in [0.05, 20] minimising NLL (golden-section search on log T).
    public static func fitTemperature(logits: [[Float]], truth: [Int]) -> Float {
        guard !truth.isEmpty else { return 1 }
        var lo = log(0.05), hi = log(20.0)
        let phi = (sqrt(5.0) - 1) / 2
        func f(_ x: Double) -> Double { negativeLogLikelihood(logits: logits, truth: truth, temperature: Float(exp(x))) }
        var a = hi - phi * (hi - lo), b = lo + phi * (hi - lo)
        var fa = f(a), fb = f(b)
        for _ in 0..<60 {
            if fa < fb { hi = b; b = a; fb = fa; a = hi - phi * (hi - lo); fa = f(a) }
            else { lo = a; a = b; fa = fb; b = lo + phi * (hi - lo); fb = f(b) }
        }
        return Float(exp((lo + hi) / 2))
    }
}
