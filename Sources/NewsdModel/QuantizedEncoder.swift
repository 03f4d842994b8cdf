import Foundation
import NewsdInt8

/// One linear layer's weights quantised for the int8 kernels: per-output-channel symmetric int8,
/// packed in the kernels' 16 x 4 blocks (64-byte aligned), with scales and the per-channel sums
/// the zero-point correction needs. The bias stays float (a copy: the float matrices can go).
///
/// `@unchecked Sendable` without a lock: written once in `init`, read-only afterwards.
final class QuantizedLinear: @unchecked Sendable {
    let outDim: Int, inDim: Int
    let packed: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<Float>
    let colsums: UnsafeMutablePointer<Int32>
    let bias: UnsafeMutablePointer<Float>
    /// Bytes of the packed weights (the serving model's int8 matrices).
    let byteCount: Int

    /// Quantises w[out, in] (Hugging Face layout) for `path` (its weight range); copies b[out].
    init(w: ConstFloatPointer, bias b: ConstFloatPointer, outDim: Int, inDim: Int, path: Int8KernelPath) {
        self.outDim = outDim
        self.inDim = inDim
        byteCount = newsd_int8_packed_size(Int32(outDim), Int32(inDim))
        packed = .allocate(byteCount: byteCount, alignment: 64)
        scales = .allocate(capacity: outDim)
        colsums = .allocate(capacity: outDim)
        bias = .allocate(capacity: outDim)
        bias.initialize(from: b, count: outDim)
        newsd_int8_pack_weights(w, Int32(outDim), Int32(inDim), path.weightMax, packed.assumingMemoryBound(to: Int8.self), scales, colsums)
    }

    deinit {
        packed.deallocate()
        scales.deallocate()
        colsums.deallocate()
        bias.deallocate()
    }

    /// Everything this layer holds: packed weights, scales, column sums, bias.
    var residentBytes: Int { byteCount + outDim * (MemoryLayout<Float>.size * 2 + MemoryLayout<Int32>.size) }

    /// y[n, out] = epilogue(dequantised (a W^T) + bias), `a` quantised by `QuantizedRows`.
    func forward(_ path: Int8KernelPath, a: QuantizedRows, n: Int, epilogue: newsd_int8_epilogue,
                 residual: ConstFloatPointer? = nil, y: FloatPointer) {
        newsd_int8_gemm(path.rawValue, a.bytes, a.activationMax, a.scales, a.zeroPoints, Int32(n), Int32(inDim),
                        packed.assumingMemoryBound(to: Int8.self), scales, colsums, bias, Int32(outDim),
                        Int32(epilogue.rawValue), residual, y)
    }
}

/// The four int8 matrices of one transformer layer and its two LayerNorms (float copies).
/// `@unchecked Sendable`: read-only after `init`.
struct QuantizedLayer: @unchecked Sendable {
    let qkv: QuantizedLinear, output: QuantizedLinear, intermediate: QuantizedLinear, down: QuantizedLinear
    /// [ln1 gain, ln1 bias, ln2 gain, ln2 bias], H each.
    let norms: FloatBuffer

    /// Quantises layer `b` (laid out as `LayerLayout(c)`).
    init(_ c: BertConfig, _ b: FloatBuffer, path: Int8KernelPath) {
        let L = LayerLayout(c), h = c.hiddenSize, f = c.intermediateSize, w = ConstFloatPointer(b.pointer)
        qkv = QuantizedLinear(w: w + L.wqkv, bias: w + L.bqkv, outDim: 3 * h, inDim: h, path: path)
        output = QuantizedLinear(w: w + L.wo, bias: w + L.bo, outDim: h, inDim: h, path: path)
        intermediate = QuantizedLinear(w: w + L.w1, bias: w + L.b1, outDim: f, inDim: h, path: path)
        down = QuantizedLinear(w: w + L.w2, bias: w + L.b2, outDim: h, inDim: f, path: path)
        norms = FloatBuffer(count: 4 * h)
        for (k, offset) in [L.ln1g, L.ln1b, L.ln2g, L.ln2b].enumerated() { (norms.pointer + k * h).update(from: w + offset, count: h) }
    }

    var ln1g: ConstFloatPointer { ConstFloatPointer(norms.pointer) }
    var ln1b: ConstFloatPointer { ConstFloatPointer(norms.pointer + norms.count / 4) }
    var ln2g: ConstFloatPointer { ConstFloatPointer(norms.pointer + norms.count / 2) }
    var ln2b: ConstFloatPointer { ConstFloatPointer(norms.pointer + 3 * norms.count / 4) }

    var int8Bytes: Int { qkv.byteCount + output.byteCount + intermediate.byteCount + down.byteCount }
    var residentBytes: Int { qkv.residentBytes + output.residentBytes + intermediate.residentBytes + down.residentBytes + 4 * norms.count }
}

