import Foundation
@testable import NewsdModel

/// Test helpers: fixture files, the base checkpoint, tiny random models.
enum Fixtures {
    static func url(_ name: String) -> URL {
        Bundle.module.url(forResource: name, withExtension: nil, subdirectory: "Fixtures")!
    }

    static func json(_ name: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url(name))) as! [String: Any]
    }

    /// The base checkpoint directory: NEWSD_BASE_MODEL_DIR, else the package's .models/all-MiniLM-L6-v2
    /// (installed by scripts/install-model.sh, which the test command runs first).
    static var baseDirectory: URL {
        if let dir = ProcessInfo.processInfo.environment["NEWSD_BASE_MODEL_DIR"] { return URL(fileURLWithPath: dir) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent(".models/all-MiniLM-L6-v2")
    }

    static let base: Result<Checkpoint, Error> = Result { try Checkpoint(directory: baseDirectory) }

    static func temporaryDirectory() -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("newsd-test-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        return u
    }

    static let tinyConfig = BertConfig(vocabSize: 40, hiddenSize: 8, numLayers: 2, numHeads: 2, intermediateSize: 12,
                                       maxPositions: 16, typeVocabSize: 2, layerNormEps: 1e-5)

    /// A tiny vocabulary with the specials, letters and a few pieces, as a tokenizer.
    static let tinyTokens: [String] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "up", "down", "flat", "profit", "loss",
                                       "sales", "rose", "fell", "was", "steady", "the", "##s", ".", ",", "a"]
        + (0..<20).map { "w\($0)" }
}

extension Fixtures {
    /// Random examples over the tiny vocabulary: varied lengths (so padding is exercised) and soft targets.
    static func randomExamples(count: Int, classes: Int, seed: UInt64, maxLength: Int = 9) -> [TrainingExample] {
        var rng = SeededGenerator(seed: seed)
        return (0..<count).map { _ in
            let len = 3 + Int(rng.next() % UInt64(maxLength - 2))
            let ids = [Int32(2)] + (0..<(len - 2)).map { _ in Int32(5 + rng.next() % 35) } + [Int32(3)]
            var t = (0..<classes).map { _ in Float(rng.next() % 100) + 1 }
            let s = t.reduce(0, +); t = t.map { $0 / s }
            return TrainingExample(ids: ids, target: t)
        }
    }

    /// Writes a tiny Hugging Face-style checkpoint directory (config.json, model.safetensors, vocab.txt).
    static func writeTinyCheckpoint(_ config: BertConfig = tinyConfig, seed: UInt64 = 7) throws -> URL {
        let dir = temporaryDirectory()
        try Checkpoint.writeRandom(to: dir, config: config, vocabulary: tinyTokens, seed: seed)
        return dir
    }
}
