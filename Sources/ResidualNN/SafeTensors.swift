import Foundation
import ResidualAutodiff

/// A problem with a checkpoint file or state dict. Files are untrusted: every failure is a thrown
/// error naming the file, the tensor and what was expected; nothing is read out of bounds.
public struct CheckpointError: Error, CustomStringConvertible, Equatable {
    public enum Kind: String, Sendable {
        case io, truncated, corruptHeader, badOffsets, unsupportedDType, missing, unexpected, shapeMismatch
    }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

/// The safetensors format of the PyTorch / Hugging Face ecosystem: an 8-byte little-endian header
/// length N, N bytes of JSON (`{"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
/// "__metadata__": {...}}`), then the raw little-endian data, offsets relative to its start.
///
/// Reads F32, F16, BF16, F64, I64 and I32 (converted to Float on load; I64 is how PyTorch stores
/// `num_batches_tracked`); writes F32. Every header is checked before any tensor is built: a
/// truncated file, a header length beyond the file or beyond ``maximumHeaderBytes``, malformed or
/// non-UTF-8 JSON, a duplicate name, a malformed entry, an unknown dtype, a byte span that does not
/// match dtype × shape, offsets outside the data, and two entries sharing bytes all throw.
public enum SafeTensors {
    /// Headers larger than this (the reference implementation's limit) are rejected before
    /// anything is allocated for them.
    public static let maximumHeaderBytes = 100_000_000

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

    struct Entry {
        let name: String, dtype: String, shape: [Int], begin: Int, end: Int
    }

