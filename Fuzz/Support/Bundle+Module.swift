import Foundation

// SwiftPM generates `Bundle.module` for targets with resources. The fuzz binaries compile
// `Sources/ResidualData` with plain `swiftc`, so they supply a stand-in; no fuzzed code path
// reads the bundled resources.
extension Foundation.Bundle {
    static let module: Bundle = Bundle.main
}
