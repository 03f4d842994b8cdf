import Foundation
import NewsdSystem

/// Reference to the base checkpoint a trained student builds on.
public struct BaseReference: Codable, Sendable, Equatable {
    /// Directory of the checkpoint when the artifact was written (a hint; see `Artifact.load`).
    public var path: String
    /// SHA-256 of its `model.safetensors`: a different base is refused.
    public var weightsSHA256: String
    /// Its architecture.
    public var config: BertConfig
}

/// The description of a trained student, stored as `manifest.json` in the artifact directory.
public struct ArtifactManifest: Codable, Sendable, Equatable {
    /// Format identifier; a loader refuses formats it does not know.
    public var format: String = Artifact.format
    /// When it was written (ISO 8601).
    public var createdAt: String
    /// Class names in logit order.
    public var labels: [String]
    /// The base checkpoint.
    public var base: BaseReference
    /// Tokenizer settings used in training.
    public var tokenizer: TokenizerSettings
    /// SHA-256 of the vocabulary file.
    public var vocabularySHA256: String
    /// Layers whose weights the artifact carries (the others come from the base).
    public var trainedLayers: [Int]
    /// Whether the artifact carries the embeddings.
    public var trainedEmbeddings: Bool
    /// The training configuration.
    public var training: TrainingConfiguration
    /// Training-set size and label counts.
    public var trainingExamples: Int
    /// Validation metrics (uncalibrated ECE, calibrated ECE, accuracy, macro-F1...), by name.
    public var metrics: [String: Double]
    /// Softmax temperature fitted on validation data.
    public var temperature: Float
    /// SHA-256 of every other file of the artifact, by file name.
    public var files: [String: String]
    /// Early exit: the layer counts with an intermediate classifier (tensors `exit.<layers>.weight`
    /// and `.bias`) and the threshold. Absent in artifacts without it (they run every layer).
    public var earlyExit: EarlyExitManifest? = nil
    /// SHA-256 of this manifest's canonical JSON with `checksum` empty: the artifact's identity.
    public var checksum: String = ""
}

/// The early-exit part of a manifest.
public struct EarlyExitManifest: Codable, Sendable, Equatable {
    /// Layer counts after which a classifier stands, ascending.
    public var afterLayers: [Int]
    /// The top probability at which a sentence stops.
    public var threshold: Float
}

/// Trained-student artifacts: a directory with `manifest.json`, `weights.safetensors` (the head
/// and the tensors that differ from the base), `vocab.txt` and `config.json`. Written atomically
/// (temporary directory, fsync, rename); loading verifies every checksum before building anything.
public enum Artifact {
    /// The format this code writes and reads.
    public static let format = "newsd-student/1"

