import Foundation

/// Inverted dropout with a deterministic generator. `rate == 0` means off (inference).
struct Dropout {
    var rate: Float
    var rng: SeededGenerator

    var isActive: Bool { rate > 0 }

    /// Fills `mask[count]` with 0 or 1/(1-rate).
    mutating func fill(_ mask: FloatPointer, count: Int) {
        let keep = 1 - rate, scale = 1 / keep
        for i in 0..<count { mask[i] = rng.nextUnit() < keep ? scale : 0 }
    }
}

/// A packed batch: B sequences stored back to back without padding (N = sum of lengths rows).
/// Dense layers run over all N rows at once; attention runs per sequence over its own rows, so no
/// compute is spent on padding and no attention mask is needed.
struct BatchShape {
    /// Tokens of each sequence.
    let lengths: [Int]
    /// First row of each sequence.
    let offsets: [Int]
    /// Start of each sequence's [NH, T_b, T_b] attention block.
    let attentionOffsets: [Int]
    /// Total rows.
    let n: Int
    /// Total attention floats.
    let attentionCount: Int
    var b: Int { lengths.count }

    init(lengths: [Int], heads: Int) {
        self.lengths = lengths
        var offsets: [Int] = [], att: [Int] = []
        var n = 0, a = 0
        for l in lengths { offsets.append(n); att.append(a); n += l; a += heads * l * l }
        self.offsets = offsets
        attentionOffsets = att
        self.n = n
        attentionCount = a
    }
}

/// The activations of one transformer layer for one padded batch, kept for the backward pass
/// when training (`saveForBackward`), or reused as scratch for every layer when serving.
final class LayerActivations {
    let saveForBackward: Bool
    private var store: [Scratch] = Array(repeating: Scratch(), count: 19)
    // Pointers valid after `prepare`. N packed rows, H hidden, F intermediate, NH heads, T_b tokens of sequence b.
    private(set) var qkv: FloatPointer! = nil       // [N, 3H]
    private(set) var probs: FloatPointer! = nil     // per sequence [NH, T_b, T_b] softmax output
    private(set) var probsDropped: FloatPointer! = nil  // same, after dropout (training)
    private(set) var attnMask: FloatPointer! = nil  // same, dropout scales (training)
    private(set) var ctx: FloatPointer! = nil       // [N, H]
    private(set) var attnOut: FloatPointer! = nil   // [N, H] ctx Wo^T + bo
    private(set) var drop1: FloatPointer! = nil     // [N, H]
    private(set) var res1: FloatPointer! = nil      // [N, H] x + dropout(attnOut)
    private(set) var mean1: FloatPointer! = nil     // [N]
    private(set) var rstd1: FloatPointer! = nil     // [N]
    private(set) var x1: FloatPointer! = nil        // [N, H] LayerNorm(res1)
    private(set) var hPre: FloatPointer! = nil      // [N, F] x1 W1^T + b1
    private(set) var hAct: FloatPointer! = nil      // [N, F] gelu(hPre) (same buffer as hPre when serving)
    private(set) var ffnOut: FloatPointer! = nil    // [N, H] hAct W2^T + b2
    private(set) var drop2: FloatPointer! = nil     // [N, H]
    private(set) var res2: FloatPointer! = nil      // [N, H] x1 + dropout(ffnOut)
    private(set) var mean2: FloatPointer! = nil     // [N]
    private(set) var rstd2: FloatPointer! = nil     // [N]
    private(set) var out: FloatPointer! = nil       // [N, H] LayerNorm(res2): the layer's output
    private(set) var shape = BatchShape(lengths: [], heads: 1)

    init(saveForBackward: Bool) { self.saveForBackward = saveForBackward }

    func prepare(_ c: BertConfig, _ s: BatchShape, dropout: Bool) {
        shape = s
        let n = s.n, h = c.hiddenSize, f = c.intermediateSize, att = s.attentionCount
        qkv = store[0].pointer(n * 3 * h)
        probs = store[1].pointer(att)
        probsDropped = dropout ? store[2].pointer(att) : probs
        attnMask = dropout ? store[3].pointer(att) : nil
        ctx = store[4].pointer(n * h)
        attnOut = store[5].pointer(n * h)
        drop1 = dropout ? store[6].pointer(n * h) : nil
        res1 = store[7].pointer(n * h)
        mean1 = store[8].pointer(n)
        rstd1 = store[9].pointer(n)
        x1 = store[10].pointer(n * h)
        hPre = store[11].pointer(n * f)
        hAct = saveForBackward ? store[12].pointer(n * f) : hPre
        ffnOut = store[13].pointer(n * h)
        drop2 = dropout ? store[14].pointer(n * h) : nil
        res2 = store[15].pointer(n * h)
        mean2 = store[16].pointer(n)
        rstd2 = store[17].pointer(n)
        out = store[18].pointer(n * h)
    }
}

