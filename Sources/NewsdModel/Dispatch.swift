import CBLAS
import Foundation
import NewsdKernels
import NewsdKernelsAVX2

/// The build of the vector kernels (GELU, softmax exp, LayerNorm sums) a runner uses: the AVX2+FMA
/// build where the CPU has both, the baseline x86-64 build otherwise (or when
/// `NEWSD_VECTOR_KERNELS=baseline`). A value, chosen once from the CPU's feature flags and held by
/// each runner and trainer, never a process-wide switch: tests build runners with each path.
public struct VectorKernels: Sendable, Equatable, CustomStringConvertible {
    /// Whether this CPU can run the AVX2 build.
    public static let avx2Available: Bool = CPUFeatures.host.isSuperset(of: [.avx2, .fma])
    /// The path for this CPU (and the environment override).
    public static let detected = VectorKernels(avx2: avx2Available && ProcessInfo.processInfo.environment["NEWSD_VECTOR_KERNELS"] != "baseline")
    /// The portable build (always runs).
    public static let baseline = VectorKernels(avx2: false)

    /// Whether the AVX2 build is used.
    public let avx2: Bool

    /// A path; `avx2: true` only where `avx2Available`.
    public init(avx2: Bool) { self.avx2 = avx2 && Self.avx2Available }

    /// `avx2-fma` or `baseline`.
    public var description: String { avx2 ? "avx2-fma" : "baseline" }

    @inline(__always)
    func gelu(y: FloatPointer, x: ConstFloatPointer, count: Int) {
        if avx2 { NewsdKernelsAVX2.FastMath.gelu(y: y, x: x, count: count) } else { NewsdKernels.FastMath.gelu(y: y, x: x, count: count) }
    }

    @inline(__always)
    func expShifted(p: FloatPointer, s: ConstFloatPointer, count: Int, shift: Float) -> Float {
        avx2 ? NewsdKernelsAVX2.FastMath.expShifted(p: p, s: s, count: count, shift: shift)
            : NewsdKernels.FastMath.expShifted(p: p, s: s, count: count, shift: shift)
    }

    @inline(__always)
    func sum(_ x: ConstFloatPointer, count: Int) -> Float {
        avx2 ? NewsdKernelsAVX2.FastMath.sum(x, count: count) : NewsdKernels.FastMath.sum(x, count: count)
    }

    @inline(__always)
    func squaredDeviation(_ x: ConstFloatPointer, count: Int, mean: Float) -> Float {
        avx2 ? NewsdKernelsAVX2.FastMath.squaredDeviation(x, count: count, mean: mean)
            : NewsdKernels.FastMath.squaredDeviation(x, count: count, mean: mean)
    }
}
