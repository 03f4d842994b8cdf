import CBLAS
import Foundation
import NewsdKernels
import NewsdKernelsAVX2

/// Chooses the vector kernels for this CPU once: the AVX2+FMA build where the CPU has both,
/// the baseline x86-64 build otherwise (or when `NEWSD_VECTOR_KERNELS=baseline`).
enum VectorKernels {
    /// Whether this CPU can run the AVX2 build.
    static let avx2Available: Bool = newsd_cpu_has_avx2_fma() != 0
    /// Whether the AVX2 build is used; tests switch it off to check the baseline build too.
    nonisolated(unsafe) static var avx2: Bool =
        avx2Available && ProcessInfo.processInfo.environment["NEWSD_VECTOR_KERNELS"] != "baseline"

    @inline(__always)
    static func gelu(y: FloatPointer, x: ConstFloatPointer, count: Int) {
        if avx2 { NewsdKernelsAVX2.FastMath.gelu(y: y, x: x, count: count) } else { NewsdKernels.FastMath.gelu(y: y, x: x, count: count) }
    }

    @inline(__always)
    static func expShifted(p: FloatPointer, s: ConstFloatPointer, count: Int, shift: Float) -> Float {
        avx2 ? NewsdKernelsAVX2.FastMath.expShifted(p: p, s: s, count: count, shift: shift)
            : NewsdKernels.FastMath.expShifted(p: p, s: s, count: count, shift: shift)
    }

    @inline(__always)
    static func sum(_ x: ConstFloatPointer, count: Int) -> Float {
        avx2 ? NewsdKernelsAVX2.FastMath.sum(x, count: count) : NewsdKernels.FastMath.sum(x, count: count)
    }

    @inline(__always)
    static func squaredDeviation(_ x: ConstFloatPointer, count: Int, mean: Float) -> Float {
        avx2 ? NewsdKernelsAVX2.FastMath.squaredDeviation(x, count: count, mean: mean)
            : NewsdKernels.FastMath.squaredDeviation(x, count: count, mean: mean)
    }
}
