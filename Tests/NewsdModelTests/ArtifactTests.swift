import Foundation
import Testing
@testable import NewsdModel

@Suite struct ArtifactTests {
    /// Trains a tiny model on a tiny checkpoint and writes it; returns (checkpoint dir, artifact dir).
    func makeArtifact(scope: TrainableScope = .top(1)) throws -> (URL, URL, StudentModel) {
        let baseDir = try Fixtures.writeTinyCheckpoint()
        let base = try Checkpoint(directory: baseDir)
        var cfg = TrainingConfiguration(); cfg.trainable = scope; cfg.epochs = 1; cfg.threads = 2
        let examples = Fixtures.randomExamples(count: 24, classes: 3, seed: 3)
        let validation = Fixtures.randomExamples(count: 12, classes: 3, seed: 4).map { e in (ids: e.ids, label: e.target.indices.max { e.target[$0] < e.target[$1] }!) }
        let result = try FineTune.run(base: base, labels: ["negative", "neutral", "positive"], training: examples,
                                      validation: validation, configuration: cfg)
        let out = Fixtures.temporaryDirectory().appendingPathComponent("model")
        let loaded = try FineTune.save(result, trainer: cfg, base: base, to: out, threads: 1)
        return (baseDir, out, loaded)
    }

    /// The checkpoint cache holds a base only while something uses it: a model that shares its
    /// layers (fp32, or int8 that keeps its float weights) keeps it loaded and found; a
    /// serving-only int8 model lets it go, and predicts the same without it.
    @Test func theCacheKeepsABaseOnlyWhileAModelUsesIt() throws {
        let (baseDir, dir, _) = try makeArtifact()
        let texts = ["profit rose", "sales fell w3 w4", ""]
        #expect(!CheckpointCache.shared.isLoaded(baseDir))
        let serving: StudentModel, expected: [Prediction]
        do {
            let kept = try Artifact.load(directory: dir, threads: 1, precision: .fastest)
            #expect(CheckpointCache.shared.isLoaded(baseDir))
            let first = try CheckpointCache.shared.checkpoint(baseDir).weights
            #expect(try CheckpointCache.shared.checkpoint(baseDir).weights === first)
            expected = kept.predict(texts)
            serving = try Artifact.load(directory: dir, threads: 1, precision: .fastest, servingOnly: true)
            #expect(serving.runner.floatWeights == nil)
            #expect(serving.predict(texts) == expected)
        }
        // Only the serving-only model is left: nothing holds the base.
        #expect(!CheckpointCache.shared.isLoaded(baseDir))
        #expect(serving.predict(texts) == expected)
        // The next load finds it again (reloaded from disk).
        #expect(try Artifact.load(directory: dir, threads: 1, precision: .fastest).predict(texts) == expected)
    }

