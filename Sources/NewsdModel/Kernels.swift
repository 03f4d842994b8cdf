import CBLAS
import Foundation
import NewsdKernels
import NewsdSystem

// Forward/backward pairs of the encoder's building blocks over raw row-major buffers, in the
// spirit of llm.c: shapes in comments, no allocation, backward functions *accumulate* (+=) into
// parameter gradients and *overwrite* input gradients unless stated otherwise.

typealias FloatPointer = NewsdKernels.FloatPointer
typealias ConstFloatPointer = NewsdKernels.ConstFloatPointer

/// Owns one contiguous, zero-initialised `Float` allocation (parameters, gradients, activations).
///
/// `@unchecked Sendable` without a lock: a raw allocation shared only under its owner's rule
/// (read-only weights, or one workspace per thread).
final class FloatBuffer: @unchecked Sendable {
    /// Number of floats.
    let count: Int
    /// Start of the allocation; valid for the buffer's lifetime.
    let pointer: FloatPointer

    init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { pointer.deallocate() }

    /// A deep copy.
    func copy() -> FloatBuffer {
        let c = FloatBuffer(count: count)
        c.pointer.update(from: pointer, count: count)
        return c
    }

    func zero() { pointer.update(repeating: 0, count: count) }

    var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
}

/// Grows on demand; used for per-thread scratch and saved activations.
struct Scratch {
    private(set) var buffer = FloatBuffer(count: 0)
    mutating func pointer(_ count: Int) -> FloatPointer {
        if buffer.count < count { buffer = FloatBuffer(count: count + count / 4) }
        return buffer.pointer
    }
}

enum BLAS {
    /// OpenBLAS runs single-threaded inside each call: newsd parallelises over sub-batches itself,
    /// which keeps small matrices efficient and lets inference and training share the cores by
    /// their own thread caps instead of one process-wide BLAS setting.
    static let configured: Void = { openblas_set_num_threads(1) }()

    /// C[m,n] = alpha * op(A)[m,k] op(B)[k,n] + beta * C, row-major.
    @inline(__always)
    static func gemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: ConstFloatPointer, lda: Int, b: ConstFloatPointer, ldb: Int,
                     beta: Float, c: FloatPointer, ldc: Int) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}

enum Kernels {
    // MARK: Linear: y = x W^T + b, W as stored by Hugging Face ([out, in]).

    /// y[n, out] = x[n, in] W[out, in]^T + b[out]
    static func linearForward(y: FloatPointer, x: ConstFloatPointer, w: ConstFloatPointer, b: ConstFloatPointer,
                              n: Int, inDim: Int, outDim: Int) {
        for r in 0..<n { (y + r * outDim).update(from: b, count: outDim) }
        BLAS.gemm(transB: true, m: n, n: outDim, k: inDim, a: x, lda: inDim, b: w, ldb: inDim,
                  beta: 1, c: y, ldc: outDim)
    }

    /// dx[n, in] = dy[n, out] W[out, in] (overwritten, or accumulated when `accumulate`);
    /// dW[out, in] += dy^T x; db[out] += sum over rows of dy. `dx` may be nil (input needs no grad).
    static func linearBackward(dx: FloatPointer?, dw: FloatPointer, db: FloatPointer,
                               dy: ConstFloatPointer, x: ConstFloatPointer, w: ConstFloatPointer,
                               n: Int, inDim: Int, outDim: Int, accumulate: Bool = false) {
        if let dx {
            BLAS.gemm(m: n, n: inDim, k: outDim, a: dy, lda: outDim, b: w, ldb: inDim,
                      beta: accumulate ? 1 : 0, c: dx, ldc: inDim)
        }
        BLAS.gemm(transA: true, m: outDim, n: inDim, k: n, a: dy, lda: outDim, b: x, ldb: inDim,
                  beta: 1, c: dw, ldc: inDim)
        for r in 0..<n {
            let row = dy + r * outDim
            for j in 0..<outDim { db[j] += row[j] }
        }
    }

    // MARK: LayerNorm over the last dimension.

    /// y[n, d] = (x - mean) * rstd * g + b; saves mean[n] and rstd[n] when given.
    static func layerNormForward(y: FloatPointer, mean: FloatPointer?, rstd: FloatPointer?, x: ConstFloatPointer,
                                 g: ConstFloatPointer, b: ConstFloatPointer, n: Int, d: Int, eps: Float, vector: VectorKernels) {
        for r in 0..<n {
            let xr = x + r * d, yr = y + r * d
            let m = vector.sum(xr, count: d) / Float(d)
            let v = vector.squaredDeviation(xr, count: d, mean: m) / Float(d)
            let s = 1 / (v + eps).squareRoot()
            for i in 0..<d { yr[i] = (xr[i] - m) * s * g[i] + b[i] }
            mean?[r] = m
            rstd?[r] = s
        }
    }

