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
public func relativeError(_ a: Tensor, _ b: Tensor) -> Float {
    precondition(a.shape == b.shape, "relativeError: \(describe(a.shape)) vs \(describe(b.shape))")
    var maxDiff: Float = 0, maxRef: Float = 0
    a.withUnsafeBufferPointer { pa in
        b.withUnsafeBufferPointer { pb in
            for i in 0..<pa.count {
                maxDiff = max(maxDiff, abs(pa[i] - pb[i]))
                maxRef = max(maxRef, abs(pb[i]))
            }
        }
    }
    return maxRef == 0 ? maxDiff : maxDiff / maxRef
}