/// The embeddings for int8 serving. The word table is most of a small encoder's weights (30,522 x
/// 384 floats, 45 MB, in MiniLM-L6): it is kept as int8 with one symmetric scale per row, and a
/// token's row is dequantised when it is looked up. Positions, token types and the LayerNorm stay
/// float (under 1 MB).
///
/// `@unchecked Sendable`: read-only after `init`.
final class QuantizedEmbeddings: @unchecked Sendable {
    let layout: EmbeddingLayout
    let words: UnsafeMutablePointer<Int8>
    let wordScales: UnsafeMutablePointer<Float>
    /// The float embeddings from `layout.position` on: positions, types, LayerNorm gain and bias.
    let rest: FloatBuffer

    /// Quantises the word rows of `e` (laid out as `EmbeddingLayout(c)`) and copies the rest.
    init(_ c: BertConfig, _ e: FloatBuffer) {
        let L = EmbeddingLayout(c), h = L.h
        layout = L
        words = .allocate(capacity: L.v * h)
        wordScales = .allocate(capacity: L.v)
        // Symmetric, 127 steps a side (a lookup has no integer product to keep within 16 bits, so
        // no need for the matrices' +-64), rounded as the matrices are.
        for r in 0..<L.v {
            wordScales[r] = newsd_int8_quantize_symmetric(e.pointer + L.word + r * h, Int32(h), 127, words + r * h)
        }
        rest = FloatBuffer(count: L.count - L.position)
        rest.pointer.update(from: e.pointer + L.position, count: rest.count)
    }

    deinit { words.deallocate(); wordScales.deallocate() }

    var residentBytes: Int { layout.v * layout.h + layout.v * MemoryLayout<Float>.size + rest.count * MemoryLayout<Float>.size }

    /// out[N, H] = LayerNorm(word[id] + position[t] + type[0]) for the packed sequences of `s`,
    /// as `Transformer.embeddingsForward` without dropout, with word rows dequantised.
    func forward(_ c: BertConfig, ids: [Int32], shape s: BatchShape, out: FloatPointer, vector: VectorKernels) {
        let L = layout, h = L.h, base = L.position
        let types = ConstFloatPointer(rest.pointer + (L.type - base))
        for bi in 0..<s.b {
            for t in 0..<s.lengths[bi] {
                let r = s.offsets[bi] + t, id = Int(ids[r])
                let row = out + r * h, q = words + id * h, scale = wordScales[id]
                let p = ConstFloatPointer(rest.pointer + (L.position - base) + t * h)
                for i in 0..<h { row[i] = scale * Float(q[i]) + p[i] + types[i] }
            }
        }
        Kernels.layerNormForward(y: out, mean: nil, rstd: nil, x: out, g: rest.pointer + (L.lng - base), b: rest.pointer + (L.lnb - base),
                                 n: s.n, d: h, eps: c.layerNormEps, vector: vector)
    }
}

/// An encoder quantised once (when a model is loaded or promoted) with everything int8 serving
/// reads: int8 matrices and word embeddings, float copies of the small tensors. It does not need
/// the float weights it was made from, so a serving-only model drops them (a quarter of the memory).
public final class QuantizedEncoder: Sendable {
    /// The architecture.
    public let config: BertConfig
    let embeddings: QuantizedEmbeddings
    let layers: [QuantizedLayer]

    /// The kernel path the matrices are packed for.
    public let path: Int8KernelPath

    /// Quantises every layer of `weights` for `path`.
    public init(_ weights: EncoderWeights, path: Int8KernelPath) {
        config = weights.config
        self.path = path
        embeddings = QuantizedEmbeddings(weights.config, weights.embeddings)
        layers = weights.layers.map { QuantizedLayer(weights.config, $0, path: path) }
    }

    /// Bytes of the int8 matrices.
    public var int8Bytes: Int { layers.reduce(0) { $0 + $1.int8Bytes } }

    /// Bytes of everything held: int8 matrices and word embeddings, scales, float copies.
    public var residentBytes: Int { embeddings.residentBytes + layers.reduce(0) { $0 + $1.residentBytes } }
}

/// Rows of activations quantised to u8 with a scale and zero point each (grows on demand).
final class QuantizedRows {
    private(set) var bytes: UnsafeMutablePointer<UInt8> = .allocate(capacity: 64)
    private(set) var scales: UnsafeMutablePointer<Float> = .allocate(capacity: 16)
    private(set) var zeroPoints: UnsafeMutablePointer<Int32> = .allocate(capacity: 16)
    private var byteCapacity = 64, rowCapacity = 16
    /// The largest value the rows were quantised to (the kernels' `amax`).
    private(set) var activationMax: Int32 = 255

    deinit { bytes.deallocate(); scales.deallocate(); zeroPoints.deallocate() }

