import Foundation
import NewsdSystem

/// Hyper-parameters of a BERT-family encoder (Hugging Face `config.json`).
public struct BertConfig: Codable, Sendable, Equatable {
    /// Vocabulary size (rows of the word embedding).
    public var vocabSize: Int
    /// Hidden width H.
    public var hiddenSize: Int
    /// Number of transformer layers L.
    public var numLayers: Int
    /// Number of attention heads; H must be a multiple.
    public var numHeads: Int
    /// Feed-forward width F.
    public var intermediateSize: Int
    /// Number of position embeddings (maximum sequence length).
    public var maxPositions: Int
    /// Number of token-type embeddings.
    public var typeVocabSize: Int
    /// LayerNorm epsilon.
    public var layerNormEps: Float

    /// Creates a configuration.
    public init(vocabSize: Int, hiddenSize: Int, numLayers: Int, numHeads: Int, intermediateSize: Int,
                maxPositions: Int, typeVocabSize: Int = 2, layerNormEps: Float = 1e-12) {
        self.vocabSize = vocabSize
        self.hiddenSize = hiddenSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.intermediateSize = intermediateSize
        self.maxPositions = maxPositions
        self.typeVocabSize = typeVocabSize
        self.layerNormEps = layerNormEps
    }

    /// Reads a Hugging Face `config.json`, checking that it describes a supported BERT encoder.
    public init(huggingFace url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw ModelError.missingFile(url.path, underlying: "\(error)") }
        guard let json = (try? JSONDecoder().decode(JSONValue.self, from: data))?.object else {
            throw ModelError.invalidFile(url.path, reason: "not a JSON object")
        }
        func int(_ key: String, default value: Int? = nil) throws -> Int {
            if let v = json[key]?.int { return v }
            if let value { return value }
            throw ModelError.invalidFile(url.path, reason: "missing integer key \(key)")
        }
        let act = json["hidden_act"]?.string ?? "gelu"
        guard act == "gelu" else { throw ModelError.unsupported("\(url.path): hidden_act \(act) (only gelu)") }
        if let p = json["position_embedding_type"]?.string, p != "absolute" {
            throw ModelError.unsupported("\(url.path): position_embedding_type \(p) (only absolute)")
        }
        self.init(vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"),
                  numLayers: try int("num_hidden_layers"), numHeads: try int("num_attention_heads"),
                  intermediateSize: try int("intermediate_size"), maxPositions: try int("max_position_embeddings", default: 512),
                  typeVocabSize: try int("type_vocab_size", default: 2),
                  layerNormEps: json["layer_norm_eps"]?.double.map(Float.init) ?? 1e-12)
        try validate(path: url.path)
    }

    /// Checks internal consistency.
    public func validate(path: String = "config") throws {
        guard hiddenSize > 0, numLayers > 0, numHeads > 0, intermediateSize > 0, vocabSize > 0, maxPositions > 0 else {
            throw ModelError.invalidFile(path, reason: "sizes must be positive")
        }
        guard hiddenSize % numHeads == 0 else {
            throw ModelError.invalidFile(path, reason: "hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(numHeads)")
        }
    }

    /// Size of one attention head.
    public var headSize: Int { hiddenSize / numHeads }
    /// Floats in one layer's parameter block.
    var layerParameterCount: Int { LayerLayout(self).count }
    /// Floats in the embedding block.
    var embeddingParameterCount: Int { EmbeddingLayout(self).count }
    /// Total encoder parameters.
    public var parameterCount: Int { embeddingParameterCount + numLayers * layerParameterCount }
}

/// Offsets of one transformer layer's tensors inside its contiguous parameter block.
struct LayerLayout {
    let h: Int, f: Int
    let wqkv: Int, bqkv: Int, wo: Int, bo: Int, ln1g: Int, ln1b: Int
    let w1: Int, b1: Int, w2: Int, b2: Int, ln2g: Int, ln2b: Int
    let count: Int

    init(_ c: BertConfig) {
        h = c.hiddenSize; f = c.intermediateSize
        var o = 0
        func take(_ n: Int) -> Int { defer { o += n }; return o }
        wqkv = take(3 * h * h); bqkv = take(3 * h)   // rows: query, key, value
        wo = take(h * h); bo = take(h); ln1g = take(h); ln1b = take(h)
        w1 = take(f * h); b1 = take(f); w2 = take(h * f); b2 = take(h); ln2g = take(h); ln2b = take(h)
        count = o
    }

    /// Ranges that get weight decay (matrices; not biases or LayerNorm).
    var decayed: [Range<Int>] { [wqkv..<(wqkv + 3 * h * h), wo..<(wo + h * h), w1..<(w1 + f * h), w2..<(w2 + h * f)] }

