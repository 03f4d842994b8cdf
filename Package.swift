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

let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let lifecycle: Target.Dependency = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let metrics: Target.Dependency = .product(name: "CoreMetrics", package: "swift-metrics")
let hummingbird: [Target.Dependency] = [
    .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdCore", package: "hummingbird"),
    .product(name: "NIOCore", package: "swift-nio"), .product(name: "HTTPTypes", package: "swift-http-types"),
]

let package = Package(
    name: "newsd",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "newsd", targets: ["newsd"]),
        .library(name: "NewsdModel", targets: ["NewsdModel"]),
        // For the fuzz package in Fuzz/ (scripts/fuzz.sh): the parsers it drives.
        .library(name: "NewsdIngest", targets: ["NewsdIngest"]),
        .library(name: "NewsdOps", targets: ["NewsdOps"]),
        .library(name: "NewsdTeacher", targets: ["NewsdTeacher"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // Operations: metrics API + Prometheus exposition, and the HTTP server of /metrics,
        // /healthz, /readyz and the dev teacher (connection cap, idle timeout, ServiceLifecycle).
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.0.0"),
    ],
    targets: [
        // C libraries, each behind a module map and a shim header with typed wrappers of the
        // variadic functions Swift cannot call.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CCrypto", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CRdKafka", pkgConfig: "rdkafka", providers: [.apt(["librdkafka-dev"])]),
        .systemLibrary(name: "CLibPQ", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CCurl", providers: [.apt(["libcurl4-openssl-dev"])]),

        // The one place for libc: clocks, signals, systemd, files, terminal, retry; CSV.
        .target(name: "NewsdSystem", dependencies: [lifecycle]),
        // Transports and stores, one per C library.
        .target(name: "NewsdKafka", dependencies: ["CRdKafka", "NewsdSystem"]),
        .target(name: "NewsdPostgres", dependencies: ["CLibPQ", "NewsdSystem", logging]),
        .target(name: "NewsdHTTP", dependencies: ["CCurl", "NewsdSystem", logging, lifecycle] + hummingbird),

        // The student: pure compute, no network, no database.
        .target(name: "NewsdKernels", swiftSettings: optimisedNumerics),
        .target(name: "NewsdKernelsAVX2", swiftSettings: avx2Numerics),
        // The int8 kernels (C with intrinsics; per-function target attributes, dispatched at run
        // time from the CPU's features). Optimised in debug builds too.
        .target(name: "NewsdInt8", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "NewsdModel", dependencies: ["CBLAS", "CCrypto", "NewsdKernels", "NewsdKernelsAVX2", "NewsdInt8", "NewsdSystem"],
                swiftSettings: optimisedNumerics),

        // Configuration, schema, metrics and health.
        .target(name: "NewsdOps", dependencies: ["NewsdSystem", "NewsdPostgres", "NewsdHTTP", logging, lifecycle, metrics,
                                                 .product(name: "Prometheus", package: "swift-prometheus"),
                                                 .product(name: "TOMLKit", package: "TOMLKit")]),
        // The stages of the data flow.
        .target(name: "NewsdTeacher", dependencies: ["NewsdSystem", "NewsdHTTP", "NewsdPostgres", "NewsdModel", "NewsdOps", logging, lifecycle]),
        .target(name: "NewsdIngest", dependencies: ["NewsdSystem", "NewsdKafka", "NewsdPostgres", "NewsdModel", "NewsdOps", "NewsdTeacher",
                                                    logging, lifecycle]),
        .target(name: "NewsdDistill", dependencies: ["NewsdSystem", "NewsdPostgres", "NewsdModel", "NewsdOps", "NewsdTeacher", logging, lifecycle]),
        // Negative-shift alerts (detector, teacher verification, outbox delivery), the analysts'
        // rollups and reports.
        .target(name: "NewsdAlerts", dependencies: ["CCrypto", "NewsdSystem", "NewsdPostgres", "NewsdHTTP", "NewsdOps", "NewsdTeacher", logging, lifecycle]),
        // Wires the stages into one ServiceGroup.
        .target(name: "NewsdDaemon", dependencies: ["NewsdSystem", "NewsdKafka", "NewsdPostgres", "NewsdModel", "NewsdOps", "NewsdTeacher",
                                                    "NewsdIngest", "NewsdDistill", "NewsdAlerts", logging, lifecycle,
                                                    .product(name: "UnixSignals", package: "swift-service-lifecycle")]),
        // Development stand-ins (mock cluster, dev teacher, demo data): linked by the CLI and tests only.
        .target(name: "NewsdDevTools", dependencies: ["CRdKafka", "NewsdSystem", "NewsdKafka", "NewsdHTTP", "NewsdModel", "NewsdTeacher", "NewsdIngest", logging]),
        .executableTarget(name: "newsd", dependencies: [
            "NewsdSystem", "NewsdKafka", "NewsdPostgres", "NewsdModel", "NewsdOps", "NewsdTeacher", "NewsdIngest", "NewsdDistill",
            "NewsdAlerts", "NewsdDaemon", "NewsdDevTools", logging, lifecycle,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .testTarget(name: "NewsdSystemTests", dependencies: ["NewsdSystem"]),
        .testTarget(name: "NewsdModelTests", dependencies: ["NewsdModel", "NewsdInt8", "NewsdSystem"],
                    resources: [.copy("Fixtures")], swiftSettings: optimisedNumerics),
        .testTarget(name: "NewsdOpsTests", dependencies: ["NewsdOps", "NewsdSystem"]),
        .testTarget(name: "NewsdIngestTests", dependencies: ["NewsdIngest", "NewsdSystem"]),
        .testTarget(name: "NewsdTeacherTests", dependencies: ["NewsdTeacher", "NewsdHTTP", "NewsdSystem", "NewsdOps"]),
        .testTarget(name: "NewsdDevToolsTests", dependencies: ["NewsdDevTools", "NewsdTeacher", "NewsdHTTP", "NewsdSystem"]),
        .testTarget(name: "NewsdAlertsTests", dependencies: ["NewsdAlerts", "NewsdOps", "NewsdSystem"]),
        .testTarget(name: "NewsdDistillTests", dependencies: ["NewsdDistill", "NewsdModel"]),
        .testTarget(name: "NewsdIntegrationTests", dependencies: [
            "NewsdSystem", "NewsdKafka", "NewsdPostgres", "NewsdModel", "NewsdOps", "NewsdTeacher", "NewsdIngest", "NewsdDistill", "NewsdAlerts",
            "NewsdDaemon", "NewsdDevTools", logging, lifecycle,
        ]),
    ]
)
