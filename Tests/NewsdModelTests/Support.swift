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
