import CBLAS
import Foundation
import NewsdInt8
import NewsdSystem

/// CPU feature flags that decide the student's kernels (CPUID, with the OS's register-state
/// support checked), never a table of CPU model numbers: a CPU newer than this code is recognised
/// by what it can do.
public struct CPUFeatures: OptionSet, Sendable, CustomStringConvertible {
    /// The feature bits (`newsd_cpu_feature`).
    public let rawValue: UInt32
    /// A set from raw bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// AVX2 (256-bit integer SIMD).
    public static let avx2 = CPUFeatures(rawValue: NEWSD_CPU_AVX2.rawValue)
    /// Fused multiply-add.
    public static let fma = CPUFeatures(rawValue: NEWSD_CPU_FMA.rawValue)
    /// AVX-512 Foundation.
    public static let avx512f = CPUFeatures(rawValue: NEWSD_CPU_AVX512F.rawValue)
    /// AVX-512 byte and word instructions.
    public static let avx512bw = CPUFeatures(rawValue: NEWSD_CPU_AVX512BW.rawValue)
    /// AVX-512 vector-length extensions.
    public static let avx512vl = CPUFeatures(rawValue: NEWSD_CPU_AVX512VL.rawValue)
    /// AVX-512 doubleword and quadword instructions.
    public static let avx512dq = CPUFeatures(rawValue: NEWSD_CPU_AVX512DQ.rawValue)
    /// AVX-512 VNNI (`vpdpbusd`: four u8 x s8 products summed into each int32 lane).
    public static let avx512vnni = CPUFeatures(rawValue: NEWSD_CPU_AVX512VNNI.rawValue)
    /// AVX-VNNI (the 256-bit VEX form).
    public static let avxvnni = CPUFeatures(rawValue: NEWSD_CPU_AVXVNNI.rawValue)
    /// AMX int8 tiles (reported; no kernel uses them yet).
    public static let amxInt8 = CPUFeatures(rawValue: NEWSD_CPU_AMX_INT8.rawValue)
    /// AVX-512 BF16.
    public static let avx512bf16 = CPUFeatures(rawValue: NEWSD_CPU_AVX512BF16.rawValue)

    /// This CPU's features.
    public static let host = CPUFeatures(rawValue: newsd_cpu_features())

    private static let names: [(CPUFeatures, String)] = [
        (.avx2, "avx2"), (.fma, "fma"), (.avx512f, "avx512f"), (.avx512bw, "avx512bw"), (.avx512vl, "avx512vl"),
        (.avx512dq, "avx512dq"), (.avx512vnni, "avx512vnni"), (.avxvnni, "avxvnni"), (.avx512bf16, "avx512bf16"), (.amxInt8, "amx-int8"),
    ]
    /// The features' names, space-separated (`none` when empty).
    public var description: String {
        let present = Self.names.filter { contains($0.0) }.map(\.1)
        return present.isEmpty ? "none" : present.joined(separator: " ")
    }
}

/// The int8 kernel builds, fastest last. Each runs only where its features are present.
public enum Int8KernelPath: Int32, Sendable, CaseIterable, CustomStringConvertible {
    /// Plain C: runs anywhere, and is the reference the vector paths are tested against.
    case portable = 0
    /// AVX2 + FMA: `vpmaddubsw` + `vpmaddwd`, 6-bit activations and weights within ±64, so four
    /// groups of products add in 16 bits without saturating (see `newsd_int8.h`).
    case avx2 = 1
    /// AVX-512 with VNNI: `vpdpbusd`, 8-bit activations.
    case avx512vnni = 2

    /// The features this path needs.
    public var requirements: CPUFeatures {
        switch self {
        case .portable: []
        case .avx2: [.avx2, .fma]
        case .avx512vnni: [.avx2, .fma, .avx512f, .avx512bw, .avx512vl, .avx512dq, .avx512vnni]
        }
    }

    /// Whether a CPU with `features` can run this path.
    public func runs(on features: CPUFeatures) -> Bool { features.isSuperset(of: requirements) }

    /// The fastest path a CPU with `features` runs.
    public static func best(for features: CPUFeatures) -> Int8KernelPath {
        allCases.reversed().first { $0.runs(on: features) } ?? .portable
    }

    /// The paths this CPU runs.
    public static var runnable: [Int8KernelPath] { allCases.filter { $0.runs(on: .host) } }

    /// Largest quantised activation value: 255 (8-bit activations), 63 on the AVX2 path.
    public var activationMax: Int32 { newsd_int8_activation_max(rawValue) }
    /// Largest absolute quantised weight (64 on every path, so a model packs alike everywhere).
    public var weightMax: Int32 { newsd_int8_weight_max(rawValue) }

    /// `portable`, `avx2` or `avx512-vnni`.
    public var description: String {
        switch self { case .portable: "portable"; case .avx2: "avx2"; case .avx512vnni: "avx512-vnni" }
    }

    /// Parses `description`.
    public init?(name: String) {
        guard let p = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = p
    }
}

/// How the student's encoder computes.
public enum EncoderPrecision: Sendable, Equatable, CustomStringConvertible {
    /// Float32 through OpenBLAS: the training forward pass, and the reference.
    case fp32
    /// Int8 linear layers (per-channel weights, per-row dynamic activations) on a kernel path.
    case int8(Int8KernelPath)

    /// Int8 on the fastest path of this CPU: the serving default.
    public static var fastest: EncoderPrecision { .int8(.best(for: .host)) }