    public static func parse(_ data: Data, file: String = "<memory>") throws(CheckpointError) -> Contents {
        guard data.count >= 8 else {
            throw CheckpointError(.truncated, "\(file): \(data.count) bytes, too short for the 8-byte header length")
        }
        let n64 = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n64 <= UInt64(maximumHeaderBytes) else {
            throw CheckpointError(.corruptHeader,
                                  "\(file): header length \(n64) exceeds the \(maximumHeaderBytes)-byte limit")
        }
        let n = Int(n64)
        guard n <= data.count - 8 else {
            throw CheckpointError(.truncated,
                                  "\(file): header of \(n) bytes but the file has only \(data.count - 8) after the length")
        }
        let start = data.startIndex
        let header: HeaderJSON
        do { header = try HeaderJSON.parse(Array(data[(start + 8)..<(start + 8 + n)])) } catch {
            throw CheckpointError(.corruptHeader, "\(file): the header is not valid JSON: \(error.message)")
        }
        guard case .object(let members) = header else {
            throw CheckpointError(.corruptHeader, "\(file): the header is not a JSON object")
        }
        let dataStart = 8 + n, dataBytes = data.count - dataStart
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for (name, value) in members {
            if name == "__metadata__" {
                guard case .object(let pairs) = value else {
                    throw CheckpointError(.corruptHeader, "\(file): __metadata__ must map strings to strings")
                }
                for (k, v) in pairs {
                    guard let s = v.string else {
                        throw CheckpointError(.corruptHeader, "\(file): __metadata__ value '\(k)' is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            entries.append(try entry(name, value, dataBytes: dataBytes, file: file))
        }
        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (a, b) in zip(entries, entries.dropFirst()) where b.begin < a.end {
            throw CheckpointError(.badOffsets, "\(file): tensors '\(a.name)' (bytes \(a.begin)..<\(a.end)) and "
                                  + "'\(b.name)' (bytes \(b.begin)..<\(b.end)) overlap")
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

    /// Validates one header entry against the data section.
    static func entry(_ name: String, _ value: HeaderJSON, dataBytes: Int,
                      file: String) throws(CheckpointError) -> Entry {
        guard let dtype = value["dtype"]?.string, let shapeJSON = value["shape"]?.array,
              let offsetsJSON = value["data_offsets"]?.array, offsetsJSON.count == 2 else {
            throw CheckpointError(.corruptHeader, "\(file): tensor '\(name)' needs dtype, shape and two data_offsets")
        }
        let shape = shapeJSON.compactMap(\.integer), offsets = offsetsJSON.compactMap(\.integer)
        guard shape.count == shapeJSON.count, offsets.count == 2, shape.allSatisfy({ $0 >= 0 }) else {
            throw CheckpointError(.corruptHeader, "\(file): tensor '\(name)' has a malformed shape or offsets "
                                  + "(non-negative integers needed)")
        }
        guard let size = elementSize(dtype) else {
            throw CheckpointError(.unsupportedDType,
                                  "\(file): tensor '\(name)' has dtype \(dtype); supported: F32, F16, BF16, F64, I64, I32")
        }
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, p <= 1 << 40 else {
                throw CheckpointError(.corruptHeader, "\(file): tensor '\(name)' shape \(shape) is absurd")
            }
            count = p
        }
        guard offsets[0] >= 0, offsets[0] <= offsets[1], offsets[1] <= dataBytes else {
            throw CheckpointError(.badOffsets,
                                  "\(file): tensor '\(name)' data_offsets \(offsets) outside the \(dataBytes) data bytes")
        }
        guard offsets[1] - offsets[0] == count * size else {
            throw CheckpointError(.badOffsets, "\(file): tensor '\(name)' spans \(offsets[1] - offsets[0]) bytes but "
                                  + "\(dtype) \(describe(shape)) needs \(count * size)")
        }
        return Entry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
    }

    static func elementSize(_ dtype: String) -> Int? {
        switch dtype {
        case "F32", "I32": 4
        case "F16", "BF16": 2
        case "F64", "I64": 8
        default: nil
        }
    }

    /// Little-endian `src` of `dtype` to Float. (x86-64 and arm64 are little-endian.)
    static func convert(_ dtype: String, _ src: UnsafeRawBufferPointer, _ dst: UnsafeMutableBufferPointer<Float>) {
        switch dtype {
        case "F32":
            if dst.count > 0 {
                UnsafeMutableRawPointer(dst.baseAddress!).copyMemory(from: src.baseAddress!, byteCount: src.count)
            }
        case "F64":
            for i in 0..<dst.count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        case "I64":
            for i in 0..<dst.count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
        case "I32":
            for i in 0..<dst.count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
        case "BF16":
            for i in 0..<dst.count {
                dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
            }
        default: // F16
            for i in 0..<dst.count { dst[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
        }
    }

    /// IEEE binary16 to binary32, exactly (subnormals, infinities and NaN payloads included).
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h >> 15) << 31, exp = Int((h >> 10) & 0x1F), frac = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(frac) * 0x1p-24      // subnormal (or zero)
            return sign != 0 ? -v : v
        }
        if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (frac << 13)) }
        return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (frac << 13))
    }

    /// The file's bytes: F32 tensors in the given order (each element in logical order), a
    /// sorted-key JSON header padded with spaces to a multiple of 8 bytes.
    public static func serialize(_ tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> Data {
        let names = tensors.map(\.0)
        shapeCheck(Set(names).count == names.count && !names.contains("__metadata__"),
                   "SafeTensors.serialize: duplicate or reserved tensor names in \(names)")
        var json = "{"
        var offset = 0
        var fields: [(String, String)] = []
        if !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\(quoted($0.key)):\(quoted($0.value))" }
            fields.append(("__metadata__", "{" + pairs.joined(separator: ",") + "}"))
        }
        for (name, t) in tensors {
            let shape = t.shape.map(String.init).joined(separator: ",")
            let offsets = "[\(offset),\(offset + 4 * t.count)]"
            fields.append((name, "{\"dtype\":\"F32\",\"shape\":[\(shape)],\"data_offsets\":\(offsets)}"))
            offset += 4 * t.count
        }
        json += fields.sorted { $0.0 < $1.0 }.map { "\(quoted($0.0)):\($0.1)" }.joined(separator: ",") + "}"
        var header = Array(json.utf8)
        header.append(contentsOf: [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8))
        var out = Data(capacity: 8 + header.count + offset)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for (_, t) in tensors {
            t.scalars.withUnsafeBytes { out.append(contentsOf: $0) }
        }
        return out
    }

    /// A JSON string literal.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// Writes atomically (see ``atomicWrite(_:to:)``).
    public static func write(_ tensors: [(String, Tensor)], metadata: [String: String] = [:],
                             to url: URL) throws(CheckpointError) {
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

    /// Writes `data` to a temporary file in the destination's directory, fsyncs it, renames it over
    /// `url`, then fsyncs the directory so the rename itself is durable. A crash at any point leaves
    /// either the old file or the new one, never a partial file; on failure the temporary file is
    /// removed and the old file is untouched.
    public static func atomicWrite(_ data: Data, to url: URL) throws(CheckpointError) {
        let dir = url.deletingLastPathComponent()
        let suffix = "tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).\(suffix)")
        func fail(_ what: String) -> CheckpointError {
            let reason = String(cString: strerror(errno))
            unlink(tmp.path)
            return CheckpointError(.io, "\(url.path): \(what): \(reason)")
        }
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        } catch {
            throw CheckpointError(.io, "\(url.path): cannot create the directory: \(error.localizedDescription)")
        }
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        guard fd >= 0 else { throw fail("cannot create \(tmp.lastPathComponent)") }
        func writeAll(_ part: Data) -> Bool {
            part.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Bool in
                var done = 0
                while done < raw.count {
                    let r = posixWrite(fd, raw.baseAddress! + done, raw.count - done)
                    if r < 0 { if errno == EINTR { continue }; return false }
                    done += r
                }
                return true
            }
        }
        if testWriteDelay > 0 {
            // Test hook (scripts/crash_test.sh): a half-written file, then a complete but not yet
            // renamed one, each held for a while so that a SIGKILL lands inside the write.
            guard writeAll(data.prefix(data.count / 2)) else { close(fd); throw fail("write failed") }
            usleep(testWriteDelay)
            guard writeAll(data.dropFirst(data.count / 2)) else { close(fd); throw fail("write failed") }
            guard fsync(fd) == 0 else { close(fd); throw fail("fsync failed") }
            usleep(testWriteDelay)
        } else {
            guard writeAll(data) else { close(fd); throw fail("write failed") }
            guard fsync(fd) == 0 else { close(fd); throw fail("fsync failed") }
        }
        guard close(fd) == 0 else { throw fail("close failed") }
        guard rename(tmp.path, url.path) == 0 else { throw fail("rename failed") }
        // Make the rename durable. Some file systems refuse to fsync a directory; the data is
        // already safe then, so that failure is not reported.
        let dfd = open(dir.path, O_RDONLY)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }
        removeStaleTemporaries(of: url)
    }
}

