// swift-tools-version:6.0
import PackageDescription

/// Numeric code is compiled with optimisation even in debug builds: the tests run real forward and
/// backward passes, and unoptimised Swift loops are 20-50x slower than the BLAS calls around them.
let optimisedNumerics: [SwiftSetting] = [.unsafeFlags(["-O"], .when(configuration: .debug))]

/// The vector kernels are built a second time for x86-64-v3 (AVX2 + FMA); the code picks that
/// build at run time only on CPUs that have it.
#if arch(x86_64)
let avx2Numerics: [SwiftSetting] = optimisedNumerics + [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let avx2Numerics: [SwiftSetting] = optimisedNumerics
#endif

let package = Package(
    name: "newsd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "newsd", targets: ["newsd"]),
        .library(name: "NewsdModel", targets: ["NewsdModel"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto",
                       providers: [.apt(["libssl-dev"])]),
        .target(name: "NewsdKernels", swiftSettings: optimisedNumerics),
        .target(name: "NewsdKernelsAVX2", swiftSettings: avx2Numerics),
        .target(name: "NewsdModel", dependencies: ["CBLAS", "CCrypto", "NewsdKernels", "NewsdKernelsAVX2"],
                swiftSettings: optimisedNumerics),
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        .systemLibrary(name: "CLibPQ", providers: [.apt(["libpq-dev"])]),
        .target(name: "NewsdCore"),
        .target(name: "NewsdKafka", dependencies: ["CRdKafka"]),
        .systemLibrary(name: "CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .target(name: "NewsdHTTP", dependencies: ["CCurl"]),
        .target(name: "NewsdTeacher", dependencies: ["NewsdHTTP", "NewsdCore"]),
        .target(name: "NewsdPostgres", dependencies: ["CLibPQ"]),
        .target(name: "NewsdService", dependencies: [
            "NewsdCore", "NewsdModel", "NewsdKafka", "NewsdPostgres", "NewsdTeacher", "NewsdHTTP",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .executableTarget(name: "newsd", dependencies: [
            "NewsdModel", "NewsdCore", "NewsdKafka", "NewsdPostgres", "NewsdService", "NewsdTeacher",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "NewsdCoreTests", dependencies: ["NewsdCore"]),
        .testTarget(name: "NewsdTeacherTests", dependencies: ["NewsdTeacher", "NewsdHTTP", "NewsdCore"]),
        .testTarget(name: "NewsdIntegrationTests", dependencies: [
            "NewsdCore", "NewsdModel", "NewsdKafka", "NewsdPostgres", "NewsdService", "NewsdTeacher",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "NewsdModelTests", dependencies: ["NewsdModel", "NewsdCore"],
                    resources: [.copy("Fixtures")],
                    swiftSettings: optimisedNumerics),
    ]
)