    @Test(arguments: [TrainableScope.head, .top(1), .all])
    func roundTripGivesTheSamePredictions(scope: TrainableScope) throws {
        let (_, dir, loaded) = try makeArtifact(scope: scope)
        let again = try Artifact.load(directory: dir, threads: 2)
        let texts = ["profit rose", "sales fell w3 w4", "the loss was steady", ""]
        #expect(loaded.predict(texts) == again.predict(texts))
        let m = try #require(again.manifest)
        #expect(m.labels == ["negative", "neutral", "positive"])
        #expect(m.training.trainable == scope)
        #expect(m.metrics["validation_accuracy"] != nil)
        #expect(again.version == String(m.checksum.prefix(12)))
        // Rewriting in place replaces atomically and leaves no temporary directories behind.
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.deletingLastPathComponent().path)
        #expect(files == ["model"])
    }

    /// The exit classifiers and their threshold travel in the artifact; an artifact written
    /// without them (as before early exit existed) loads and runs every layer.
    @Test func earlyExitRoundTripsAndIsOptional() throws {
        let (baseDir, dir, loaded) = try makeArtifact()
        let exits = try #require(loaded.earlyExit)
        #expect(exits.exits.map(\.afterLayers) == [1])
        let again = try Artifact.load(directory: dir, threads: 1)
        #expect(again.earlyExit?.threshold == exits.threshold)
        #expect(again.earlyExit?.exits[0].head.parameters.array == exits.exits[0].head.parameters.array)
        #expect(try Artifact.load(directory: dir, threads: 1, earlyExit: false).earlyExit == nil)
        let base = try Checkpoint(directory: baseDir)
        let plain = Fixtures.temporaryDirectory().appendingPathComponent("plain")
        try Artifact.write(directory: plain, base: base, weights: loaded.runner.floatWeights!, head: loaded.head, labels: loaded.labels,
                           trainedLayers: [1], trainedEmbeddings: false, training: TrainingConfiguration(), trainingExamples: 1,
                           metrics: [:], temperature: 1)
        #expect(!(try String(contentsOf: plain.appendingPathComponent("manifest.json"), encoding: .utf8)).contains("earlyExit"))
        let old = try Artifact.load(directory: plain, threads: 1)
        #expect(old.earlyExit == nil)
        #expect(old.classify(ids: [base.tokenizer.encode("profit rose")]).map(\.layers) == [2])
        // An exit outside the encoder is refused by name.
        let bad = Fixtures.temporaryDirectory().appendingPathComponent("bad")
        try Artifact.write(directory: bad, base: base, weights: loaded.runner.floatWeights!, head: loaded.head, labels: loaded.labels,
                           trainedLayers: [1], trainedEmbeddings: false, training: TrainingConfiguration(), trainingExamples: 1,
                           metrics: [:], temperature: 1, earlyExit: EarlyExit(exits: [EarlyExit.Exit(afterLayers: 2, head: loaded.head)], threshold: 0.9))
        expectRefused(bad, mentioning: "early exit after layers [2]", "exit after the last layer")
    }

    func expectRefused(_ dir: URL, mentioning: String, _ comment: Comment) {
        do {
            _ = try Artifact.load(directory: dir, threads: 1)
            Issue.record("loaded a corrupt artifact: \(comment)")
        } catch {
            #expect("\(error)".contains(mentioning), "\(comment): \(error)")
        }
    }

    @Test func flippedByteInWeightsIsRefused() throws {
        let (_, dir, _) = try makeArtifact()
        let url = dir.appendingPathComponent("weights.safetensors")
        var data = try Data(contentsOf: url)
        data[data.count - 3] ^= 0x40
        try data.write(to: url)
        expectRefused(dir, mentioning: "checksum mismatch", "flipped byte")
    }

    @Test func truncatedWeightsAreRefused() throws {
        let (_, dir, _) = try makeArtifact()
        let url = dir.appendingPathComponent("weights.safetensors")
        let data = try Data(contentsOf: url)
        try data.prefix(data.count / 2).write(to: url)
        expectRefused(dir, mentioning: "weights.safetensors", "truncated")
    }

    @Test func editedManifestIsRefused() throws {
        let (_, dir, _) = try makeArtifact()
        let url = dir.appendingPathComponent("manifest.json")
        let text = try String(contentsOf: url, encoding: .utf8).replacingOccurrences(of: "\"positive\"", with: "\"bullish\"")
        try text.write(to: url, atomically: true, encoding: .utf8)
        expectRefused(dir, mentioning: "manifest.json", "edited labels")
    }

    @Test func missingFileIsRefused() throws {
        let (_, dir, _) = try makeArtifact()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("vocab.txt"))
        expectRefused(dir, mentioning: "vocab.txt", "missing vocabulary")
    }

    @Test func differentBaseCheckpointIsRefused() throws {
        let (baseDir, dir, _) = try makeArtifact()
        let other = try Fixtures.writeTinyCheckpoint(seed: 99)
        try FileManager.default.removeItem(at: baseDir.appendingPathComponent("model.safetensors"))
        try FileManager.default.copyItem(at: other.appendingPathComponent("model.safetensors"), to: baseDir.appendingPathComponent("model.safetensors"))
        expectRefused(dir, mentioning: "checksum mismatch", "replaced base")
    }

    @Test func garbageIsNotAModel() throws {
        let dir = Fixtures.temporaryDirectory()
        try Data("not json".utf8).write(to: dir.appendingPathComponent("manifest.json"))
        expectRefused(dir, mentioning: "manifest.json", "garbage manifest")
        expectRefused(Fixtures.temporaryDirectory(), mentioning: "manifest.json", "empty directory")
    }

    @Test func safeTensorsRoundTripAndRejectsBadHeaders() throws {
        let t = ["a": NamedTensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6]), "b": NamedTensor(shape: [1], values: [-1])]
        let data = try SafeTensors.encode(t)
        let back = try SafeTensors.decode(data, path: "x")
        #expect(back["a"]?.values == [1, 2, 3, 4, 5, 6] && back["a"]?.shape == [2, 3] && back["b"]?.values == [-1])
        #expect(throws: ModelError.self) { try SafeTensors.decode(data.prefix(data.count - 4), path: "x") }
        #expect(throws: ModelError.self) { try SafeTensors.decode(Data([1, 2, 3]), path: "x") }
    }
}

/// The base checkpoint is integrity-checked too: with recorded digests (SHA256SUMS inside, or
/// `<dir>.sha256sums` beside it as scripts/install-model.sh writes), a damaged base is refused
/// before anything is built from it. Before: only trained artifacts were checked.
@Suite struct BaseCheckpointDigestTests {
    @Test func recordedDigestsAreVerified() throws {
        let dir = try Fixtures.writeTinyCheckpoint()
        let weights = dir.appendingPathComponent("model.safetensors"), vocab = dir.appendingPathComponent("vocab.txt")
        let sums = "\(try SHA256.hex(ofFile: weights))  model.safetensors\n\(try SHA256.hex(ofFile: vocab))  vocab.txt\n"
        try sums.write(to: URL(fileURLWithPath: dir.path + ".sha256sums"), atomically: true, encoding: .utf8)
        _ = try Checkpoint(directory: dir)
        // One flipped byte in the weights, with their size unchanged: refused, naming the file.
        var data = try Data(contentsOf: weights)
        data[data.count - 5] ^= 0x40
        try data.write(to: weights)
        do { _ = try Checkpoint(directory: dir); Issue.record("a damaged base loaded") } catch let e as ModelError {
            guard case let .checksumMismatch(path, _, _) = e else { Issue.record("\(e)"); return }
            #expect(path.hasSuffix("model.safetensors"))
        }
        // A malformed digest file is an error too, not a silent pass.
        try "not a digest\n".write(to: URL(fileURLWithPath: dir.path + ".sha256sums"), atomically: true, encoding: .utf8)
        #expect(throws: ModelError.self) { try Checkpoint(directory: dir) }
    }
}