    /// Hugging Face tensor names, their offsets and shapes (q/k/v are thirds of `wqkv`/`bqkv`).
    func tensors(layer l: Int) -> [(name: String, offset: Int, shape: [Int])] {
        let p = "encoder.layer.\(l)."
        return [
            (p + "attention.self.query.weight", wqkv, [h, h]), (p + "attention.self.key.weight", wqkv + h * h, [h, h]),
            (p + "attention.self.value.weight", wqkv + 2 * h * h, [h, h]),
            (p + "attention.self.query.bias", bqkv, [h]), (p + "attention.self.key.bias", bqkv + h, [h]),
            (p + "attention.self.value.bias", bqkv + 2 * h, [h]),
            (p + "attention.output.dense.weight", wo, [h, h]), (p + "attention.output.dense.bias", bo, [h]),
            (p + "attention.output.LayerNorm.weight", ln1g, [h]), (p + "attention.output.LayerNorm.bias", ln1b, [h]),
            (p + "intermediate.dense.weight", w1, [f, h]), (p + "intermediate.dense.bias", b1, [f]),
            (p + "output.dense.weight", w2, [h, f]), (p + "output.dense.bias", b2, [h]),
            (p + "output.LayerNorm.weight", ln2g, [h]), (p + "output.LayerNorm.bias", ln2b, [h]),
        ]
    }
}

/// Offsets of the embedding tensors inside their contiguous block.
struct EmbeddingLayout {
    let word: Int, position: Int, type: Int, lng: Int, lnb: Int, count: Int
    let h: Int, v: Int, p: Int, t: Int

    init(_ c: BertConfig) {
        h = c.hiddenSize; v = c.vocabSize; p = c.maxPositions; t = c.typeVocabSize
        word = 0; position = v * h; type = position + p * h; lng = type + t * h; lnb = lng + h; count = lnb + h
    }

    var decayed: [Range<Int>] { [0..<lng] }

    func tensors() -> [(name: String, offset: Int, shape: [Int])] {
        [("embeddings.word_embeddings.weight", word, [v, h]), ("embeddings.position_embeddings.weight", position, [p, h]),
         ("embeddings.token_type_embeddings.weight", type, [t, h]),
         ("embeddings.LayerNorm.weight", lng, [h]), ("embeddings.LayerNorm.bias", lnb, [h])]
    }
}

/// A BERT encoder's weights: one contiguous block for the embeddings and one per layer.
/// Immutable once built when used for inference (shared by all inference threads).
///
/// `@unchecked Sendable` without a lock: the buffers are written only while the weights are built
/// (before they are shared) and by a `Trainer` on its own `copy()`; shared instances are read-only.
public final class EncoderWeights: @unchecked Sendable {
    /// The architecture.
    public let config: BertConfig
    let embeddings: FloatBuffer
    let layers: [FloatBuffer]
    /// The weights these share buffers with (an artifact's untrained layers are its base's). Kept
    /// so the base stays loaded, and found by `CheckpointCache`, while any model built on it lives.
    let sharedBase: EncoderWeights?

    init(config: BertConfig, embeddings: FloatBuffer, layers: [FloatBuffer], sharedBase: EncoderWeights? = nil) {
        self.config = config
        self.embeddings = embeddings
        self.layers = layers
        self.sharedBase = sharedBase
    }

    /// Random weights (normal, std 0.02; LayerNorm gain 1), for tests and tiny experiments.
    public convenience init(random config: BertConfig, seed: UInt64) {
        var rng = SeededGenerator(seed: seed)
        let e = EmbeddingLayout(config), l = LayerLayout(config)
        let emb = FloatBuffer(count: e.count)
        for i in 0..<e.lng { emb.pointer[i] = 0.02 * rng.nextGaussian() }
        for i in 0..<config.hiddenSize { emb.pointer[e.lng + i] = 1 + 0.1 * rng.nextGaussian(); emb.pointer[e.lnb + i] = 0.1 * rng.nextGaussian() }
        var layers: [FloatBuffer] = []
        for _ in 0..<config.numLayers {
            let b = FloatBuffer(count: l.count)
            for i in 0..<l.count { b.pointer[i] = 0.1 * rng.nextGaussian() }
            for i in 0..<config.hiddenSize { b.pointer[l.ln1g + i] += 1; b.pointer[l.ln2g + i] += 1 }
            layers.append(b)
        }
        self.init(config: config, embeddings: emb, layers: layers)
    }

    /// A deep copy (training mutates its own copy while the original keeps serving).
    func copy() -> EncoderWeights {
        EncoderWeights(config: config, embeddings: embeddings.copy(), layers: layers.map { $0.copy() })
    }

    /// Loads `model.safetensors` for `config`, checking every tensor's presence and shape.
    /// Names may carry a `bert.` prefix (as in `BertForSequenceClassification` checkpoints).
    public convenience init(config: BertConfig, safetensors url: URL) throws {
        try self.init(config: config, tensors: try SafeTensors.read(url), path: url.path, requireAll: true, base: nil)
    }