/// Gradient scratch for one layer's backward pass (shared across layers of one thread).
struct LayerGradientScratch {
    var a = Scratch(), b = Scratch(), c = Scratch(), d = Scratch(), e = Scratch(), f = Scratch(), g = Scratch()
}

/// The transformer's forward and backward passes over padded batches.
enum Transformer {
    // MARK: Embeddings

    /// out[N, H] = LayerNorm(word[id] + position[t] + type[0]) (then dropout when active), `ids`
    /// packed like the rows. Saves the pre-LayerNorm sum and statistics into `saved` when given.
    static func embeddingsForward(_ c: BertConfig, _ e: FloatBuffer, ids: [Int32], shape s: BatchShape,
                                  out: FloatPointer, saved: EmbeddingActivations?, dropout: inout Dropout, vector: VectorKernels) {
        let h = c.hiddenSize, L = EmbeddingLayout(c)
        let sum = saved?.sum ?? out
        for bi in 0..<s.b {
            for t in 0..<s.lengths[bi] {
                let r = s.offsets[bi] + t
                let row = sum + r * h
                let w = e.pointer + L.word + Int(ids[r]) * h, p = e.pointer + L.position + t * h, ty = e.pointer + L.type
                for i in 0..<h { row[i] = w[i] + p[i] + ty[i] }
            }
        }
        Kernels.layerNormForward(y: out, mean: saved?.mean, rstd: saved?.rstd, x: sum, g: e.pointer + L.lng,
                                 b: e.pointer + L.lnb, n: s.n, d: h, eps: c.layerNormEps, vector: vector)
        if dropout.isActive, let saved {
            dropout.fill(saved.mask, count: s.n * h)
            for i in 0..<(s.n * h) { out[i] *= saved.mask[i] }
        }
    }

    /// Accumulates the embedding gradients from dOut[N, H] (dOut is modified).
    static func embeddingsBackward(_ c: BertConfig, _ e: FloatBuffer, _ g: FloatBuffer, ids: [Int32], shape s: BatchShape,
                                   dOut: FloatPointer, saved: EmbeddingActivations, dropout: Bool, scratch: inout Scratch) {
        let h = c.hiddenSize, L = EmbeddingLayout(c), n = s.n
        if dropout { for i in 0..<(n * h) { dOut[i] *= saved.mask[i] } }
        let dSum = scratch.pointer(n * h)
        Kernels.layerNormBackward(dx: dSum, dg: g.pointer + L.lng, db: g.pointer + L.lnb, dy: dOut, x: saved.sum,
                                  mean: saved.mean, rstd: saved.rstd, g: e.pointer + L.lng, n: n, d: h, accumulate: false)
        for bi in 0..<s.b {
            for t in 0..<s.lengths[bi] {
                let r = s.offsets[bi] + t
                let row = dSum + r * h
                let w = g.pointer + L.word + Int(ids[r]) * h, p = g.pointer + L.position + t * h, ty = g.pointer + L.type
                for i in 0..<h { w[i] += row[i]; p[i] += row[i]; ty[i] += row[i] }
            }
        }
    }

    // MARK: One layer

