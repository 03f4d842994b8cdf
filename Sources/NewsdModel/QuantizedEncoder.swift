import Foundation
import NewsdInt8

/// One linear layer's weights quantised for the int8 kernels: per-output-channel symmetric int8,
/// packed in the kernels' 16 x 4 blocks (64-byte aligned), with scales and the per-channel sums
/// the zero-point correction needs. The bias stays float (in the encoder's weights).
///
/// `@unchecked Sendable` without a lock: written once in `init`, read-only afterwards.
final class QuantizedLinear: @unchecked Sendable {
    let outDim: Int, inDim: Int
    let packed: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<Float>
    let colsums: UnsafeMutablePointer<Int32>
    /// Bytes of the packed weights (the serving model's int8 memory).
    let byteCount: Int

    /// Quantises w[out, in] (Hugging Face layout) for `path` (its weight range).
    init(w: ConstFloatPointer, outDim: Int, inDim: Int, path: Int8KernelPath) {
        self.outDim = outDim
        self.inDim = inDim
        byteCount = newsd_int8_packed_size(Int32(outDim), Int32(inDim))
        packed = .allocate(byteCount: byteCount, alignment: 64)
        scales = .allocate(capacity: outDim)
        colsums = .allocate(capacity: outDim)
        newsd_int8_pack_weights(w, Int32(outDim), Int32(inDim), path.weightMax, packed.assumingMemoryBound(to: Int8.self), scales, colsums)
    }

    deinit {
        packed.deallocate()
        scales.deallocate()
        colsums.deallocate()
    }

    /// y[n, out] = epilogue(dequantised (a W^T) + bias), `a` quantised by `QuantizedRows`.
    func forward(_ path: Int8KernelPath, a: QuantizedRows, n: Int, bias: ConstFloatPointer, epilogue: newsd_int8_epilogue,
                 residual: ConstFloatPointer? = nil, y: FloatPointer) {
        newsd_int8_gemm(path.rawValue, a.bytes, a.scales, a.zeroPoints, Int32(n), Int32(inDim),
                        packed.assumingMemoryBound(to: Int8.self), scales, colsums, bias, Int32(outDim),
                        Int32(epilogue.rawValue), residual, y)
    }
}

/// The four int8 matrices of one transformer layer. `@unchecked Sendable`: holds only
/// `QuantizedLinear`s, which are read-only after their `init`.
struct QuantizedLayer: @unchecked Sendable {
    let qkv: QuantizedLinear, output: QuantizedLinear, intermediate: QuantizedLinear, down: QuantizedLinear
}

/// An encoder's linear layers quantised once (when a model is loaded or promoted); embeddings,
/// biases and LayerNorm parameters are read from the float weights it was made from.
public final class QuantizedEncoder: Sendable {
    /// The float weights (embeddings, biases, LayerNorm).
    public let weights: EncoderWeights
    let layers: [QuantizedLayer]

    /// The kernel path the matrices are packed for.
    public let path: Int8KernelPath

    /// Quantises every layer of `weights` for `path`.
    public init(_ weights: EncoderWeights, path: Int8KernelPath) {
        self.weights = weights
        self.path = path
        let c = weights.config, L = LayerLayout(c), h = c.hiddenSize, f = c.intermediateSize
        layers = weights.layers.map { b in
            let w = ConstFloatPointer(b.pointer)
            return QuantizedLayer(qkv: QuantizedLinear(w: w + L.wqkv, outDim: 3 * h, inDim: h, path: path),
                                  output: QuantizedLinear(w: w + L.wo, outDim: h, inDim: h, path: path),
                                  intermediate: QuantizedLinear(w: w + L.w1, outDim: f, inDim: h, path: path),
                                  down: QuantizedLinear(w: w + L.w2, outDim: h, inDim: f, path: path))
        }
    }

    /// Bytes of the int8 matrices.
    public var int8Bytes: Int { layers.reduce(0) { $0 + $1.qkv.byteCount + $1.output.byteCount + $1.intermediate.byteCount + $1.down.byteCount } }
}

/// Rows of activations quantised to u8 with a scale and zero point each (grows on demand).
final class QuantizedRows {
    private(set) var bytes: UnsafeMutablePointer<UInt8> = .allocate(capacity: 64)
    private(set) var scales: UnsafeMutablePointer<Float> = .allocate(capacity: 16)
    private(set) var zeroPoints: UnsafeMutablePointer<Int32> = .allocate(capacity: 16)
    private var byteCapacity = 64, rowCapacity = 16

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

    /// Quantises x[n, width].
    func quantize(_ path: Int8KernelPath, x: ConstFloatPointer, n: Int, width: Int) {
        reserve(rows: n, width: width)
        newsd_int8_quantize_rows(path.rawValue, x, Int32(n), Int32(width), Int32(width), path.activationMax, bytes, scales, zeroPoints)
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
    static func layerForward(_ c: BertConfig, _ p: FloatBuffer, _ q: QuantizedLayer, path: Int8KernelPath,
                             x: ConstFloatPointer, xq: QuantizedRows, out: FloatPointer, shape s: BatchShape, ws: Int8Workspace) {
        let L = LayerLayout(c), h = c.hiddenSize, f = c.intermediateSize, n = s.n, w = ConstFloatPointer(p.pointer)
        // qkv[N, 3H] = x Wqkv^T + bqkv
        let qkv = ws.qkv.pointer(n * 3 * h)
        q.qkv.forward(path, a: xq, n: n, bias: w + L.bqkv, epilogue: NEWSD_EPILOGUE_BIAS, y: qkv)
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
        q.output.forward(path, a: ws.rows, n: n, bias: w + L.bo, epilogue: NEWSD_EPILOGUE_BIAS_RESIDUAL, residual: x, y: res)
        ws.rows.reserve(rows: n, width: h)
        newsd_layernorm_quantize(path.rawValue, res, Int32(n), Int32(h), w + L.ln1g, w + L.ln1b, c.layerNormEps, x1,
                                 path.activationMax, ws.rows.bytes, ws.rows.scales, ws.rows.zeroPoints)
        // hidden[N, F] = gelu(x1 W1^T + b1) (GELU in the epilogue), quantised.
        let hidden = ws.hidden.pointer(n * f)
        q.intermediate.forward(path, a: ws.rows, n: n, bias: w + L.b1, epilogue: NEWSD_EPILOGUE_BIAS_GELU, y: hidden)
        ws.wide.quantize(path, x: hidden, n: n, width: f)
        // res2 = x1 + hidden W2^T + b2; out = LayerNorm(res2), quantised for the next layer.
        q.down.forward(path, a: ws.wide, n: n, bias: w + L.b2, epilogue: NEWSD_EPILOGUE_BIAS_RESIDUAL, residual: x1, y: res)
        xq.reserve(rows: n, width: h)
        newsd_layernorm_quantize(path.rawValue, res, Int32(n), Int32(h), w + L.ln2g, w + L.ln2b, c.layerNormEps, out,
                                 path.activationMax, xq.bytes, xq.scales, xq.zeroPoints)
    }
}