    /// Makes room for `n` rows of `width` values (padded as the kernels read them).
    func reserve(rows n: Int, width: Int) {
        let rows = Int(newsd_int8_padded_rows(Int32(n))), need = rows * Int(newsd_int8_row_bytes(Int32(width)))
        if need > byteCapacity {
            bytes.deallocate()
            byteCapacity = need + need / 4
            bytes = .allocate(capacity: byteCapacity)
        }
        if rows > rowCapacity {
            scales.deallocate(); zeroPoints.deallocate()
            rowCapacity = rows + rows / 4
            scales = .allocate(capacity: rowCapacity)
            zeroPoints = .allocate(capacity: rowCapacity)
        }
    }

    /// Quantises x[n, width] to `path`'s activation range.
    func quantize(_ path: Int8KernelPath, x: ConstFloatPointer, n: Int, width: Int) {
        reserve(rows: n, width: width)
        activationMax = path.activationMax
        newsd_int8_quantize_rows(path.rawValue, x, Int32(n), Int32(width), Int32(width), activationMax, bytes, scales, zeroPoints)
    }

    /// y[n, width] = LayerNorm(x) * g + b, and y quantised into these rows like `quantize`.
    func layerNorm(_ path: Int8KernelPath, x: ConstFloatPointer, n: Int, width: Int, gain: ConstFloatPointer, bias: ConstFloatPointer,
                   eps: Float, y: FloatPointer) {
        reserve(rows: n, width: width)
        activationMax = path.activationMax
        newsd_layernorm_quantize(path.rawValue, x, Int32(n), Int32(width), gain, bias, eps, y, activationMax, bytes, scales, zeroPoints)
    }
}

/// Per-thread buffers of the int8 forward pass.
final class Int8Workspace {
    var qkv = Scratch(), ctx = Scratch(), res = Scratch(), x1 = Scratch(), hidden = Scratch(), attention = Scratch()
    let rows = QuantizedRows(), wide = QuantizedRows()
}

enum Int8Transformer {
    /// out[N, H] = layer(x[N, H]) with `xq` the quantised x; leaves the quantised out in `xq`.
    /// Same computation as `Transformer.layerForward` without dropout, with int8 linear layers and
    /// the fused attention kernel.
    static func layerForward(_ c: BertConfig, _ q: QuantizedLayer, path: Int8KernelPath,
                             x: ConstFloatPointer, xq: QuantizedRows, out: FloatPointer, shape s: BatchShape, ws: Int8Workspace) {
        let h = c.hiddenSize, f = c.intermediateSize, n = s.n
        // qkv[N, 3H] = x Wqkv^T + bqkv
        let qkv = ws.qkv.pointer(n * 3 * h)
        q.qkv.forward(path, a: xq, n: n, epilogue: NEWSD_EPILOGUE_BIAS, y: qkv)
        // ctx[N, H]: softmax(Q K^T / sqrt(d)) V per sequence and head, one kernel call per sequence.
        let ctx = ws.ctx.pointer(n * h)
        let maxT = s.lengths.max() ?? 1
        let scratch = ws.attention.pointer((c.headSize + 1) * ((maxT + 15) / 16 * 16))
        let scale = 1 / Float(c.headSize).squareRoot()
        for bi in 0..<s.b {
            newsd_attention(path.rawValue, qkv + s.offsets[bi] * 3 * h, Int32(s.lengths[bi]), Int32(c.numHeads), Int32(c.headSize),
                            scale, ctx + s.offsets[bi] * h, scratch)
        }
        // res1 = x + ctx Wo^T + bo (residual in the epilogue); x1 = LayerNorm(res1), quantised.
        ws.rows.quantize(path, x: ctx, n: n, width: h)
        let res = ws.res.pointer(n * h), x1 = ws.x1.pointer(n * h)
        q.output.forward(path, a: ws.rows, n: n, epilogue: NEWSD_EPILOGUE_BIAS_RESIDUAL, residual: x, y: res)
        ws.rows.layerNorm(path, x: res, n: n, width: h, gain: q.ln1g, bias: q.ln1b, eps: c.layerNormEps, y: x1)
        // hidden[N, F] = gelu(x1 W1^T + b1) (GELU in the epilogue), quantised.
        let hidden = ws.hidden.pointer(n * f)
        q.intermediate.forward(path, a: ws.rows, n: n, epilogue: NEWSD_EPILOGUE_BIAS_GELU, y: hidden)
        ws.wide.quantize(path, x: hidden, n: n, width: f)
        // res2 = x1 + hidden W2^T + b2; out = LayerNorm(res2), quantised for the next layer.
        q.down.forward(path, a: ws.wide, n: n, epilogue: NEWSD_EPILOGUE_BIAS_RESIDUAL, residual: x1, y: res)
        xq.layerNorm(path, x: res, n: n, width: h, gain: q.ln2g, bias: q.ln2b, eps: c.layerNormEps, y: out)
    }
}