    /// Canonical JSON of a manifest (sorted keys): the bytes its checksum covers.
    static func canonical(_ m: ArtifactManifest) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted]
        return try e.encode(m)
    }

    /// Writes `model` (trained on `base`) to `directory`, replacing an existing artifact there.
    @discardableResult
    public static func write(directory: URL, base: Checkpoint, weights: EncoderWeights, head: ClassifierHead,
                             labels: [String], trainedLayers: [Int], trainedEmbeddings: Bool,
                             training: TrainingConfiguration, trainingExamples: Int, metrics: [String: Double],
                             temperature: Float, earlyExit: EarlyExit? = nil) throws -> ArtifactManifest {
        let fm = FileManager.default
        let parent = directory.deletingLastPathComponent()
        let tmp = DurableFiles.sibling(of: directory, tag: "tmp")
        do {
            try fm.createDirectory(at: parent, withIntermediateDirectories: true)
            try fm.createDirectory(at: tmp, withIntermediateDirectories: false)
        } catch { throw ModelError.writeFailed(tmp.path, reason: "\(error)") }
        defer { try? fm.removeItem(at: tmp) }

        var tensors = weights.namedTensors(embeddings: trainedEmbeddings, layers: trainedLayers)
        tensors.merge(head.namedTensors) { a, _ in a }
        for e in earlyExit?.exits ?? [] { tensors.merge(e.head.namedTensors(prefix: "exit.\(e.afterLayers)")) { a, _ in a } }
        let weightsData = try SafeTensors.encode(tensors, metadata: ["format": format])
        let vocab = try readFile(base.directory.appendingPathComponent("vocab.txt"))
        let configData = try readFile(base.directory.appendingPathComponent("config.json"))
        let files = ["weights.safetensors": weightsData, "vocab.txt": vocab, "config.json": configData]
        for (name, data) in files { try writeSynced(data, to: tmp.appendingPathComponent(name)) }
        let iso = ISO8601DateFormatter()
        var manifest = ArtifactManifest(
            createdAt: iso.string(from: Date()), labels: labels,
            base: BaseReference(path: base.directory.path, weightsSHA256: base.weightsChecksum, config: base.config),
            tokenizer: base.tokenizer.settings, vocabularySHA256: SHA256.hex(of: vocab),
            trainedLayers: trainedLayers, trainedEmbeddings: trainedEmbeddings, training: training,
            trainingExamples: trainingExamples, metrics: metrics, temperature: temperature,
            files: files.mapValues { SHA256.hex(of: $0) })
        manifest.earlyExit = earlyExit.map { EarlyExitManifest(afterLayers: $0.exits.map(\.afterLayers), threshold: $0.threshold) }
        manifest.checksum = SHA256.hex(of: try canonical(manifest))
        try writeSynced(try canonical(manifest), to: tmp.appendingPathComponent("manifest.json"))
        try fsyncPath(tmp)
        // Swap in: an existing artifact is moved aside, the new one renamed into place, the old deleted.
        do { try DurableFiles.replaceDirectory(directory, with: tmp) } catch { throw ModelError.writeFailed(directory.path, reason: "\(error)") }
        return manifest
    }

    /// Reads and verifies an artifact's manifest and file checksums (no weights are built).
    public static func verifiedManifest(directory: URL) throws -> ArtifactManifest {
        let manifestURL = directory.appendingPathComponent("manifest.json")
        let data = try readFile(manifestURL)
        let manifest: ArtifactManifest
        do { manifest = try JSONDecoder().decode(ArtifactManifest.self, from: data) } catch {
            throw ModelError.invalidFile(manifestURL.path, reason: "not a newsd artifact manifest: \(error)")
        }
        guard manifest.format == format else {
            throw ModelError.unsupported("\(manifestURL.path): artifact format \(manifest.format) (this newsd reads \(format))")
        }
        var unsigned = manifest
        unsigned.checksum = ""
        let actual = SHA256.hex(of: try canonical(unsigned))
        guard actual == manifest.checksum else {
            throw ModelError.checksumMismatch(manifestURL.path, expected: manifest.checksum, actual: actual)
        }
        for name in ["weights.safetensors", "vocab.txt", "config.json"] {
            guard let expected = manifest.files[name] else {
                throw ModelError.invalidFile(manifestURL.path, reason: "lists no checksum for \(name)")
            }
            let url = directory.appendingPathComponent(name)
            let got = SHA256.hex(of: try readFile(url))
            guard got == expected else { throw ModelError.checksumMismatch(url.path, expected: expected, actual: got) }
        }
        guard !manifest.labels.isEmpty, Set(manifest.labels).count == manifest.labels.count else {
            throw ModelError.invalidFile(manifestURL.path, reason: "labels \(manifest.labels) are empty or repeated")
        }
        guard manifest.temperature.isFinite, manifest.temperature > 0 else {
            throw ModelError.invalidFile(manifestURL.path, reason: "temperature \(manifest.temperature) is not positive")
        }
        if let e = manifest.earlyExit {
            guard e.afterLayers.allSatisfy({ (1..<manifest.base.config.numLayers).contains($0) }), Set(e.afterLayers).count == e.afterLayers.count,
                  e.threshold.isFinite, e.threshold > 0 else {
                throw ModelError.invalidFile(manifestURL.path, reason: "early exit after layers \(e.afterLayers) with threshold \(e.threshold): layers must be distinct and inside the encoder, the threshold positive")
            }
        }
        return manifest
    }

    /// Loads a model from an artifact directory, or from a bare base checkpoint directory (encoder
    /// only, untrained head). The base is looked up at `baseDirectory`, else at the path recorded
    /// in the manifest, else at `NEWSD_BASE_MODEL_DIR` (a host that keeps it elsewhere), and must
    /// have the recorded checksum. Nothing is returned unless every check passes.
    /// The encoder computes with `precision` (int8 quantises the loaded weights once, here).
    /// `cacheCapacity` > 0 gives the model a cache of that many predictions (serving hosts).
    /// `earlyExit: false` ignores the artifact's intermediate classifiers (every layer runs).
    /// `servingOnly: true` (serving hosts) makes an int8 model keep only what its encoder computes
    /// from, not the float weights: a quarter of the memory, and the base checkpoint is released
    /// when nothing else uses it (`CheckpointCache`); such a model cannot train or be saved. With
    /// fp32 it changes nothing (fp32 computes from the float weights).
    public static func load(directory: URL, baseDirectory: URL? = nil, threads: Int, precision: EncoderPrecision = .fp32,
                            cacheCapacity: Int = 0, earlyExit useEarlyExit: Bool = true, servingOnly: Bool = false) throws -> StudentModel {
        let fm = FileManager.default
        if !fm.fileExists(atPath: directory.appendingPathComponent("manifest.json").path) {
            guard fm.fileExists(atPath: directory.appendingPathComponent("model.safetensors").path) else {
                throw ModelError.missingFile(directory.appendingPathComponent("manifest.json").path,
                                             underlying: "neither a newsd artifact (manifest.json) nor a base checkpoint (model.safetensors)")
            }
            return StudentModel(base: try CheckpointCache.shared.checkpoint(directory), threads: threads, precision: precision,
                                cacheCapacity: cacheCapacity, keepingFloatWeights: !servingOnly)
        }
        let manifest = try verifiedManifest(directory: directory)
        let candidates = [baseDirectory?.path, manifest.base.path, ProcessInfo.processInfo.environment["NEWSD_BASE_MODEL_DIR"]].compactMap { $0 }
        guard let basePath = candidates.first(where: { fm.fileExists(atPath: $0 + "/model.safetensors") }) else {
            throw ModelError.missingFile(manifest.base.path, underlying: "base checkpoint of \(directory.path) not found (looked in \(candidates))")
        }
        let base = try CheckpointCache.shared.checkpoint(URL(fileURLWithPath: basePath))
        guard base.weightsChecksum == manifest.base.weightsSHA256 else {
            throw ModelError.checksumMismatch(basePath + "/model.safetensors", expected: manifest.base.weightsSHA256, actual: base.weightsChecksum)
        }
        guard base.config == manifest.base.config else {
            throw ModelError.invalidFile(basePath + "/config.json", reason: "architecture differs from the one \(directory.path) was trained on")
        }
        let vocabURL = directory.appendingPathComponent("vocab.txt")
        let tokenizer = try WordPieceTokenizer(vocabularyFile: vocabURL, settings: manifest.tokenizer)
        let weightsURL = directory.appendingPathComponent("weights.safetensors")
        let tensors = try SafeTensors.read(weightsURL)
        let c = base.config
        let expectedNames = Set(base.weights.namedTensors(embeddings: manifest.trainedEmbeddings, layers: manifest.trainedLayers).keys)
            .union(["classifier.weight", "classifier.bias"])
            .union((manifest.earlyExit?.afterLayers ?? []).flatMap { ["exit.\($0).weight", "exit.\($0).bias"] })
        guard Set(tensors.keys) == expectedNames else {
            let missing = expectedNames.subtracting(tensors.keys).sorted(), extra = Set(tensors.keys).subtracting(expectedNames).sorted()
            throw ModelError.invalidFile(weightsURL.path, reason: "tensors do not match the manifest (missing \(missing.prefix(3)), unexpected \(extra.prefix(3)))")
        }
        guard manifest.trainedLayers.allSatisfy({ (0..<c.numLayers).contains($0) }) else {
            throw ModelError.invalidFile(directory.appendingPathComponent("manifest.json").path, reason: "trained layers \(manifest.trainedLayers) outside 0..<\(c.numLayers)")
        }
        let encoderTensors = tensors.filter { !$0.key.hasPrefix("classifier.") && !$0.key.hasPrefix("exit.") }
        let weights = try EncoderWeights(config: c, tensors: encoderTensors, path: weightsURL.path, requireAll: false, base: base.weights,
                                         sharing: Set(manifest.trainedLayers), sharingEmbeddings: manifest.trainedEmbeddings)
        let cls = manifest.labels.count
        func classifier(_ prefix: String) throws -> ClassifierHead {
            guard let w = tensors[prefix + ".weight"], w.shape == [cls, c.hiddenSize],
                  let b = tensors[prefix + ".bias"], b.shape == [cls] else {
                throw ModelError.invalidFile(weightsURL.path, reason: "\(prefix) head is not [\(cls), \(c.hiddenSize)] + [\(cls)] for labels \(manifest.labels)")
            }
            guard (w.values + b.values).allSatisfy(\.isFinite) else {
                throw ModelError.invalidFile(weightsURL.path, reason: "\(prefix) head has non-finite values")
            }
            return ClassifierHead(classes: cls, hidden: c.hiddenSize, parameters: FloatBuffer(w.values + b.values))
        }
        let head = try classifier("classifier")
        let earlyExit = try manifest.earlyExit.map { e in
            EarlyExit(exits: try e.afterLayers.map { EarlyExit.Exit(afterLayers: $0, head: try classifier("exit.\($0)")) }, threshold: e.threshold)
        }
        return StudentModel(labels: manifest.labels, tokenizer: tokenizer, weights: weights, head: head,
                            temperature: manifest.temperature, threads: threads, manifest: manifest, baseChecksum: base.weightsChecksum,
                            precision: precision, cacheCapacity: cacheCapacity, earlyExit: useEarlyExit ? earlyExit : nil,
                            keepingFloatWeights: !servingOnly)
    }

    static func readFile(_ url: URL) throws -> Data {
        do { return try Data(contentsOf: url) } catch { throw ModelError.missingFile(url.path, underlying: "\(error)") }
    }

    static func writeSynced(_ data: Data, to url: URL) throws {
        do { try DurableFiles.writeSynced(data, to: url) } catch { throw ModelError.writeFailed(url.path, reason: "\(error)") }
    }

    static func fsyncPath(_ url: URL) throws {
        do { try DurableFiles.fsyncPath(url) } catch { throw ModelError.writeFailed(url.path, reason: "\(error)") }
    }
}

