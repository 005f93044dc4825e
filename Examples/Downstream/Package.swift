// swift-tools-version:6.0
// A package that uses Residual as a dependency, the way a user's project would: by path here (CI
// builds it: `.ci/run`), so Residual's `-target-cpu native` flags apply. A package that depends on
// Residual by *version* cannot inherit `unsafeFlags`; it builds with `RESIDUAL_PORTABLE=1` set
// (docs/Kernels.md, "Build settings": what that costs).
import PackageDescription
import Foundation

// A path dependency's identity is its directory name (whatever the checkout is called).
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "Downstream",
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(name: "Downstream", dependencies: [.product(name: "Residual", package: root)]),
    ]
)
