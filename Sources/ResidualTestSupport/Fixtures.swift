import Foundation
import ResidualAutodiff

/// Reads the PyTorch reference fixtures written by `scripts/make_fixtures.py` (safetensors, F32).
/// A deliberately small reader for test fixtures only: checkpoints in the library go through
/// ResidualNN's validating safetensors reader.
public struct ReferenceCases: Sendable {
    public let tensors: [String: Tensor]
    public let metadata: [String: String]

    public init(contentsOf url: URL) throws {
        let data = try Data(contentsOf: url)
        let n = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let header = try JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as! [String: Any]
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in header {
            let entry = value as! [String: Any]
            if name == "__metadata__" { metadata = entry as! [String: String]; continue }
            precondition(entry["dtype"] as? String == "F32", "fixture \(name): only F32")
            let shape = entry["shape"] as! [Int]
            let offsets = entry["data_offsets"] as! [Int]
            let bytes = data.subdata(in: (8 + n + offsets[0])..<(8 + n + offsets[1]))
            let scalars = bytes.withUnsafeBytes { raw in
                (0..<(bytes.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
            tensors[name] = Tensor(shape: shape, scalars: scalars)
        }
        self.tensors = tensors
        self.metadata = metadata
    }

    public subscript(_ name: String) -> Tensor {
        guard let t = tensors[name] else { fatalError("fixture has no tensor '\(name)'") }
        return t
    }

    /// A case's parameters (the JSON stored in the metadata under the case's name).
    public func parameters(_ caseName: String) -> [String: Any] {
        guard let json = metadata[caseName],
              let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        else { fatalError("fixture has no case '\(caseName)'") }
        return object
    }
}

/// max |a − b| / max |b|: the relative error measure of the parity tests.
///
/// A non-finite value anywhere (NaN or ±∞ in `a` that `b` does not have at the same place) gives
/// `.infinity`: `Swift.max(x, .nan)` returns `x`, so a naive running maximum would silently skip a
/// NaN and let a broken kernel pass.
public func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape, "relativeError: \(describe(a.shape)) vs \(describe(b.shape))")
    var maxDiff: Float = 0, maxRef: Float = 0
    var nonFinite = false
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            for i in 0..<pa.count {
                guard pa[i].isFinite && pb[i].isFinite else {
                    if !(pa[i] == pb[i]) { nonFinite = true }   // equal infinities agree; NaN never does
                    continue
                }
                maxDiff = max(maxDiff, abs(pa[i] - pb[i]))
                maxRef = max(maxRef, abs(pb[i]))
            }
        }
    }
    if nonFinite { return .infinity }
    return maxRef == 0 ? maxDiff : maxDiff / maxRef
}

/// Prints `parity <label> <error>` when the environment sets `RESIDUAL_PARITY_LOG` (used to
/// collect the measured errors that docs/Testing.md reports); silent otherwise.
public func logParity(_ label: String, _ error: Float) {
    guard ProcessInfo.processInfo.environment["RESIDUAL_PARITY_LOG"] != nil else { return }
    print("parity \(label) \(error)")
}

/// The deterministic weights of the whole-network fixtures (the same formula as
/// `scripts/make_fixtures.py`'s `fixture_value`): element i of tensor `name` is
/// u = (splitmix64(fnv1a64(name) + i) >> 40) · 2⁻²³ − 1, exact in Float, then scaled by the
/// tensor's role (conv/linear weight: √(3/fan_in); BN gamma 1 + u/4; biases and running means u/10;
/// running variances 1 + u/2).
public enum FixtureWeights {
    static func fnv1a64(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }

    static func splitmix64(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    public static func value(_ name: String, _ shape: [Int]) -> Tensor {
        let n = shape.reduce(1, *)
        let seed = fnv1a64(name)
        let leaf = name.split(separator: ".").last.map(String.init) ?? name
        let fanIn = shape.count > 1 ? shape[1...].reduce(1, *) : 1
        let scale = Float((3.0 / Double(max(fanIn, 1))).squareRoot())
        return Tensor(shape: shape) { out in
            for i in 0..<n {
                let u = Float(splitmix64(seed &+ UInt64(i)) >> 40) * 0x1p-23 - 1
                switch leaf {
                case "running_var": out[i] = 1 + 0.5 * u
                case "running_mean": out[i] = 0.1 * u
                case "weight" where shape.count == 1: out[i] = 1 + 0.25 * u
                case "bias": out[i] = 0.1 * u
                default: out[i] = scale * u
                }
            }
        }
    }

    /// Sampled indices the generator used for a parameter's gradient.
    public static func sampleIndices(_ name: String, count n: Int) -> [Int] {
        Array(Set((0..<16).map { Int(splitmix64(fnv1a64(name) &+ UInt64($0)) % UInt64(n)) })).sorted()
    }
}
