// swift-tools-version:6.0
// Residual: a pure-Swift deep-learning engine (tensors, tape-based autodiff, SIMD kernels,
// layers, optimizers, data, and the model zoo of He et al. 2015). No package dependencies.
import PackageDescription
import Foundation

// Native vector code. SwiftPM builds for baseline x86-64 (SSE2) unless told otherwise, where every
// SIMD FMA lane becomes a call to `fmaf`. `-target-cpu native` makes the same source compile to
// AVX-512 `vfmadd...ps zmm`. `unsafeFlags` are accepted for the root package and for path/branch
// dependencies; a *versioned* dependency must not carry them, so a package that depends on Residual
// by version sets RESIDUAL_PORTABLE=1 when it resolves/builds (see docs/Kernels.md, "Build settings").
let portable = ProcessInfo.processInfo.environment["RESIDUAL_PORTABLE"] != nil
let native: [SwiftSetting] = portable ? [] : [.unsafeFlags(["-target-cpu", "native"])]

let package = Package(
    name: "Residual",
    products: [
        .library(name: "Residual", targets: ["Residual"]),
        .library(name: "ResidualKernels", targets: ["ResidualKernels"]),
        .library(name: "ResidualAutodiff", targets: ["ResidualAutodiff"]),
        .library(name: "ResidualNN", targets: ["ResidualNN"]),
        .library(name: "ResidualOptimizers", targets: ["ResidualOptimizers"]),
        .library(name: "ResidualData", targets: ["ResidualData"]),
        .library(name: "ResidualZoo", targets: ["ResidualZoo"]),
        .executable(name: "resnet", targets: ["resnet"]),
        .executable(name: "bench", targets: ["bench"]),
    ],
    dependencies: [],
    targets: [
        // Import direction (docs/Architecture.md): Kernels <- Autodiff <- {NN, Optimizers, Data}; NN <- Zoo.
        .target(name: "ResidualKernels", swiftSettings: native),
        .target(name: "ResidualAutodiff", dependencies: ["ResidualKernels"], swiftSettings: native),
        .target(name: "ResidualNN", dependencies: ["ResidualAutodiff", "ResidualKernels"], exclude: ["README.md"],
                swiftSettings: native),
        .target(name: "ResidualOptimizers", dependencies: ["ResidualAutodiff", "ResidualKernels"], exclude: ["README.md"],
                swiftSettings: native),
        .target(name: "ResidualData", dependencies: ["ResidualAutodiff"], resources: [.copy("Resources/fashion-mnist")],
                swiftSettings: native),
        .target(name: "ResidualZoo", dependencies: ["ResidualNN", "ResidualAutodiff"], exclude: ["README.md"],
                swiftSettings: native),
        .target(
            name: "Residual",
            dependencies: ["ResidualKernels", "ResidualAutodiff", "ResidualNN", "ResidualOptimizers",
                           "ResidualData", "ResidualZoo"],
            swiftSettings: native),
        .target(name: "ResidualTestSupport", dependencies: ["ResidualAutodiff"], swiftSettings: native),

        .executableTarget(name: "resnet", dependencies: ["Residual"], path: "Examples/resnet", swiftSettings: native),
        .executableTarget(name: "CustomNetwork", dependencies: ["Residual"], path: "Examples/CustomNetwork", swiftSettings: native),
        .executableTarget(name: "bench", dependencies: ["Residual"], path: "Benchmarks/bench", swiftSettings: native),

        .testTarget(name: "ResidualKernelsTests", dependencies: ["ResidualKernels"], swiftSettings: native),
        .testTarget(name: "ResidualAutodiffTests", dependencies: ["ResidualAutodiff", "ResidualTestSupport"], swiftSettings: native),
        .testTarget(name: "ResidualNNTests", dependencies: ["Residual", "ResidualTestSupport"], swiftSettings: native),
        .testTarget(name: "ResidualDataTests", dependencies: ["ResidualData"], swiftSettings: native),
        .testTarget(name: "ResidualZooTests", dependencies: ["Residual", "ResidualTestSupport"], swiftSettings: native),
        // Runs the built `resnet` executable as a user would (usage errors, resume, Ctrl-C).
        .testTarget(name: "ResnetCLITests"),
    ]
)