    /// Builds weights from named tensors; with `base`, tensors absent from `tensors` come from it.
    /// With `base`, only the layers in `sharing` (and the embeddings when `sharingEmbeddings`) are
    /// copied and overwritten; the others share the base's (immutable) buffers.
    convenience init(config: BertConfig, tensors raw: [String: NamedTensor], path: String, requireAll: Bool,
                     base: EncoderWeights?, sharing overridden: Set<Int>? = nil, sharingEmbeddings: Bool = true) throws {
        var tensors: [String: NamedTensor] = [:]
        for (k, v) in raw { tensors[k.hasPrefix("bert.") ? String(k.dropFirst(5)) : k] = v }
        func fill(_ buffer: FloatBuffer, _ name: String, _ offset: Int, _ shape: [Int]) throws -> Bool {
            guard let t = tensors[name] else {
                if requireAll { throw ModelError.invalidFile(path, reason: "missing tensor \(name)") }
                return false
            }
            guard t.shape == shape else {
                throw ModelError.invalidFile(path, reason: "tensor \(name) has shape \(t.shape), config.json implies \(shape)")
            }
            t.values.withUnsafeBufferPointer { (buffer.pointer + offset).update(from: $0.baseAddress!, count: t.values.count) }
            return true
        }
        let el = EmbeddingLayout(config), ll = LayerLayout(config)
        let emb: FloatBuffer
        if let base, !sharingEmbeddings { emb = base.embeddings } else {
            emb = base?.embeddings.copy() ?? FloatBuffer(count: el.count)
            for t in el.tensors() { _ = try fill(emb, t.name, t.offset, t.shape) }
        }
        var layers: [FloatBuffer] = []
        for l in 0..<config.numLayers {
            if let base, let overridden, !overridden.contains(l) { layers.append(base.layers[l]); continue }
            let b = base?.layers[l].copy() ?? FloatBuffer(count: ll.count)
            for t in ll.tensors(layer: l) { _ = try fill(b, t.name, t.offset, t.shape) }
            layers.append(b)
        }
        for b in layers.filter({ l in !(base?.layers.contains { $0 === l } ?? false) }) + (emb === base?.embeddings ? [] : [emb]) {
            guard UnsafeBufferPointer(start: b.pointer, count: b.count).allSatisfy(\.isFinite) else {
                throw ModelError.invalidFile(path, reason: "weights contain NaN or infinity")
            }
        }
        if requireAll, tensors["encoder.layer.\(config.numLayers).attention.self.query.weight"] != nil {
            throw ModelError.invalidFile(path, reason: "has more layers than num_hidden_layers \(config.numLayers)")
        }
        // Keep the base only when a buffer is shared with it (a fully trained artifact copies all).
        let shares = base.map { b in emb === b.embeddings || layers.contains { l in b.layers.contains { $0 === l } } } ?? false
        self.init(config: config, embeddings: emb, layers: layers, sharedBase: shares ? base : nil)
    }

    /// Named tensors (Hugging Face names) of the embeddings (when `embeddings`) and the given layers.
    func namedTensors(embeddings includeEmbeddings: Bool, layers indices: some Sequence<Int>) -> [String: NamedTensor] {
        var out: [String: NamedTensor] = [:]
        func add(_ buffer: FloatBuffer, _ name: String, _ offset: Int, _ shape: [Int]) {
            out[name] = NamedTensor(shape: shape, values: Array(UnsafeBufferPointer(start: buffer.pointer + offset, count: shape.reduce(1, *))))
        }
        if includeEmbeddings { for t in EmbeddingLayout(config).tensors() { add(embeddings, t.name, t.offset, t.shape) } }
        let ll = LayerLayout(config)
        for l in indices { for t in ll.tensors(layer: l) { add(layers[l], t.name, t.offset, t.shape) } }
        return out
    }
}

/// A base checkpoint directory: `config.json`, `model.safetensors`, `vocab.txt`.
public struct Checkpoint: Sendable {
    /// The directory.
    public let directory: URL
    /// Its architecture.
    public let config: BertConfig
    /// Its weights.
    public let weights: EncoderWeights
    /// Its tokenizer.
    public let tokenizer: WordPieceTokenizer
    /// SHA-256 of `model.safetensors`; artifacts record it to refuse a mismatched base.
    public let weightsChecksum: String

    /// A checkpoint from its parts (`CheckpointCache` re-assembles one whose weights are alive).
    init(directory: URL, config: BertConfig, weights: EncoderWeights, tokenizer: WordPieceTokenizer, weightsChecksum: String) {
        self.directory = directory
        self.config = config
        self.weights = weights
        self.tokenizer = tokenizer
        self.weightsChecksum = weightsChecksum
    }

