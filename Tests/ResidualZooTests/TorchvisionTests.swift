import Testing
import Foundation
import Residual
import ResidualTestSupport

/// torchvision state dicts, as the `safetensors` library writes them, through `resnet infer`.
///
/// A full-size ResNet-18 / ResNet-50 state dict (47 / 100 MB) cannot be committed, and CI has no
/// PyTorch. `scripts/make_fixtures.py` therefore sets every tensor of the real torchvision model
/// (and of the CIFAR nets, in the zoo's naming) from the formula both languages implement
/// (`FixtureWeights`), lets the library write the file, and commits only the file's header (a few
/// KB: the library's byte layout, torchvision's names, shapes and dtypes, the I64
/// `num_batches_tracked` scalars), the CRC-32 and length of the whole file, and torchvision's float64
/// logits. Here the data section is rebuilt from the header and the formula; matching CRC-32 and
/// length show the rebuilt file is the library's file byte for byte. Then the `resnet` executable
/// (built beside the test binary) runs `infer` on it, and its logits must be within 1e-4 of
/// torchvision's. The full-size check with torch-random weights is `scripts/check_torchvision.sh`.
@Suite(.serialized) struct TorchvisionTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../ResidualNNTests/Fixtures/torchvision").standardized
    static let references = try! ReferenceCases(contentsOf: directory.appendingPathComponent("references.safetensors"))

    /// A fresh directory for one test's files (up to 150 MB), removed by the caller's `defer`.
    static func scratchDirectory() -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("residual-torchvision-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The `resnet` executable of the same build as this test binary (CI and `swift test` build
    /// every product first).
    static let resnet: URL? = {
        let here = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized
        let candidates = [here.appendingPathComponent("resnet"), root.appendingPathComponent(".build/release/resnet"),
                          root.appendingPathComponent(".build/debug/resnet")]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()

    /// Rebuilds a file from its committed header: every F32 tensor is `FixtureWeights.value(name,
    /// shape)` (times `inputScale` for the tensor named `input`), every I64 is `integer`.
    static func rebuild(header: String, inputScale: Float = 1, integer: Int64 = 0) throws -> Data {
        let head = try Data(contentsOf: directory.appendingPathComponent(header))
        let n = head.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        #expect(head.count == 8 + n, "\(header): the header file is the first 8 + N bytes")
        let json = try JSONSerialization.jsonObject(with: head.subdata(in: 8..<(8 + n))) as! [String: Any]
        var entries: [(name: String, dtype: String, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in json where name != "__metadata__" {
            let e = value as! [String: Any], offsets = e["data_offsets"] as! [Int]
            entries.append((name, e["dtype"] as! String, e["shape"] as! [Int], offsets[0], offsets[1]))
        }
        var body = [UInt8](repeating: 0, count: entries.map(\.end).max() ?? 0)
        for e in entries {
            switch e.dtype {
            case "F32":
                var t = FixtureWeights.value(e.name, e.shape)
                if e.name == "input" { t = t * inputScale }
                t.withUnsafeBufferPointer { p in
                    for (i, v) in p.enumerated() {
                        withUnsafeBytes(of: v.bitPattern.littleEndian) { body.replaceSubrange((e.begin + 4 * i)..<(e.begin + 4 * i + 4), with: $0) }
                    }
                }
            case "I64":
                for i in 0..<(e.end - e.begin) / 8 {
                    withUnsafeBytes(of: integer.littleEndian) { body.replaceSubrange((e.begin + 8 * i)..<(e.begin + 8 * i + 8), with: $0) }
                }
            default:
                Issue.record("\(header): unexpected dtype \(e.dtype) for \(e.name)")
            }
        }
        return head + Data(body)
    }

    static func crc32(_ d: Data) -> UInt32 {
        var c = CRC32()
        d.withUnsafeBytes { c.update($0) }
        return c.value
    }

    /// Runs `resnet` with `arguments`; returns its exit status and standard error.
    static func run(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        guard let resnet else {
            Issue.record("the resnet executable is not built: run `swift build -c release` first")
            return (-1, "")
        }
        let p = Process()
        p.executableURL = resnet
        p.arguments = arguments
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let data = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Writes the rebuilt weights and input of a reference case; checks they are the library's bytes.
    static func files(_ key: String, in scratch: URL) throws -> (weights: URL, input: URL, model: String, flags: [String]) {
        let q = references.parameters(key)
        let inputKey = q["input"] as! String, iq = references.parameters(inputKey)
        let weights = try rebuild(header: q["weights"] as! String, integer: Int64(q["num_batches_tracked"] as! Int))
        #expect(weights.count == q["bytes"] as! Int && crc32(weights) == UInt32(q["crc32"] as! Int),
                "\(key): the rebuilt weights are not the file the safetensors library wrote")
        let input = try rebuild(header: "\(inputKey).header", inputScale: Float(sign: .plus, exponent: iq["exponent"] as! Int, significand: 1))
        #expect(input.count == iq["bytes"] as! Int && crc32(input) == UInt32(iq["crc32"] as! Int),
                "\(key): the rebuilt input is not the file the safetensors library wrote")
        let w = scratch.appendingPathComponent("\(q["weights"] as! String).safetensors")
        let x = scratch.appendingPathComponent("\(inputKey).safetensors")
        try weights.write(to: w)
        try input.write(to: x)
        return (w, x, q["model"] as! String, q["flags"] as! [String])
    }

    @Test(arguments: ["resnet18", "resnet18_A", "resnet50_v1.5", "resnet50_v1", "resnet20", "plain20"])
    func inferReproducesTorchvision(_ key: String) throws {
        let scratch = Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let (w, x, model, flags) = try Self.files(key, in: scratch)
        let out = scratch.appendingPathComponent("\(key).logits.safetensors")
        let r = try Self.run(["infer", "--model", model, "--weights", w.path, "--input", x.path, "--output", out.path] + flags)
        #expect(r.status == 0, "\(key): resnet infer failed: \(r.stderr)")
        guard r.status == 0 else { return }
        let logits = try SafeTensors.read(out).tensors["logits"]!
        let e = relativeError(logits, Self.references["\(key).logits"])
        logParity("torchvision.\(key).logits", e)
        #expect(e < 1e-4, "\(key): logits relative error \(e)")
    }

    /// The two stride placements give clearly different logits on the same weights, so the v1/v1.5
    /// cases above can tell them apart (and `--v1.5` is not a no-op).
    @Test func stridePlacementIsVisible() {
        let v1 = Self.references["resnet50_v1.logits"], v15 = Self.references["resnet50_v1.5.logits"]
        #expect(relativeError(v1, v15) > 1e-2)
    }

    /// A complete PyTorch state dict in F16 (CIFAR ResNet-20, zoo naming, torch-random weights and
    /// batch-norm statistics) written by the library: converted on load, torch's logits from the
    /// rounded weights within 1e-4.
    @Test func halfPrecisionStateDict() throws {
        let d = Self.directory
        let scratch = Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let out = scratch.appendingPathComponent("resnet20_f16.logits.safetensors")
        let r = try Self.run(["infer", "--model", "resnet20", "--weights", d.appendingPathComponent("resnet20_f16.safetensors").path,
                              "--input", d.appendingPathComponent("resnet20_f16.input.safetensors").path, "--output", out.path])
        #expect(r.status == 0, "resnet infer failed: \(r.stderr)")
        guard r.status == 0 else { return }
        let e = relativeError(try SafeTensors.read(out).tensors["logits"]!, Self.references["resnet20_f16.logits"])
        logParity("torchvision.resnet20_f16.logits", e)
        #expect(e < 1e-4, "logits relative error \(e)")
        let dtypes = try SafeTensors.read(d.appendingPathComponent("resnet20_f16.safetensors"))
        #expect(dtypes.tensors["layer3.2.conv2.weight"]?.shape == [64, 64, 3, 3])
    }

    /// Every dtype the reader converts, from a file the library wrote, bit for bit equal to torch's
    /// own float32 conversion (signed zeros, subnormals, the largest finite values, infinities, NaN,
    /// float64 ties and overflow, large integers).
    @Test func dtypesWrittenByTheLibrary() throws {
        let c = try SafeTensors.read(Self.directory.appendingPathComponent("dtypes.safetensors"))
        let names = c.tensors.keys.filter { !$0.hasSuffix(".as_f32") }.sorted()
        #expect(Set(names) == ["f64", "f16", "bf16", "i64", "i32", "f32", "f16_matrix"])
        for name in names {
            let mine = c.tensors[name]!, torch = c.tensors["\(name).as_f32"]!
            #expect(mine.shape == torch.shape, "\(name)")
            let same = zip(mine.scalars, torch.scalars).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) }
            #expect(same, "\(name): \(zip(mine.scalars, torch.scalars).filter { $0.bitPattern != $1.bitPattern && !($0.isNaN && $1.isNaN) }.prefix(5))")
        }
    }

    /// A missing, extra or mis-shaped tensor, or torchvision weights with the wrong shortcut option:
    /// `resnet infer` exits with status 1 and names the tensor (and both shapes).
    @Test func badStateDictsNameTheTensor() throws {
        let scratch = Self.scratchDirectory()
        defer { try? FileManager.default.removeItem(at: scratch) }
        let (w, x, _, _) = try Self.files("resnet20", in: scratch)
        var state = try SafeTensors.read(w).tensors
        let out = scratch.appendingPathComponent("bad.logits.safetensors")
        func infer(_ tensors: [String: Tensor], model: String = "resnet20", _ flags: [String] = []) throws -> (Int32, String) {
            let url = scratch.appendingPathComponent("bad.safetensors")
            try SafeTensors.write(tensors.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, to: url)
            return try Self.run(["infer", "--model", model, "--weights", url.path, "--input", x.path, "--output", out.path] + flags)
        }
        let full = state
        state["layer2.1.bn1.running_var"] = nil
        var r = try infer(state)
        #expect(r.0 == 1 && r.1.contains("layer2.1.bn1.running_var"), "\(r)")
        state = full
        state["layer4.0.conv1.weight"] = Tensor(zeros: [3])
        r = try infer(state)
        #expect(r.0 == 1 && r.1.contains("layer4.0.conv1.weight"), "\(r)")
        state = full
        state["layer3.0.conv2.weight"] = Tensor(zeros: [64, 64, 1, 3])
        r = try infer(state)
        #expect(r.0 == 1 && r.1.contains("layer3.0.conv2.weight") && r.1.contains("[64, 64, 1, 3]") && r.1.contains("[64, 64, 3, 3]"), "\(r)")
        // torchvision's ResNet-18 has projection shortcuts (option B); the zoo's default is the
        // paper's option A, so without --shortcut B the downsample tensors are extra.
        let (tw, tx, _, _) = try Self.files("resnet18", in: scratch)
        let t = try Self.run(["infer", "--model", "resnet18", "--weights", tw.path, "--input", tx.path, "--output", out.path])
        #expect(t.status == 1 && t.stderr.contains("layer2.0.downsample.0.weight") && t.stderr.contains("--shortcut B"), "\(t)")
    }
}
