import NewsdModel
import NewsdTeacher

/// One labelled text: its target distribution over the labels and where it came from
/// (`teacher`, `imported`, `pseudo`).
public struct LabelledText: Sendable, Equatable {
    /// The sentence.
    public var text: String
    /// Target probabilities, in label order (one-hot for imported labels, vote shares for the teacher's).
    public var target: [Float]
    /// `teacher`, `imported` or `pseudo`.
    public var source: String
    /// When the label arrived, seconds since 1970 (0: unknown, counts as old).
    public var labelledAt: Double = 0
}

/// The data of one training run: labelled texts split into training and validation by text hash
/// (stable across runs and hosts, so a validation text is never trained on), plus optional
/// pseudo-labels (training only). Pure: no database, no files.
public struct TrainingSet: Sendable {
    /// Texts trained on.
    public private(set) var training: [LabelledText] = []
    /// Texts held out; their truth is the arg-max of the target.
    public private(set) var validation: [LabelledText] = []
    private let validationFraction: Double

    /// Splits `labelled` by text hash.
    public init(_ labelled: [LabelledText], validationFraction: Double) {
        self.validationFraction = validationFraction
        for l in labelled {
            if TextHash.isValidation(l.text, fraction: validationFraction) { validation.append(l) } else { training.append(l) }
        }
    }

    /// The held-out texts.
    public var validationTexts: [String] { validation.map(\.text) }

    /// Labels trained on by source, and the validation size (recorded with the model).
    public var labelCounts: [String: Int] {
        var counts = training.reduce(into: [String: Int]()) { $0[$1.source, default: 0] += 1 }
        counts["validation"] = validation.count
        return counts
    }

    /// Permutes the training targets (a deterministic shuffle), keeping the validation truth: a
    /// model trained on it must be refused by the gate.
    public mutating func shuffleTrainingTargets(seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let targets = training.map(\.target).shuffled(using: &rng)
        for i in training.indices { training[i].target = targets[i] }
    }

    /// Adds `model`'s predictions with at least `minMargin` on texts that are neither labelled
    /// nor validation texts, as soft targets; returns how many.
    public mutating func addPseudoLabels(_ texts: [String], model: StudentModel, minMargin: Double) -> Int {
        let known = Set((training + validation).map { teacherTextHash($0.text) })
        let fresh = texts.filter { !known.contains(teacherTextHash($0)) && !TextHash.isValidation($0, fraction: validationFraction) }
        var added = 0
        for (text, p) in zip(fresh, model.predict(fresh)) where Double(p.margin) >= minMargin {
            training.append(LabelledText(text: text, target: p.probabilities, source: "pseudo"))
            added += 1
        }
        return added
    }

    /// Keeps for training only the labels that arrived after `since` and a replay sample of
    /// the older ones (`replayRatio` per new label, at least `minimumReplay`, chosen by a seeded
    /// shuffle), for a candidate that continues from the active model: it learns the new labels
    /// and rehearses the old ones so it does not forget them. Validation is untouched, so the
    /// gate still compares both models on every held-out label. Returns the counts kept.
    @discardableResult
    public mutating func keepIncremental(since: Double, replayRatio: Double, minimumReplay: Int = 200, seed: UInt64) -> (new: Int, replayed: Int) {
        // Strictly after, with a millisecond's slack: labels stored in one statement share their
        // time, and `since` may have travelled through JSON.
        let isNew = { (l: LabelledText) in l.labelledAt > since + 0.001 }
        let fresh = training.filter(isNew)
        var old = training.filter { !isNew($0) }
        var rng = SeededGenerator(seed: seed)
        old.shuffle(using: &rng)
        let replay = old.prefix(min(old.count, max(minimumReplay, Int((Double(fresh.count) * replayRatio).rounded()))))
        training = fresh + replay.map { var l = $0; l.source = "replay"; return l }
        return (fresh.count, replay.count)
    }

    /// Token ids and targets for the trainer; validation as ids and the arg-max label.
    public func encoded(with tokenizer: WordPieceTokenizer) -> (training: [TrainingExample], validation: [(ids: [Int32], label: Int)]) {
        let train = training.map { TrainingExample(ids: tokenizer.encode($0.text), target: $0.target) }
        let valid = validation.map { v in (ids: tokenizer.encode(v.text), label: v.target.indices.max { v.target[$0] < v.target[$1] }!) }
        return (train, valid)
    }
}
