// swift-tools-version:6.0
// libFuzzer targets for newsd's parsers of untrusted input. Built and run by scripts/fuzz.sh
// (`swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library`): each target only
// defines `LLVMFuzzerTestOneInput`; libFuzzer provides `main`.
import PackageDescription

let package = Package(
    name: "newsd-fuzz",
    platforms: [.macOS(.v14)],
    dependencies: [.package(name: "newsd", path: "..")],
    targets: [
        .target(name: "FuzzSupport"),
        .executableTarget(name: "FuzzMessageParser", dependencies: ["FuzzSupport", .product(name: "NewsdIngest", package: "newsd")]),
        .executableTarget(name: "FuzzCompanyLinker", dependencies: ["FuzzSupport", .product(name: "NewsdIngest", package: "newsd")]),
        .executableTarget(name: "FuzzConfiguration", dependencies: ["FuzzSupport", .product(name: "NewsdOps", package: "newsd")]),
        .executableTarget(name: "FuzzAnswerParser", dependencies: ["FuzzSupport", .product(name: "NewsdTeacher", package: "newsd")]),
    ]
)
