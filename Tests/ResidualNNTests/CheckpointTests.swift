import Testing
import Foundation
import Residual
import ResidualTestSupport

@Suite struct CheckpointTests {
    func tempURL(_ name: String) -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("residual-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent(name)
    }

    @Test func roundTripIsBitExact() throws {
        let a = withSeed(1) { Zoo.make("resnet20")! }, b = withSeed(2) { Zoo.make("resnet20")! }
        _ = a(testTensor([4, 3, 32, 32], seed: 3))   // moves the running statistics away from their init
        let url = tempURL("rt.safetensors")
        try a.save(to: url, metadata: ["model": "resnet20"])
        try b.load(from: url)
        for ((n1, t1), (n2, t2)) in zip(a.stateDict(), b.stateDict()) {
            #expect(n1 == n2)
            #expect(t1.scalars.map(\.bitPattern) == t2.scalars.map(\.bitPattern), "\(n1)")
        }
        #expect(try SafeTensors.read(url).metadata["model"] == "resnet20")
        // Every bit pattern survives: signed zeros, subnormals, infinities, NaN payloads.
        let odd: [Float] = [-0.0, 0, .leastNonzeroMagnitude, -.leastNormalMagnitude, .infinity, -.infinity,
                            Float(bitPattern: 0x7FC0_1234), Float(bitPattern: 0xFF80_0001), .greatestFiniteMagnitude, 1 / 3]
        let special = Tensor(shape: [2, 5], scalars: odd)
        let back = try SafeTensors.parse(SafeTensors.serialize([("x", special), ("empty", Tensor(zeros: [0, 3]))],
                                                               metadata: ["k\"ey": "va\\l\nue \u{1F600}"]))
        #expect(back.tensors["x"]!.shape == [2, 5] && back.tensors["x"]!.scalars.map(\.bitPattern) == odd.map(\.bitPattern))
        #expect(back.tensors["empty"]!.shape == [0, 3] && back.metadata == ["k\"ey": "va\\l\nue \u{1F600}"])
    }