/// `write(2)`, outside `SafeTensors` whose own `write` would shadow it.
private func posixWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int { write(fd, p, n) }

/// What `loadStateDict` did not match (non-strict loading).
public struct LoadReport: Sendable, Equatable {
    public var missing: [String]
    public var unexpected: [String]
}

extension AnyModule {
    /// Parameters and buffers by dotted name, in PyTorch's `state_dict()` order.
    public func stateDict() -> [(String, Tensor)] {
        namedState().map { name, entry in
            switch entry {
            case .parameter(let p): (name, p.data)
            case .buffer(let b): (name, b.value)
            }
        }
    }

    /// Copies tensors into parameters and buffers by name, like PyTorch's `load_state_dict`.
    ///
    /// Strict (the default) throws if any name of the model is missing or any name in `tensors`
    /// is not in the model; non-strict loads what matches and reports the rest. A shape mismatch
    /// always throws (as in PyTorch). Errors list every offending tensor with its shapes. Nothing is
    /// modified unless every check passes. A missing `num_batches_tracked` is tolerated (PyTorch
    /// checkpoints from before it existed lack it), and a scalar counter saved as shape `[1]` loads
    /// into shape `[]`.
    @discardableResult
    public func loadStateDict(_ tensors: [String: Tensor], strict: Bool = true) throws(CheckpointError) -> LoadReport {
        let state = namedState()
        var missing: [(String, [Int])] = [], mismatched: [String] = []
        var known = Set<String>()
        for (name, entry) in state {
            known.insert(name)
            guard let t = tensors[name] else {
                if !name.hasSuffix("num_batches_tracked") { missing.append((name, entry.shape)) }
                continue
            }
            let scalarCounter = entry.shape == [] && t.shape == [1]
            if t.shape != entry.shape && !scalarCounter {
                mismatched.append("'\(name)': the checkpoint has \(describe(t.shape)), the model expects \(describe(entry.shape))")
            }
        }
        let unexpected = tensors.keys.filter { !known.contains($0) }.sorted()
        func list(_ items: [String]) -> String {
            items.prefix(20).joined(separator: "; ") + (items.count > 20 ? "; and \(items.count - 20) more" : "")
        }
        if !mismatched.isEmpty {
            throw CheckpointError(.shapeMismatch, "shape mismatch for \(mismatched.count) tensor(s): \(list(mismatched))")
        }
        if strict && !missing.isEmpty {
            throw CheckpointError(.missing, "\(missing.count) tensor(s) of the model missing from the checkpoint: "
                                  + list(missing.map { "'\($0.0)' \(describe($0.1))" }))
        }
        if strict && !unexpected.isEmpty {
            throw CheckpointError(.unexpected, "\(unexpected.count) tensor(s) in the checkpoint not in the model: "
                                  + list(unexpected.map { "'\($0)' \(describe(tensors[$0]!.shape))" }))
        }
        for (name, entry) in state {
            guard let t = tensors[name] else { continue }
            switch entry {
            case .parameter(let p): p.data = t.reshaped(p.shape).detached
            case .buffer(let b): b.value = t.reshaped(b.shape).detached
            }
        }
        return LoadReport(missing: missing.map(\.0), unexpected: unexpected)
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
