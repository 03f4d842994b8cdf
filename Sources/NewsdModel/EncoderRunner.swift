import Dispatch
import Foundation
import NewsdSystem

/// Per-thread buffers for inference: one set of layer activations reused by every layer, and two
/// hidden-state buffers used in turn as a layer's input and output.
final class InferenceWorkspace {
    let activations = LayerActivations(saveForBackward: false)
    var hiddenA = Scratch(), hiddenB = Scratch()
    let int8 = Int8Workspace()
    let rowsIn = QuantizedRows()
}

/// Runs a frozen encoder over many token sequences: length-sorted batches, each split into one
/// sub-batch per thread. Calls are serialised (the workspaces are per runner, not per call).
///
/// `@unchecked Sendable`: the workspaces are the only mutable state; `lock` is held for a whole
/// call, and inside it each worker thread uses only its own workspace.
public final class EncoderRunner: @unchecked Sendable {
    /// The architecture.
    public let config: BertConfig
    /// The float weights; never mutated. Nil for a serving-only int8 runner, which computes from
    /// `quantized` alone (a quarter of the memory); fp32 always has them.
    public let floatWeights: EncoderWeights?
    /// Worker threads per batch.
    public let threads: Int
    /// The vector-kernel build this runner uses (from the CPU's flags unless given).
    public let vector: VectorKernels
    /// fp32 (the training forward pass) or int8 on a kernel path.
    public let precision: EncoderPrecision
    /// The int8 weights, quantised once here when `precision` is int8.
    public let quantized: QuantizedEncoder?
    private let workspaces: [InferenceWorkspace]
    private let lock = NSLock()

    /// A runner over `weights` with `threads` worker threads (at least 1). An int8 precision
    /// quantises the encoder now; a path this CPU cannot run falls back to the portable one.
    /// `keepingFloatWeights: false` lets an int8 runner drop its reference to the float weights
    /// (serving hosts: nothing reads them again); fp32 keeps them whatever it says.
    public init(weights: EncoderWeights, threads: Int, vector: VectorKernels = .detected, precision: EncoderPrecision = .fp32,
                keepingFloatWeights: Bool = true) {
        _ = BLAS.configured
        config = weights.config
        self.threads = max(1, threads)
        self.vector = vector
        switch precision {
        case .fp32:
            self.precision = .fp32
            quantized = nil
            floatWeights = weights
        case .int8(let wanted):
            let path = wanted.runs(on: .host) ? wanted : .portable
            self.precision = .int8(path)
            quantized = QuantizedEncoder(weights, path: path)
            floatWeights = keepingFloatWeights ? weights : nil
        }
        workspaces = (0..<max(1, threads)).map { _ in InferenceWorkspace() }
    }

    /// Bytes of the float weights this runner holds (embeddings, matrices, biases, LayerNorm);
    /// 0 for a serving-only int8 runner.
    public var floatBytes: Int { floatWeights.map { 4 * ($0.embeddings.count + $0.layers.reduce(0) { $0 + $1.count }) } ?? 0 }

    /// Bytes of the int8 matrices (0 for fp32): a quarter of the float matrices'.
    public var int8Bytes: Int { quantized?.int8Bytes ?? 0 }

    /// Bytes of every weight this runner holds: the float weights when kept, plus the quantised
    /// encoder (int8 matrices and word embeddings, scales, float copies of the small tensors).
    public var residentBytes: Int { floatBytes + (quantized?.residentBytes ?? 0) }

    /// Mean-pooled encoder outputs, one `[H]` vector per sequence, in input order.
    public func pooled(_ sequences: [[Int32]], batchSize: Int) -> [[Float]] {
        let h = config.hiddenSize
        var result = [[Float]](repeating: [], count: sequences.count)
        result.withUnsafeMutableBufferPointer { out in
            run(sequences, layers: config.numLayers, batchSize: batchSize) { index, shape, bi, hidden in
                out[index] = Self.meanPool(hidden, shape: shape, bi: bi, h: h)
            }
        }
        return result
    }