/// Loaded base checkpoints, by directory, size and modification time: a base is loaded and
/// hashed once for everything that uses it at the same time (models sharing its layers, a
/// training run), not once per user.
///
/// The float weights are held weakly: they stay while a model built on them (its untrained
/// layers are the base's buffers), a training run or a caller holds them, and go when none does.
/// A serving-only int8 host therefore keeps no float copy at all; it reloads the base (about a
/// second) only when the next model is promoted.
public final class CheckpointCache: Sendable {
    /// The process-wide cache.
    public static let shared = CheckpointCache()
    private struct Entry: Sendable {
        var stamp: String
        var directory: URL, config: BertConfig, tokenizer: WordPieceTokenizer, weightsChecksum: String
        weak var weights: EncoderWeights?
    }
    /// Held while a checkpoint loads, so two callers never load the same one twice.
    private let entries = LockedValue([String: Entry]())

    /// The checkpoint in `directory`, loaded once while its weights file is unchanged and its
    /// weights are in use.
    public func checkpoint(_ directory: URL) throws -> Checkpoint {
        let weights = directory.appendingPathComponent("model.safetensors").path
        let attributes = try? FileManager.default.attributesOfItem(atPath: weights)
        let stamp = "\(attributes?[.size] ?? 0)-\((attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0)"
        return try entries.withLock { entries in
            let key = directory.standardizedFileURL.path
            if let e = entries[key], e.stamp == stamp, let w = e.weights {
                return Checkpoint(directory: e.directory, config: e.config, weights: w, tokenizer: e.tokenizer, weightsChecksum: e.weightsChecksum)
            }
            let c = try Checkpoint(directory: directory)
            entries[key] = Entry(stamp: stamp, directory: c.directory, config: c.config, tokenizer: c.tokenizer,
                                 weightsChecksum: c.weightsChecksum, weights: c.weights)
            return c
        }
    }

    /// Whether the checkpoint of `directory` is loaded now (its weights in use).
    public func isLoaded(_ directory: URL) -> Bool {
        entries.withLock { $0[directory.standardizedFileURL.path]?.weights != nil }
    }
}