    /// Loads and checks a checkpoint directory; errors name the file at fault.
    public init(directory: URL, tokenizerSettings: TokenizerSettings? = nil) throws {
        self.directory = directory
        let fm = FileManager.default
        for name in ["config.json", "model.safetensors", "vocab.txt"] where !fm.fileExists(atPath: directory.appendingPathComponent(name).path) {
            throw ModelError.missingFile(directory.appendingPathComponent(name).path, underlying: "no such file (a BERT checkpoint directory needs config.json, model.safetensors and vocab.txt)")
        }
        config = try BertConfig(huggingFace: directory.appendingPathComponent("config.json"))
        let weightsURL = directory.appendingPathComponent("model.safetensors")
        weightsChecksum = try SHA256.hex(ofFile: weightsURL)
        // The published digests, when recorded (scripts/install-model.sh writes them from the
        // package's RECORD into `<dir>.sha256sums`; a checkpoint may carry its own SHA256SUMS):
        // a damaged or swapped base is refused before anything is built from it.
        for sums in [directory.appendingPathComponent("SHA256SUMS"), URL(fileURLWithPath: directory.path + ".sha256sums")]
        where fm.fileExists(atPath: sums.path) {
            for (name, expected) in try Self.readSums(sums) {
                let file = directory.appendingPathComponent(name)
                let actual = name == "model.safetensors" ? weightsChecksum : try SHA256.hex(ofFile: file)
                guard actual == expected else { throw ModelError.checksumMismatch(file.path, expected: expected, actual: actual) }
            }
        }
        weights = try EncoderWeights(config: config, safetensors: weightsURL)
        var settings = tokenizerSettings ?? TokenizerSettings()
        if tokenizerSettings == nil,
           let data = try? Data(contentsOf: directory.appendingPathComponent("tokenizer_config.json")),
           let json = (try? JSONDecoder().decode(JSONValue.self, from: data))?.object {
            if let lower = json["do_lower_case"]?.bool { settings.lowercase = lower }
            if let strip = json["strip_accents"]?.bool { settings.stripAccents = strip }
            if let cjk = json["tokenize_chinese_chars"]?.bool { settings.splitCJK = cjk }
        }
        settings.maxLength = min(settings.maxLength, config.maxPositions)
        tokenizer = try WordPieceTokenizer(vocabularyFile: directory.appendingPathComponent("vocab.txt"), settings: settings)
        guard tokenizer.vocabularySize <= config.vocabSize else {
            throw ModelError.invalidFile(directory.appendingPathComponent("vocab.txt").path,
                                         reason: "\(tokenizer.vocabularySize) tokens but vocab_size is \(config.vocabSize)")
        }
    }
}

extension Checkpoint {
    /// `sha256sum` format: `<hex>  <file name>` per line.
    static func readSums(_ url: URL) throws -> [(name: String, sha256: String)] {
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch { throw ModelError.missingFile(url.path, underlying: "\(error)") }
        return try text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }.map { line in
            let parts = line.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].count == 64 else { throw ModelError.invalidFile(url.path, reason: "expected \"<sha256 hex>  <file>\" lines, got \(line.prefix(80))") }
            let name = parts[1].trimmingCharacters(in: .whitespaces).trimmingCharacters(in: CharacterSet(charactersIn: "*"))
            guard !name.contains("/") else { throw ModelError.invalidFile(url.path, reason: "\(name): only files of the checkpoint directory") }
            return (name, parts[0].lowercased())
        }
    }

    /// Writes a small random BERT checkpoint (config.json, model.safetensors, vocab.txt) to
    /// `directory`: for tests and development of the pipeline, where model quality is irrelevant.
    public static func writeRandom(to directory: URL, config: BertConfig, vocabulary: [String], seed: UInt64) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let w = EncoderWeights(random: config, seed: seed)
        try SafeTensors.encode(w.namedTensors(embeddings: true, layers: 0..<config.numLayers))
            .write(to: directory.appendingPathComponent("model.safetensors"))
        let json: [String: JSONValue] = [
            "vocab_size": .integer(config.vocabSize), "hidden_size": .integer(config.hiddenSize),
            "num_hidden_layers": .integer(config.numLayers), "num_attention_heads": .integer(config.numHeads),
            "intermediate_size": .integer(config.intermediateSize), "max_position_embeddings": .integer(config.maxPositions),
            "type_vocab_size": .integer(config.typeVocabSize), "layer_norm_eps": .float(Double(config.layerNormEps)),
            "hidden_act": .string("gelu"), "model_type": .string("bert")]
        try JSONText.data(json).write(to: directory.appendingPathComponent("config.json"))
        try (vocabulary.joined(separator: "\n") + "\n").write(to: directory.appendingPathComponent("vocab.txt"), atomically: true, encoding: .utf8)
    }
}