    /// Mean-pooled hidden states after each layer count in `layers` (1...L; L is the encoder's
    /// output): `result[k][i]` is sequence i's vector after `layers[k]` layers. One pass.
    public func pooled(_ sequences: [[Int32]], atLayers layers: [Int], batchSize: Int) -> [[[Float]]] {
        let h = config.hiddenSize, deepest = layers.max() ?? 0
        let slot = Dictionary(layers.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        let result = (0..<layers.count).map { _ in UnsafeMutableBufferPointer<[Float]>.allocate(capacity: sequences.count) }
        defer { result.forEach { $0.deallocate() } }
        for r in result { r.initialize(repeating: []) }
        let store: (Int, Int, BatchShape, Int, ConstFloatPointer) -> Void = { index, depth, shape, bi, hidden in
            if let k = slot[depth] { result[k][index] = Self.meanPool(hidden, shape: shape, bi: bi, h: h) }
        }
        run(sequences, layers: deepest, batchSize: batchSize, exit: { index, depth, shape, bi, hidden in
            store(index, depth, shape, bi, hidden)
            return false
        }) { index, shape, bi, hidden in store(index, deepest, shape, bi, hidden) }
        return result.map { Array($0) }
    }

    /// Logits of every sequence through `head`, in input order, with the layers each one ran.
    /// With `exits`, a sequence stops after the first intermediate layer whose classifier is
    /// at least `exits.threshold` sure (its logits are then that classifier's, already
    /// calibrated); the others run every layer. A sequence's result never depends on the other
    /// sequences of its batch.
    public func classify(_ sequences: [[Int32]], batchSize: Int, head: ClassifierHead, exits: EarlyExit?) -> [EncoderOutput] {
        let c = config, h = c.hiddenSize
        var byDepth: [Int: ClassifierHead] = [:]
        for e in exits?.exits ?? [] where e.afterLayers < c.numLayers { byDepth[e.afterLayers] = e.head }
        let threshold = exits?.threshold ?? 2
        var result = [EncoderOutput](repeating: EncoderOutput(logits: [], layers: 0), count: sequences.count)
        result.withUnsafeMutableBufferPointer { buffer in
            let out = buffer   // a copy: the exit closure escapes (it is optional)
            run(sequences, layers: c.numLayers, batchSize: batchSize, exit: byDepth.isEmpty ? nil : { index, depth, shape, bi, hidden in
                guard let exitHead = byDepth[depth] else { return false }
                let logits = exitHead.logits(Self.meanPool(hidden, shape: shape, bi: bi, h: h))
                guard (softmax(logits).max() ?? 0) >= threshold else { return false }
                out[index] = EncoderOutput(logits: logits, layers: depth)
                return true
            }) { index, shape, bi, hidden in
                out[index] = EncoderOutput(logits: head.logits(Self.meanPool(hidden, shape: shape, bi: bi, h: h)), layers: c.numLayers)
            }
        }
        return result
    }

    /// The mean of sequence `bi`'s rows of x.
    static func meanPool(_ x: ConstFloatPointer, shape: BatchShape, bi: Int, h: Int) -> [Float] {
        var v = [Float](repeating: 0, count: h)
        let len = shape.lengths[bi]
        for t in 0..<len { let row = x + (shape.offsets[bi] + t) * h; for i in 0..<h { v[i] += row[i] } }
        let inv = 1 / Float(max(len, 1))
        for i in 0..<h { v[i] *= inv }
        return v
    }

    /// Hidden states after the first `layers` layers (0 = embeddings), `[length * H]` per sequence.
    func hiddenStates(_ sequences: [[Int32]], layers: Int, batchSize: Int) -> [[Float]] {
        let h = config.hiddenSize
        var result = [[Float]](repeating: [], count: sequences.count)
        result.withUnsafeMutableBufferPointer { out in
            run(sequences, layers: layers, batchSize: batchSize) { index, shape, bi, hidden in
                out[index] = Array(UnsafeBufferPointer(start: hidden + shape.offsets[bi] * h, count: shape.lengths[bi] * h))
            }
        }
        return result
    }

    /// Sorts by length and cuts the sequences into chunks of `batchSize / threads` (a batch is
    /// shared by the threads); the threads take chunks from a shared counter, longest first, so
    /// no thread waits for another between batches and the last chunks (the shortest) even out
    /// the end of a call. Hands each sequence's output rows to
    /// `emit(originalIndex, shape, rowInChunk, hidden)`, on worker threads, for distinct indices.
    /// `exit(originalIndex, layersDone, shape, row, hidden)`, when given, runs after every layer
    /// but the last for each sequence still running; `true` means the sequence is finished (the
    /// closure has recorded its result) and it is dropped from the rest of the pass.
    private func run(_ sequences: [[Int32]], layers: Int, batchSize: Int,
                     exit: ((Int, Int, BatchShape, Int, ConstFloatPointer) -> Bool)? = nil,
                     emit: (Int, BatchShape, Int, ConstFloatPointer) -> Void) {
        lock.lock(); defer { lock.unlock() }
        let order = sequences.indices.sorted { sequences[$0].count < sequences[$1].count }
        let chunk = max(1, batchSize / threads)
        let chunks = stride(from: 0, to: order.count, by: chunk).map { Array(order[$0..<min(order.count, $0 + chunk)]) }
        let workers = min(threads, chunks.count)
        guard workers > 0 else { return }
        let counter = ChunkCounter()
        withoutActuallyEscaping(emit) { emit in
            let emitBox = UnsafeSendable(emit), exitBox = UnsafeSendable(exit)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                while let c = counter.next(below: chunks.count) {
                    // Longest chunks first: the last ones taken are the shortest, so the threads
                    // end together (shortest first left one thread alone on the longest chunk).
                    let members = chunks[chunks.count - 1 - c]
                    let memberExit: ((Int, Int, BatchShape, Int, ConstFloatPointer) -> Bool)? = exitBox.value.map { exit in
                        { member, depth, shape, bi, hidden in exit(members[member], depth, shape, bi, hidden) }
                    }
                    self.forward(members.map { sequences[$0] }, layers: layers, workspace: self.workspaces[worker], exit: memberExit) { member, shape, bi, hidden in
                        emitBox.value(members[member], shape, bi, hidden)
                    }
                }
            }
        }
    }

