import Foundation
import ResidualAutodiff

/// A problem with a checkpoint file or state dict. Files are untrusted: every failure is a thrown
/// error naming the file, the tensor and what was expected; nothing is read out of bounds.
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable { case io, truncated, corruptHeader, badOffsets, unsupportedDType, missing, unexpected, shapeMismatch }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

/// The safetensors format of the PyTorch / Hugging Face ecosystem: an 8-byte little-endian header
/// length N, N bytes of JSON (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
/// "__metadata__": {...}}`), then the raw little-endian data. Reads F32, F16, BF16, F64, I64 and I32
/// (converted to Float); writes F32.
public enum SafeTensors {
    /// Headers larger than this are rejected before anything is allocated for them.
    public static let maximumHeaderBytes = 100 << 20

    public struct Contents: Sendable {
        public var tensors: [String: Tensor]
        public var metadata: [String: String]
        /// Tensor names in file order (by data offset).
        public var names: [String]
    }

    public static func read(_ url: URL) throws(CheckpointError) -> Contents {
        let data: Data
        do { data = try Data(contentsOf: url, options: .mappedIfSafe) } catch {
            throw CheckpointError(.io, "\(url.path): cannot read: \(error.localizedDescription)")
        }
        return try parse(data, file: url.path)
    }

    public static func parse(_ data: Data, file: String = "<memory>") throws(CheckpointError) -> Contents {
        guard data.count >= 8 else { throw CheckpointError(.truncated, "\(file): \(data.count) bytes, too short for the 8-byte header length") }
        let n64 = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n64 <= UInt64(maximumHeaderBytes) else {
            throw CheckpointError(.corruptHeader, "\(file): header length \(n64) exceeds the \(maximumHeaderBytes)-byte limit")
        }
        let n = Int(n64)
        guard 8 + n <= data.count else {
            throw CheckpointError(.truncated, "\(file): header of \(n) bytes but the file has only \(data.count - 8) after the length")
        }
        let headerData = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + 8 + n))
        guard let object = try? JSONSerialization.jsonObject(with: headerData), let header = object as? [String: Any] else {
            throw CheckpointError(.corruptHeader, "\(file): the header is not a JSON object")
        }
        let dataStart = 8 + n, dataBytes = data.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [(name: String, dtype: String, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in header {
            if name == "__metadata__" {
                guard let m = value as? [String: String] else {
                    throw CheckpointError(.corruptHeader, "\(file): __metadata__ must map strings to strings")
                }
                metadata = m
                continue
            }
            guard let e = value as? [String: Any], let dtype = e["dtype"] as? String,
                  let shapeAny = e["shape"] as? [Any], let offAny = e["data_offsets"] as? [Any], offAny.count == 2 else {
                throw CheckpointError(.corruptHeader, "\(file): tensor '\(name)' needs dtype, shape and two data_offsets")
            }
            let shape = shapeAny.compactMap { ($0 as? NSNumber)?.intValue }
            let offs = offAny.compactMap { ($0 as? NSNumber)?.intValue }
            guard shape.count == shapeAny.count, offs.count == 2, shape.allSatisfy({ $0 >= 0 }) else {
                throw CheckpointError(.corruptHeader, "\(file): tensor '\(name)' has a malformed shape or offsets")
            }
            guard let size = elementSize(dtype) else {
                throw CheckpointError(.unsupportedDType, "\(file): tensor '\(name)' has dtype \(dtype); supported: F32, F16, BF16, F64, I64, I32")
            }
            var count = 1
            for d in shape {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o && p <= 1 << 40 else { throw CheckpointError(.corruptHeader, "\(file): tensor '\(name)' shape \(shape) is absurd") }
                count = p
            }
            guard offs[0] >= 0 && offs[0] <= offs[1] && offs[1] <= dataBytes else {
                throw CheckpointError(.badOffsets, "\(file): tensor '\(name)' data_offsets \(offs) outside the \(dataBytes) data bytes")
            }
            guard offs[1] - offs[0] == count * size else {
                throw CheckpointError(.badOffsets, "\(file): tensor '\(name)' spans \(offs[1] - offs[0]) bytes but \(dtype) \(describe(shape)) needs \(count * size)")
            }
            entries.append((name, dtype, shape, offs[0], offs[1]))
        }
        entries.sort { $0.begin < $1.begin || ($0.begin == $1.begin && $0.end < $1.end) }
        for (a, b) in zip(entries, entries.dropFirst()) where b.begin < a.end {
            throw CheckpointError(.badOffsets, "\(file): tensors '\(a.name)' and '\(b.name)' overlap")
        }
        var tensors: [String: Tensor] = [:]
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            for e in entries {
                let src = UnsafeRawBufferPointer(rebasing: raw[(dataStart + e.begin)..<(dataStart + e.end)])
                tensors[e.name] = Tensor(shape: e.shape) { dst in convert(e.dtype, src, dst) }
            }
        }
        return Contents(tensors: tensors, metadata: metadata, names: entries.map(\.name))
    }

    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F32", "I32": 4
        case "F16", "BF16": 2
        case "F64", "I64": 8
        default: nil
        }
    }

    static func convert(_ dtype: String, _ src: UnsafeRawBufferPointer, _ dst: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<dst.count {
            switch dtype {
            case "F32": dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            case "F64": dst[i] = Float(Double(bitPattern: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))))
            case "I64": dst[i] = Float(Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
            case "I32": dst[i] = Float(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
            case "BF16":
                let b = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                dst[i] = Float(bitPattern: UInt32(b) << 16)
            default: // F16
                dst[i] = halfToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
            }
        }
    }

    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31, exp = Int((h >> 10) & 0x1F), frac = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(frac) * 0x1p-24      // subnormal (or zero)
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (frac << 13)) }
        return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (frac << 13))
    }

    /// The file's bytes: F32 tensors in the given order, sorted-key JSON header padded to 8 bytes.
    public static func serialize(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for (name, t) in tensors {
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [offset, offset + 4 * t.count]] as [String: Any]
            offset += 4 * t.count
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        json.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - json.count % 8) % 8))
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for (_, t) in tensors {
            t.withUnsafeBufferPointer { p in
                // x86-64 and arm64 are little-endian: the floats' bytes are the file's bytes.
                out.append(UnsafeBufferPointer(start: p.baseAddress, count: p.count))
            }
        }
        return out
    }

    /// Writes atomically: a temporary file in the same directory, fsync, then rename over `url`.
    /// A crash at any point leaves either the old file or the new one, never a partial file.
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:], to url: URL) throws(CheckpointError) {
        try atomicWrite(serialize(tensors, metadata: metadata), to: url)
    }

    /// Microseconds to pause inside each write, from `RESIDUAL_TEST_SLOW_WRITE_MS` (a test hook; 0).
    static let testWriteDelay: UInt32 = UInt32(ProcessInfo.processInfo.environment["RESIDUAL_TEST_SLOW_WRITE_MS"]
        .flatMap { UInt32($0) }.map { min($0, 60_000) * 1000 } ?? 0)

    /// Removes `.NAME.tmp-PID-*` files that a killed writer left next to `url` (their process is gone).
    static func removeStaleTemporaries(of url: URL) {
        let dir = url.deletingLastPathComponent(), prefix = ".\(url.lastPathComponent).tmp-"
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return }
        for name in names where name.hasPrefix(prefix) {
            guard let pid = Int32(name.dropFirst(prefix.count).prefix { $0 != "-" }), pid != getpid(),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            try? FileManager.default.removeItem(at: dir.appendingPathComponent(name))
        }
    }

    public static func atomicWrite(_ data: Data, to url: URL) throws(CheckpointError) {
        let dir = url.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
                throw CheckpointError(.io, "\(tmp.path): cannot create")
            }
            let handle = try FileHandle(forWritingTo: tmp)
            if testWriteDelay > 0 {
                // Test hook (scripts/crash_test.sh): a half-written file, then a complete but not yet
                // renamed one, each held for a while so that a SIGKILL lands inside the write.
                try handle.write(contentsOf: data.prefix(data.count / 2))
                usleep(testWriteDelay)
                try handle.write(contentsOf: data.dropFirst(data.count / 2))
                try handle.synchronize()
                usleep(testWriteDelay)
            } else {
                try handle.write(contentsOf: data)
                try handle.synchronize()
            }
            try handle.close()
            guard rename(tmp.path, url.path) == 0 else {
                throw CheckpointError(.io, "\(url.path): rename failed (errno \(errno))")
            }
            let fd = open(dir.path, O_RDONLY)
            if fd >= 0 { fsync(fd); close(fd) }
            removeStaleTemporaries(of: url)
        } catch let e as CheckpointError {
            try? FileManager.default.removeItem(at: tmp)
            throw e
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw CheckpointError(.io, "\(url.path): \(error.localizedDescription)")
        }
    }
}

