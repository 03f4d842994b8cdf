// This file is compiled twice: as NewsdKernels for any x86-64 (SSE2: a Float8 is two 4-wide
// operations) and, through a symlink, as NewsdKernelsAVX2 with -target-cpu x86-64-v3 (AVX2 + FMA:
// one 8-wide fused operation). NewsdModel picks one at run time from the CPU's features.
//
// Vectorised exp and erf for the forward pass. libm's erff and expf are scalar calls and took a
// fifth of inference time (perf: __erff 15%, __expf 4%); these 8-wide versions are accurate to a
// few float ulps (exp) and 2e-7 absolute (erf, Abramowitz & Stegun 7.1.26), far inside the 1e-4
// parity budget. Backward passes keep libm (training time is dominated by GEMMs).

public typealias FloatPointer = UnsafeMutablePointer<Float>
public typealias ConstFloatPointer = UnsafePointer<Float>
typealias Float8 = SIMD8<Float>

/// Vectorised kernels over float buffers.
public enum FastMath {
    /// e^x, Cephes-style: x = n ln2 + r, e^r by a degree-6 polynomial, 2^n through the exponent bits.
    @inline(__always)
    static func exp(_ x: Float8) -> Float8 {
        let lo = Float8(repeating: -87.3), hi = Float8(repeating: 88.3)
        let x = x.replacing(with: lo, where: x .< lo).replacing(with: hi, where: x .> hi)
        // Round x log2(e) to an integer n by adding 1.5 * 2^23: n lands in the low mantissa bits
        // (no float-to-int conversion, which the generic SIMD path makes slow).
        let shifter = Float8(repeating: 12_582_912)
        let shifted = x * 1.44269504088896341 + shifter
        let n = shifted - shifter
        var r = x - n * 0.693359375
        r = r + n * 2.12194440e-4
        var p = Float8(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        p = p * r * r + r + 1
        let nInt = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
        return p * unsafeBitCast((nInt &+ 127) &<< 23, to: Float8.self)
    }

    /// erf(x) with |error| < 2e-7.
    @inline(__always)
    static func erf(_ x: Float8) -> Float8 {
        // |x|, capped at 4.5 where erf is 1 to float precision (keeps exp's argument in range).
        let zero = Float8(repeating: 0), cap = Float8(repeating: 4.5)
        var a = x.replacing(with: zero - x, where: x .< zero)
        a = a.replacing(with: cap, where: a .> cap)
        let t = 1 / (1 + 0.3275911 * a)
        var p = Float8(repeating: 1.061405429)
        p = p * t - 1.453152027
        p = p * t + 1.421413741
        p = p * t - 0.284496736
        p = p * t + 0.254829592
        let y = Float8(repeating: 1) - p * t * exp(zero - a * a)
        return y.replacing(with: zero - y, where: x .< zero)
    }

    /// y[count] = gelu(x) = x/2 (1 + erf(x / sqrt 2)); y may alias x.
    public static func gelu(y: FloatPointer, x: ConstFloatPointer, count: Int) {
        let raw = UnsafeRawPointer(x), out = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 8 <= count {
            let v = raw.loadUnaligned(fromByteOffset: i * 4, as: Float8.self)
            out.storeBytes(of: 0.5 * v * (1 + erf(v * 0.70710678118654752)), toByteOffset: i * 4, as: Float8.self)
            i += 8
        }
        if i < count {
            var v = Float8(repeating: 0)
            for j in 0..<(count - i) { v[j] = x[i + j] }
            let g = 0.5 * v * (1 + erf(v * 0.70710678118654752))
            for j in 0..<(count - i) { y[i + j] = g[j] }
        }
    }

    /// p[count] = exp(s - shift), returning the sum; p may alias s.
    public static func expShifted(p: FloatPointer, s: ConstFloatPointer, count: Int, shift: Float) -> Float {
        let raw = UnsafeRawPointer(s), out = UnsafeMutableRawPointer(p)
        var sum = Float8(repeating: 0)
        var i = 0
        while i + 8 <= count {
            let e = exp(raw.loadUnaligned(fromByteOffset: i * 4, as: Float8.self) - shift)
            out.storeBytes(of: e, toByteOffset: i * 4, as: Float8.self)
            sum += e
            i += 8
        }
        var total = sum.sum()
        if i < count {
            var v = Float8(repeating: -.infinity)
            for j in 0..<(count - i) { v[j] = s[i + j] - shift }
            let e = exp(v)
            for j in 0..<(count - i) { p[i + j] = e[j]; total += e[j] }
        }
        return total
    }
}

extension FastMath {
    /// Sum of `count` floats with eight accumulators (a scalar loop cannot be vectorised: float
    /// addition is not reassociated).
    public static func sum(_ x: ConstFloatPointer, count: Int) -> Float {
        let raw = UnsafeRawPointer(x)
        var acc = Float8(repeating: 0)
        var i = 0
        while i + 8 <= count { acc += raw.loadUnaligned(fromByteOffset: i * 4, as: Float8.self); i += 8 }
        var total = acc.sum()
        while i < count { total += x[i]; i += 1 }
        return total
    }

    /// Sum of (x - mean)^2 over `count` floats.
    public static func squaredDeviation(_ x: ConstFloatPointer, count: Int, mean: Float) -> Float {
        let raw = UnsafeRawPointer(x)
        var acc = Float8(repeating: 0)
        var i = 0
        while i + 8 <= count { let c = raw.loadUnaligned(fromByteOffset: i * 4, as: Float8.self) - mean; acc += c * c; i += 8 }
        var total = acc.sum()
        while i < count { let c = x[i] - mean; total += c * c; i += 1 }
        return total
    }
}