    /// Embeddings and the first `layers` layers of one packed sub-batch, on the calling thread.
    /// `body(member, shape, row, hidden)` gets each sequence that ran every layer (`member` is
    /// its index in `batch`, `row` its index in `shape`). With `exit` (see `run`), sequences that
    /// finish early are removed between layers: the rows of the others are moved together, so
    /// the following layers compute only for sequences still running.
    func forward(_ batch: [[Int32]], layers: Int, workspace ws: InferenceWorkspace,
                 exit: ((Int, Int, BatchShape, Int, ConstFloatPointer) -> Bool)? = nil,
                 body: (Int, BatchShape, Int, ConstFloatPointer) -> Void) {
        let c = config, h = c.hiddenSize
        var shape = BatchShape(lengths: batch.map { max(1, min($0.count, c.maxPositions)) }, heads: c.numHeads)
        var members = Array(batch.indices)
        var ids: [Int32] = []
        ids.reserveCapacity(shape.n)
        for (bi, seq) in batch.enumerated() { ids += seq.prefix(shape.lengths[bi]); if seq.isEmpty { ids.append(0) } }
        var x = ws.hiddenA.pointer(shape.n * h), y = ws.hiddenB.pointer(shape.n * h)
        var noDropout = Dropout(rate: 0, rng: SeededGenerator(seed: 0))
        let int8 = quantized.flatMap { q -> (QuantizedEncoder, Int8KernelPath)? in
            if case .int8(let path) = precision { return (q, path) } else { return nil }
        }
        // fp32 always has float weights (init), so exactly one of the two is set.
        let float = int8 == nil ? floatWeights : nil
        if let (q, _) = int8 {
            q.embeddings.forward(c, ids: ids, shape: shape, out: x, vector: vector)
        } else if let float {
            Transformer.embeddingsForward(c, float.embeddings, ids: ids, shape: shape, out: x, saved: nil, dropout: &noDropout, vector: vector)
        }
        func prepare() {
            if let (_, path) = int8 { ws.rowsIn.quantize(path, x: x, n: shape.n, width: h) } else { ws.activations.prepare(c, shape, dropout: false) }
        }
        if layers > 0 { prepare() }
        for l in 0..<layers {
            if let (q, path) = int8 {
                Int8Transformer.layerForward(c, q.layers[l], path: path, x: x, xq: ws.rowsIn, out: y, shape: shape, ws: ws.int8)
            } else if let float {
                Transformer.layerForward(c, float.layers[l], x: x, out: y, a: ws.activations, shape: shape, dropout: &noDropout, vector: vector)
            }
            swap(&x, &y)
            guard let exit, l + 1 < layers else { continue }
            let running = (0..<shape.b).filter { !exit(members[$0], l + 1, shape, $0, x) }
            guard running.count < shape.b else { continue }
            guard !running.isEmpty else { return }
            // Move the running sequences' rows together (destinations never pass their sources).
            var row = 0
            for bi in running {
                if shape.offsets[bi] != row { memmove(x + row * h, x + shape.offsets[bi] * h, shape.lengths[bi] * h * MemoryLayout<Float>.size) }
                row += shape.lengths[bi]
            }
            members = running.map { members[$0] }
            shape = BatchShape(lengths: running.map { shape.lengths[$0] }, heads: c.numHeads)
            // Per-row quantisation: re-quantising the moved rows gives the bytes the layer left.
            prepare()
        }
        for bi in 0..<shape.b { body(members[bi], shape, bi, x) }
    }
}

/// One sequence's logits and the encoder layers it ran (fewer than all after an early exit).
public struct EncoderOutput: Sendable, Equatable {
    /// Logits over the classes.
    public var logits: [Float]
    /// Layers computed for it.
    public var layers: Int
}

/// Carries a non-Sendable value into `concurrentPerform`. `@unchecked Sendable`: no lock; safe
/// because each iteration touches only its own rows and workspace, and the call returns only
/// after every iteration ended (the join is the synchronisation).
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Hands out chunk indices to worker threads.
final class ChunkCounter: Sendable {
    private let value = LockedValue(0)
    func next(below limit: Int) -> Int? {
        value.withLock { v in
            guard v < limit else { return nil }
            v += 1
            return v - 1
        }
    }
}