/// What `loadStateDict` did not match (non-strict loading).
public struct LoadReport: Sendable, Equatable {
    public var missing: [String]
    public var unexpected: [String]
}

extension AnyModule {
    /// Parameters and buffers by dotted name (PyTorch's `state_dict()`).
    public func stateDict() -> [(String, Tensor)] {
        namedParameters().map { ($0.0, $0.1.data) } + namedBuffers().map { ($0.0, $0.1.value) }
    }

    /// Copies tensors into parameters and buffers by name. Strict (the default, like PyTorch) throws
    /// on any missing or unexpected name; a shape mismatch always throws, naming the tensor and both
    /// shapes. Nothing is modified unless every check passes.
    @discardableResult
    public func loadStateDict(_ tensors: [String: Tensor], strict: Bool = true) throws(CheckpointError) -> LoadReport {
        let params = namedParameters(), buffers = namedBuffers()
        var known = Set<String>()
        var missing: [String] = []
        for (name, p) in params {
            known.insert(name)
            guard let t = tensors[name] else { missing.append(name); continue }
            guard t.shape == p.shape else {
                throw CheckpointError(.shapeMismatch, "tensor '\(name)': the checkpoint has \(describe(t.shape)), the model expects \(describe(p.shape))")
            }
        }
        for (name, b) in buffers {
            known.insert(name)
            guard let t = tensors[name] else {
                // PyTorch checkpoints from before num_batches_tracked existed lack it; tolerate that.
                if !name.hasSuffix("num_batches_tracked") { missing.append(name) }
                continue
            }
            guard t.count == b.value.count else {
                throw CheckpointError(.shapeMismatch, "tensor '\(name)': the checkpoint has \(describe(t.shape)), the model expects \(describe(b.value.shape))")
            }
        }
        let unexpected = tensors.keys.filter { !known.contains($0) }.sorted()
        if strict && !missing.isEmpty {
            throw CheckpointError(.missing, "missing from the checkpoint: \(missing.prefix(10).joined(separator: ", "))\(missing.count > 10 ? " and \(missing.count - 10) more" : "")")
        }
        if strict && !unexpected.isEmpty {
            throw CheckpointError(.unexpected, "not in the model: \(unexpected.prefix(10).joined(separator: ", "))\(unexpected.count > 10 ? " and \(unexpected.count - 10) more" : "")")
        }
        for (name, p) in params { if let t = tensors[name] { p.data = t } }
        for (name, b) in buffers { if let t = tensors[name] { b.value = t.reshaped(b.value.shape).detached } }
        return LoadReport(missing: missing, unexpected: unexpected)
    }

    /// Saves the state dict as safetensors (atomically).
    public func save(to url: URL, metadata: [String: String] = [:]) throws(CheckpointError) {
        try SafeTensors.write(stateDict(), metadata: metadata, to: url)
    }

    /// Loads a safetensors state dict (e.g. a torchvision checkpoint exported with safetensors).
    @discardableResult
    public func load(from url: URL, strict: Bool = true) throws(CheckpointError) -> LoadReport {
        try loadStateDict(SafeTensors.read(url).tensors, strict: strict)
    }
}