    /// A file written the way Python writes one (hand-assembled: little-endian F32, header not padded,
    /// keys in any order, `__metadata__`) reads back exactly.
    @Test func readsHandAssembledF32() throws {
        let values: [Float] = [1.5, -2.25, 3e-8, 65504]
        let bytes = values.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian, Array.init) }
        let json = #"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"format":"pt"}}"#
        let data = Data(withUnsafeBytes(of: UInt64(json.utf8.count).littleEndian, Array.init) + Array(json.utf8) + bytes)
        let c = try SafeTensors.parse(data)
        #expect(c.tensors["w"]!.shape == [2, 2] && c.tensors["w"]!.scalars == values && c.metadata == ["format": "pt"])
    }

    @Test func readsOtherDTypes() throws {
        // Hand-assembled file with F16, BF16, F64 and I64 tensors.
        func file(_ entries: [(String, String, [Int], [UInt8])]) -> Data {
            var header: [String: Any] = [:], body: [UInt8] = [], offset = 0
            for (name, dtype, shape, bytes) in entries {
                header[name] = ["dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes.count]]
                body += bytes; offset += bytes.count
            }
            let json = try! JSONSerialization.data(withJSONObject: header)
            var d = Data(withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init))
            d.append(json); d.append(contentsOf: body)
            return d
        }
        let f16: [UInt8] = [0x00, 0x3C, 0x00, 0xC0, 0x00, 0x35, 0x01, 0x00, 0x00, 0x7C, 0xFF, 0x7B]  // 1, -2, 0.3125, 2^-24, inf, 65504
        let bf16: [UInt8] = [0x80, 0x3F, 0x40, 0xC0]                      // 1, -3
        let f64 = withUnsafeBytes(of: (2.5).bitPattern.littleEndian, Array.init)
        let i64 = withUnsafeBytes(of: Int64(7).littleEndian, Array.init)
        let i32 = withUnsafeBytes(of: Int32(-9).littleEndian, Array.init)
        let c = try SafeTensors.parse(file([("h", "F16", [6], f16), ("b", "BF16", [2], bf16), ("d", "F64", [], f64),
                                            ("i", "I64", [1], i64), ("j", "I32", [1], i32)]))
        #expect(c.tensors["h"]!.scalars == [1, -2, 0.3125, 0x1p-24, .infinity, 65504])
        #expect(c.tensors["j"]!.scalar == -9)
        #expect(c.tensors["b"]!.scalars == [1, -3])
        #expect(c.tensors["d"]!.scalar == 2.5 && c.tensors["i"]!.scalar == 7)
    }

    func expectKind(_ kind: CheckpointError.Kind, _ data: Data, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try SafeTensors.parse(data, file: "bad.safetensors")
            Issue.record("expected \(kind)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.kind == kind, "\(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func corruptFilesThrow() {
        let good = SafeTensors.serialize([("a", Tensor(ones: [2, 3])), ("b", Tensor(zeros: [4]))])
        for cut in [0, 4, 7, 8, 20, good.count - 1] { expectKind(cut < 8 ? .truncated : (cut < 8 + 100 ? .truncated : .badOffsets), good.prefix(cut)) }
        var huge = good; huge.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1) << 40, Array.init))
        expectKind(.corruptHeader, huge)
        var notJSON = good; notJSON[9] = UInt8(ascii: "#")
        expectKind(.corruptHeader, notJSON)
        func withHeader(_ json: String, body: Int) -> Data {
            var bytes = Array(json.utf8); while bytes.count % 8 != 0 { bytes.append(0x20) }
            return Data(withUnsafeBytes(of: UInt64(bytes.count).littleEndian, Array.init) + bytes + [UInt8](repeating: 0, count: body))
        }
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, body: 4))
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, body: 8))
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, body: 12))
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#, body: 8))
        expectKind(.unsupportedDType, withHeader(#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, body: 4))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}"#, body: 4))
        expectKind(.corruptHeader, withHeader(#"[1,2]"#, body: 0))
        // Two entries with the same name (JSONSerialization would silently keep one).
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, body: 8))
        // Two names sharing the same bytes.
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, body: 8))
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, body: 8))
        expectKind(.badOffsets, withHeader(#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[16,16]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":[1,2,3]}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"__metadata__":{"x":1}}"#, body: 0))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} trailing"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#, body: 8))
        expectKind(.corruptHeader, withHeader(#"{"\#u{01}":{}}"#, body: 0))
        expectKind(.corruptHeader, withHeader(String(repeating: "[", count: 10_000), body: 0))
        expectKind(.corruptHeader, Data(withUnsafeBytes(of: UInt64(4).littleEndian, Array.init) + [0x7B, 0x22, 0xFF, 0x22]))
        // A header length between the file size and the limit is a truncated file, beyond the limit a corrupt one.
        var long = good; long.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(good.count).littleEndian, Array.init))
        expectKind(.truncated, long)
        var limit = good; limit.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(SafeTensors.maximumHeaderBytes + 1).littleEndian, Array.init))
        expectKind(.corruptHeader, limit)
        // Errors name the file and the tensor.
        do { _ = try SafeTensors.parse(withHeader(#"{"fc.weight":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, body: 8), file: "m.safetensors") } catch {
            #expect(error.description.contains("m.safetensors") && error.description.contains("fc.weight") && error.description.contains("[3]"))
        }
        // Reading a file that does not exist is an I/O error, not a crash.
        do { _ = try SafeTensors.read(URL(fileURLWithPath: "/nonexistent/x.safetensors")); Issue.record("expected .io") } catch {
            #expect(error.kind == .io && error.description.contains("/nonexistent/x.safetensors"))
        }
    }

    @Test func stateDictMismatchesNameTheTensor() throws {
        let model = Zoo.make("resnet20")!
        let original = model.stateDict()
        var state = Dictionary(uniqueKeysWithValues: original)
        state["layer1.0.conv1.weight"] = Tensor(zeros: [16, 16, 5, 5])
        state["bn1.running_mean"] = Tensor(zeros: [4, 4])             // same count, other shape
        for strict in [true, false] {
            do { try model.loadStateDict(state, strict: strict); Issue.record("expected a shape mismatch") } catch {
                #expect(error.kind == .shapeMismatch)
                #expect(error.description.contains("'layer1.0.conv1.weight': the checkpoint has [16, 16, 5, 5], the model expects [16, 16, 3, 3]"))
                #expect(error.description.contains("'bn1.running_mean': the checkpoint has [4, 4], the model expects [16]"))
            }
        }
        #expect(model.stateDict().map { $0.1.scalars } == original.map { $0.1.scalars }, "nothing loaded on failure")
        state = Dictionary(uniqueKeysWithValues: model.stateDict())
        state["fc.weight"] = nil
        state["extra.weight"] = Tensor(zeros: [1])
        do { try model.loadStateDict(state); Issue.record("expected missing") } catch {
            #expect(error.kind == .missing && error.description.contains("'fc.weight' [10, 64]"))
        }
        state["fc.weight"] = model.stateDict().first { $0.0 == "fc.weight" }!.1
        do { try model.loadStateDict(state); Issue.record("expected unexpected") } catch {
            #expect(error.kind == .unexpected && error.description.contains("'extra.weight' [1]"))
        }
        var report = try model.loadStateDict(state, strict: false)
        #expect(report.unexpected == ["extra.weight"] && report.missing.isEmpty)
        state["fc.bias"] = nil
        state["bn1.num_batches_tracked"] = nil                           // tolerated, as PyTorch does
        report = try model.loadStateDict(state, strict: false)
        #expect(report.missing == ["fc.bias"])
        state["fc.bias"] = Tensor(zeros: [10])
        state["extra.weight"] = nil
        try model.loadStateDict(state)
        state["bn1.num_batches_tracked"] = Tensor(shape: [1], scalars: [7])  // a counter saved as [1] loads into []
        try model.loadStateDict(state)
        #expect(model.stateDict().first { $0.0 == "bn1.num_batches_tracked" }!.1.shape == [])
    }

    /// A failed write leaves the previous checkpoint intact (the temporary file never replaces it).
    @Test func atomicWriteKeepsPreviousFile() throws {
        let url = tempURL("atomic.safetensors")
        try SafeTensors.write([("a", Tensor(ones: [3]))], to: url)
        let blocker = tempURL("blocked")
        try? FileManager.default.removeItem(at: blocker)
        try Data().write(to: blocker)            // a file where a directory is needed: the write fails
        #expect(throws: CheckpointError.self) {
            try SafeTensors.write([("a", Tensor(zeros: [3]))], to: blocker.appendingPathComponent("x.safetensors"))
        }
        #expect(try SafeTensors.read(url).tensors["a"]!.scalars == [1, 1, 1])
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: url.deletingLastPathComponent().path).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }
}