    /// Parses a configuration value: `int8` (fastest path of this CPU), `int8-<path>`, or `fp32`.
    /// Returns nil for an unknown value or a path this CPU cannot run.
    public init?(configuration value: String) {
        switch value {
        case "fp32": self = .fp32
        case "int8": self = .fastest
        default:
            guard value.hasPrefix("int8-"), let p = Int8KernelPath(name: String(value.dropFirst(5))), p.runs(on: .host) else { return nil }
            self = .int8(p)
        }
    }

    /// `fp32` or `int8-<path>`.
    public var description: String {
        switch self { case .fp32: "fp32"; case .int8(let p): "int8-\(p)" }
    }
}

/// OpenBLAS's kernels for the fp32 path (training, and `model.precision = "fp32"`). Debian's
/// OpenBLAS picks them from a table of CPU model numbers and falls back to generic "Prescott"
/// kernels on a CPU it does not know (measured: a quarter of the speed on a new Xeon). newsd
/// chooses from the feature flags instead and, when OpenBLAS chose weaker kernels, re-executes
/// itself with `OPENBLAS_CORETYPE` set: OpenBLAS reads it only while loading, before `main`.
public enum BLASCore {
    /// The kernel set OpenBLAS uses in this process (`SkylakeX`, `Haswell`, `Prescott`, ...).
    public static var current: String { String(cString: openblas_get_corename()) }

    /// OpenBLAS core names by the vector width their kernels use: 3 AVX-512, 2 AVX2 + FMA,
    /// 1 AVX, 0 anything else (SSE-era and generic kernels, and names unknown here).
    static func rank(_ name: String) -> Int {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": 3
        case "haswell", "zen": 2
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator": 1
        default: 0
        }
    }

    /// The kernel set a CPU with `features` should get: AVX-512 (F, BW, VL, DQ) → `SkylakeX`,
    /// AVX2 + FMA → `Haswell`; nil when only older kernels fit.
    public static func preferred(for features: CPUFeatures) -> String? {
        if features.isSuperset(of: [.avx512f, .avx512bw, .avx512vl, .avx512dq]) { return "SkylakeX" }
        if features.isSuperset(of: [.avx2, .fma]) { return "Haswell" }
        return nil
    }

    /// The core to force when OpenBLAS's own choice (`current`) is weaker than the flags allow.
    public static func override(current: String, features: CPUFeatures) -> String? {
        guard let wanted = preferred(for: features), rank(current) < rank(wanted) else { return nil }
        return wanted
    }

    /// Why OpenBLAS runs weaker kernels than this CPU's flags allow, for a start-up warning; nil
    /// when its kernels are the ones the flags call for. newsd respects an `OPENBLAS_CORETYPE`
    /// set in its environment (an operator's or a host image's choice), so that is the usual
    /// cause: measured on an AMD Zen 5 whose image set `Haswell`, the fp32 path ran at 61 % of
    /// its `SkylakeX` speed, and training is fp32.
    public static var weakerKernelsWarning: String? {
        weakerKernelsWarning(current: current, features: .host, coreTypeSetting: getenv("OPENBLAS_CORETYPE").map { String(cString: $0) })
    }

    /// `weakerKernelsWarning` for OpenBLAS's kernels `current`, a CPU with `features`, and the
    /// environment's `OPENBLAS_CORETYPE` (nil: not set). Three causes, each with its own remedy:
    /// a weaker setting (unset it), a setting OpenBLAS did not honour (this OpenBLAS build lacks
    /// those kernels: newsd's own re-execution sets it too), or a failed re-execution.
    static func weakerKernelsWarning(current: String, features: CPUFeatures, coreTypeSetting: String?) -> String? {
        guard let wanted = override(current: current, features: features) else { return nil }
        let what = "OpenBLAS runs \(current) kernels where this CPU can run \(wanted)"
        guard let setting = coreTypeSetting else {
            return "\(what) (re-executing with OPENBLAS_CORETYPE=\(wanted) failed): training and the fp32 path are slower"
        }
        if rank(setting) >= rank(wanted) {
            return "\(what) (OpenBLAS did not honour OPENBLAS_CORETYPE=\(setting): this build lacks those kernels): training and the fp32 path are slower; install an OpenBLAS built with DYNAMIC_ARCH"
        }
        return "\(what) (OPENBLAS_CORETYPE=\(setting) is set in the environment): training and the fp32 path are slower; unset OPENBLAS_CORETYPE or set it to \(wanted)"
    }

    /// The core OpenBLAS had chosen before this process re-executed itself (nil: not replaced).
    public static var replaced: String? { replacedCore.withLock { $0 } }
    private static let replacedCore = LockedValue<String?>(nil)

    /// Re-executes this process with `OPENBLAS_CORETYPE` set when OpenBLAS chose weaker kernels
    /// than the CPU's flags allow. Does nothing when the variable is already set (an operator's
    /// choice, or this re-execution: no loop) or when the choice is good; returns if exec fails.
    /// Call first thing in `main`.
    public static func ensurePreferredKernels() {
        if let from = getenv("NEWSD_BLAS_CORE_FROM") {
            // This is the re-execution: remember what was replaced, and keep the marker from
            // child processes (which inherit OPENBLAS_CORETYPE, and so never re-execute).
            replacedCore.withLock { $0 = String(cString: from) }
            unsetenv("NEWSD_BLAS_CORE_FROM")
            return
        }
        guard getenv("OPENBLAS_CORETYPE") == nil, let core = override(current: current, features: .host) else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        setenv("NEWSD_BLAS_CORE_FROM", current, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        unsetenv("OPENBLAS_CORETYPE")       // exec failed: this process keeps OpenBLAS's own choice
        unsetenv("NEWSD_BLAS_CORE_FROM")
    }
}