    /// out[N, H] = layer(x[N, H]); activations land in `a` (prepared for `s`).
    static func layerForward(_ c: BertConfig, _ p: FloatBuffer, x: ConstFloatPointer, out: FloatPointer,
                             a: LayerActivations, shape s: BatchShape, dropout: inout Dropout, vector: VectorKernels) {
        let L = LayerLayout(c), h = c.hiddenSize, f = c.intermediateSize, nh = c.numHeads, d = c.headSize
        let n = s.n, w = p.pointer
        let training = dropout.isActive
        // qkv[N, 3H] = x Wqkv^T + bqkv
        Kernels.linearForward(y: a.qkv, x: x, w: w + L.wqkv, b: w + L.bqkv, n: n, inDim: h, outDim: 3 * h)
        // per sequence (T_b rows) and head: P = softmax(Q K^T / sqrt(d)); ctx = dropout(P) V
        let scale = 1 / Float(d).squareRoot()
        for bi in 0..<s.b {
            let t = s.lengths[bi]
            let rowBase = a.qkv + s.offsets[bi] * 3 * h
            for hd in 0..<nh {
                let q = rowBase + hd * d, k = rowBase + h + hd * d, v = rowBase + 2 * h + hd * d
                let off = s.attentionOffsets[bi] + hd * t * t
                let probs = a.probs + off
                BLAS.gemm(transB: true, m: t, n: t, k: d, alpha: scale, a: q, lda: 3 * h, b: k, ldb: 3 * h,
                          beta: 0, c: probs, ldc: t)
                Kernels.maskedSoftmax(p: probs, s: probs, rows: t, cols: t, valid: t, vector: vector)
                var used = ConstFloatPointer(probs)
                if training {
                    let mask = a.attnMask + off, dropped = a.probsDropped + off
                    dropout.fill(mask, count: t * t)
                    for i in 0..<(t * t) { dropped[i] = probs[i] * mask[i] }
                    used = ConstFloatPointer(dropped)
                }
                BLAS.gemm(m: t, n: d, k: t, a: used, lda: t, b: v, ldb: 3 * h, beta: 0,
                          c: a.ctx + s.offsets[bi] * h + hd * d, ldc: h)
            }
        }
        // res1 = x + dropout(ctx Wo^T + bo); x1 = LayerNorm(res1)
        Kernels.linearForward(y: a.attnOut, x: a.ctx, w: w + L.wo, b: w + L.bo, n: n, inDim: h, outDim: h)
        if training { dropout.fill(a.drop1, count: n * h) }
        for i in 0..<(n * h) { a.res1[i] = x[i] + (training ? a.attnOut[i] * a.drop1[i] : a.attnOut[i]) }
        Kernels.layerNormForward(y: a.x1, mean: a.mean1, rstd: a.rstd1, x: a.res1, g: w + L.ln1g, b: w + L.ln1b,
                                 n: n, d: h, eps: c.layerNormEps, vector: vector)
        // hAct[N, F] = gelu(x1 W1^T + b1); res2 = x1 + dropout(hAct W2^T + b2); out = LayerNorm(res2)
        Kernels.linearForward(y: a.hPre, x: a.x1, w: w + L.w1, b: w + L.b1, n: n, inDim: h, outDim: f)
        Kernels.geluForward(y: a.hAct, x: a.hPre, count: n * f, vector: vector)
        Kernels.linearForward(y: a.ffnOut, x: a.hAct, w: w + L.w2, b: w + L.b2, n: n, inDim: f, outDim: h)
        if training { dropout.fill(a.drop2, count: n * h) }
        for i in 0..<(n * h) { a.res2[i] = a.x1[i] + (training ? a.ffnOut[i] * a.drop2[i] : a.ffnOut[i]) }
        Kernels.layerNormForward(y: out, mean: a.mean2, rstd: a.rstd2, x: a.res2, g: w + L.ln2g, b: w + L.ln2b,
                                 n: n, d: h, eps: c.layerNormEps, vector: vector)
    }