    /// dx[n, d] (+)= LayerNorm input gradient; dg[d] += dy * xhat; db[d] += dy.
    static func layerNormBackward(dx: FloatPointer, dg: FloatPointer, db: FloatPointer, dy: ConstFloatPointer,
                                  x: ConstFloatPointer, mean: ConstFloatPointer, rstd: ConstFloatPointer,
                                  g: ConstFloatPointer, n: Int, d: Int, accumulate: Bool) {
        for r in 0..<n {
            let xr = x + r * d, dyr = dy + r * d, dxr = dx + r * d
            let m = mean[r], s = rstd[r]
            var sumDxhat: Float = 0, sumDxhatXhat: Float = 0
            for i in 0..<d {
                let xhat = (xr[i] - m) * s
                let dxhat = dyr[i] * g[i]
                sumDxhat += dxhat
                sumDxhatXhat += dxhat * xhat
                dg[i] += dyr[i] * xhat
                db[i] += dyr[i]
            }
            let meanDxhat = sumDxhat / Float(d), meanDxhatXhat = sumDxhatXhat / Float(d)
            for i in 0..<d {
                let xhat = (xr[i] - m) * s
                let v = s * (dyr[i] * g[i] - meanDxhat - xhat * meanDxhatXhat)
                if accumulate { dxr[i] += v } else { dxr[i] = v }
            }
        }
    }

    // MARK: GELU (erf form, as BERT's "gelu").

    /// y[count] = x * Phi(x)
    static func geluForward(y: FloatPointer, x: ConstFloatPointer, count: Int, vector: VectorKernels) {
        vector.gelu(y: y, x: x, count: count)
    }

    /// dx[count] = dy * (Phi(x) + x * phi(x))
    static func geluBackward(dx: FloatPointer, dy: ConstFloatPointer, x: ConstFloatPointer, count: Int) {
        let invSqrt2: Float = 0.70710678118654752, invSqrt2Pi: Float = 0.39894228040143268
        for i in 0..<count {
            let v = x[i]
            let cdf = 0.5 * (1 + erff(v * invSqrt2))
            let pdf = invSqrt2Pi * expf(-0.5 * v * v)
            dx[i] = dy[i] * (cdf + v * pdf)
        }
    }

    // MARK: Softmax over the first `valid` entries of each row; the rest (padding) become 0.

    /// p[rows, cols] = softmax(s) over columns < valid, in place allowed.
    static func maskedSoftmax(p: FloatPointer, s: ConstFloatPointer, rows: Int, cols: Int, valid: Int, vector: VectorKernels) {
        for r in 0..<rows {
            let sr = s + r * cols, pr = p + r * cols
            var mx = -Float.infinity
            for j in 0..<valid { mx = max(mx, sr[j]) }
            let inv = 1 / vector.expShifted(p: pr, s: sr, count: valid, shift: mx)
            for j in 0..<valid { pr[j] *= inv }
            for j in valid..<cols { pr[j] = 0 }
        }
    }

    /// ds[rows, cols] = p * (dp - sum_j(dp * p)), scaled by `scale`.
    static func softmaxBackward(ds: FloatPointer, dp: ConstFloatPointer, p: ConstFloatPointer,
                                rows: Int, cols: Int, scale: Float) {
        for r in 0..<rows {
            let pr = p + r * cols, dpr = dp + r * cols, dsr = ds + r * cols
            var dot: Float = 0
            for j in 0..<cols { dot += pr[j] * dpr[j] }
            for j in 0..<cols { dsr[j] = scale * pr[j] * (dpr[j] - dot) }
        }
    }
}

/// Deterministic random numbers (SplitMix64): weight initialisation, dropout masks, shuffling.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    /// SplitMix64 one step ahead of `seed` (the stream the goldens and trained models were made with).
    private var base: SplitMix64
    /// A generator whose sequence depends only on `seed`.
    public init(seed: UInt64) { base = SplitMix64(seed: seed &+ 0x9E37_79B9_7F4A_7C15) }
    /// The next 64 random bits.
    public mutating func next() -> UInt64 { base.next() }
    /// Uniform in [0, 1).
    mutating func nextUnit() -> Float { Float(next() >> 40) * (1.0 / Float(1 << 24)) }
    /// Standard normal (Box-Muller).
    mutating func nextGaussian() -> Float {
        let u1 = max(nextUnit(), 1e-7), u2 = nextUnit()
        return (-2 * logf(u1)).squareRoot() * cosf(2 * .pi * u2)
    }
}