    /// Given dOut[N, H], accumulates parameter gradients into `g` and writes dx[N, H] (when non-nil).
    /// `dOut` is used as scratch. `x` is the layer's forward input.
    static func layerBackward(_ c: BertConfig, _ p: FloatBuffer, _ g: FloatBuffer, x: ConstFloatPointer,
                              a: LayerActivations, dOut: FloatPointer, dx: FloatPointer?, dropout: Bool,
                              scratch: inout LayerGradientScratch) {
        let L = LayerLayout(c), h = c.hiddenSize, f = c.intermediateSize, nh = c.numHeads, d = c.headSize
        let s = a.shape, n = s.n, w = p.pointer, gw = g.pointer
        let longest = s.lengths.max() ?? 0
        let dRes2 = scratch.a.pointer(n * h)
        let dX1 = scratch.b.pointer(n * h)
        let dH = scratch.c.pointer(n * f)
        let dRes1 = scratch.d.pointer(n * h)
        let dCtx = scratch.e.pointer(n * h)
        let dQKV = scratch.f.pointer(n * 3 * h)
        let dP = scratch.g.pointer(2 * longest * longest), dS = dP + longest * longest
        // out = LayerNorm(res2)
        Kernels.layerNormBackward(dx: dRes2, dg: gw + L.ln2g, db: gw + L.ln2b, dy: dOut, x: a.res2, mean: a.mean2,
                                  rstd: a.rstd2, g: w + L.ln2g, n: n, d: h, accumulate: false)
        // res2 = x1 + dropout(ffnOut): dX1 = dRes2; dFfnOut (kept in dOut) = dRes2 * mask
        dX1.update(from: dRes2, count: n * h)
        let dFfn = dOut
        for i in 0..<(n * h) { dFfn[i] = dropout ? dRes2[i] * a.drop2[i] : dRes2[i] }
        // ffnOut = hAct W2^T + b2
        Kernels.linearBackward(dx: dH, dw: gw + L.w2, db: gw + L.b2, dy: dFfn, x: a.hAct, w: w + L.w2, n: n, inDim: f, outDim: h)
        // hAct = gelu(hPre)
        Kernels.geluBackward(dx: dH, dy: dH, x: a.hPre, count: n * f)
        // hPre = x1 W1^T + b1 (dX1 accumulates the branch)
        Kernels.linearBackward(dx: dX1, dw: gw + L.w1, db: gw + L.b1, dy: dH, x: a.x1, w: w + L.w1, n: n, inDim: h, outDim: f,
                               accumulate: true)
        // x1 = LayerNorm(res1)
        Kernels.layerNormBackward(dx: dRes1, dg: gw + L.ln1g, db: gw + L.ln1b, dy: dX1, x: a.res1, mean: a.mean1,
                                  rstd: a.rstd1, g: w + L.ln1g, n: n, d: h, accumulate: false)
        // res1 = x + dropout(attnOut)
        let dAttn = dOut
        for i in 0..<(n * h) { dAttn[i] = dropout ? dRes1[i] * a.drop1[i] : dRes1[i] }
        // attnOut = ctx Wo^T + bo
        Kernels.linearBackward(dx: dCtx, dw: gw + L.wo, db: gw + L.bo, dy: dAttn, x: a.ctx, w: w + L.wo, n: n, inDim: h, outDim: h)
        // attention, per sequence and head
        let scale = 1 / Float(d).squareRoot()
        for bi in 0..<s.b {
            let t = s.lengths[bi]
            let rowBase = a.qkv + s.offsets[bi] * 3 * h, dRowBase = dQKV + s.offsets[bi] * 3 * h
            for hd in 0..<nh {
                let q = rowBase + hd * d, k = rowBase + h + hd * d, v = rowBase + 2 * h + hd * d
                let dq = dRowBase + hd * d, dk = dRowBase + h + hd * d, dv = dRowBase + 2 * h + hd * d
                let off = s.attentionOffsets[bi] + hd * t * t
                let probs = a.probs + off, used = a.probsDropped + off
                let dc = dCtx + s.offsets[bi] * h + hd * d
                // dUsed[T, T] = dCtx V^T ; dV[T, d] = used^T dCtx
                BLAS.gemm(transB: true, m: t, n: t, k: d, a: dc, lda: h, b: v, ldb: 3 * h, beta: 0, c: dP, ldc: t)
                BLAS.gemm(transA: true, m: t, n: d, k: t, a: used, lda: t, b: dc, ldb: h, beta: 0, c: dv, ldc: 3 * h)
                if dropout { let mask = a.attnMask + off; for i in 0..<(t * t) { dP[i] *= mask[i] } }
                Kernels.softmaxBackward(ds: dS, dp: dP, p: probs, rows: t, cols: t, scale: scale)
                // S = Q K^T * scale: dQ = dS K ; dK = dS^T Q
                BLAS.gemm(m: t, n: d, k: t, a: dS, lda: t, b: k, ldb: 3 * h, beta: 0, c: dq, ldc: 3 * h)
                BLAS.gemm(transA: true, m: t, n: d, k: t, a: dS, lda: t, b: q, ldb: 3 * h, beta: 0, c: dk, ldc: 3 * h)
            }
        }
        // qkv = x Wqkv^T + bqkv; dx = dRes1 (residual) + dQKV Wqkv
        if let dx { dx.update(from: dRes1, count: n * h) }
        Kernels.linearBackward(dx: dx, dw: gw + L.wqkv, db: gw + L.bqkv, dy: dQKV, x: x, w: w + L.wqkv, n: n,
                               inDim: h, outDim: 3 * h, accumulate: true)
    }

    // MARK: Mean pooling over real tokens

    /// pooled[B, H] = mean of each sequence's rows of x[N, H]
    static func meanPoolForward(pooled: FloatPointer, x: ConstFloatPointer, shape s: BatchShape, h: Int) {
        for bi in 0..<s.b {
            let out = pooled + bi * h
            out.update(repeating: 0, count: h)
            let len = s.lengths[bi]
            for t in 0..<len { let row = x + (s.offsets[bi] + t) * h; for i in 0..<h { out[i] += row[i] } }
            let inv = 1 / Float(max(len, 1))
            for i in 0..<h { out[i] *= inv }
        }
    }

    /// dx[N, H] = dPooled[b] / length for every row of sequence b
    static func meanPoolBackward(dx: FloatPointer, dPooled: ConstFloatPointer, shape s: BatchShape, h: Int) {
        for bi in 0..<s.b {
            let len = s.lengths[bi], inv = 1 / Float(max(len, 1))
            for t in 0..<len { let row = dx + (s.offsets[bi] + t) * h; for i in 0..<h { row[i] = dPooled[bi * h + i] * inv } }
        }
    }
}

/// Saved embedding activations (training with the embeddings trainable).
final class EmbeddingActivations {
    private var stores = [Scratch(), Scratch(), Scratch(), Scratch()]
    private(set) var sum: FloatPointer! = nil, mean: FloatPointer! = nil, rstd: FloatPointer! = nil, mask: FloatPointer! = nil
    func prepare(n: Int, h: Int) {
        sum = stores[0].pointer(n * h); mean = stores[1].pointer(n); rstd = stores[2].pointer(n); mask = stores[3].pointer(n * h)
    }
}
