import Testing
import Foundation

/// The `resnet` executable, run as a user would: built by `swift test` along with everything else
/// (next to the test bundle), or by `swift build` in `.build/release`.
let resnetBinary: URL? = {
    let fm = FileManager.default
    var candidates = [URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("resnet")]
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(root.appendingPathComponent(".build/release/resnet"))
    return candidates.first { fm.isExecutableFile(atPath: $0.path) }
}()

struct Run {
    var status: Int32
    var stdout: String
    var stderr: String
    var lastLine: String { stdout.split(separator: "\n").last.map(String.init) ?? "" }
}

/// A fresh temporary directory, removed by the caller's `defer`.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("resnet-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// Starts `resnet args` with stdout and stderr going to files in `dir` (no pipe to fill up).
func start(_ args: [String], in dir: URL) throws -> (Process, URL, URL) {
    guard let binary = resnetBinary else {
        Issue.record("the resnet executable is not built (swift build -c release)")
        throw CocoaError(.fileNoSuchFile)
    }
    let out = dir.appendingPathComponent("stdout-\(UUID().uuidString)"), err = dir.appendingPathComponent("stderr-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: out.path, contents: nil)
    FileManager.default.createFile(atPath: err.path, contents: nil)
    let p = Process()
    p.executableURL = binary
    p.arguments = args
    p.currentDirectoryURL = dir
    p.standardOutput = try FileHandle(forWritingTo: out)
    p.standardError = try FileHandle(forWritingTo: err)
    try p.run()
    return (p, out, err)
}

@discardableResult
func resnet(_ args: [String], in dir: URL? = nil) throws -> Run {
    let d = try dir ?? temporaryDirectory()
    defer { if dir == nil { try? FileManager.default.removeItem(at: d) } }
    let (p, out, err) = try start(args, in: d)
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: try String(contentsOf: out, encoding: .utf8),
               stderr: try String(contentsOf: err, encoding: .utf8))
}

/// The deterministic columns of log.csv (everything but wall time and images/s).
func deterministicLog(_ url: URL) throws -> [String] {
    try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).prefix(6).joined(separator: ",") }
}

@Suite(.serialized) struct CLITests {
    @Test func helpOnEverySubcommand() throws {
        for command in ["train", "eval", "infer", "degradation", "zoo"] {
            let r = try resnet([command, "--help"])
            #expect(r.status == 0 && r.stderr.isEmpty, "\(command): \(r.stderr)")
            #expect(r.stdout.contains("Usage: resnet \(command)") && r.stdout.contains("--help"), "\(r.stdout)")
        }
        let train = try resnet(["train", "--help"]).stdout
        for flag in ["--model", "--data", "--epochs", "--batch-size", "--lr", "--threads", "--seed", "--out", "--resume", "--json"] {
            #expect(train.contains(flag), "train --help lacks \(flag)")
        }
        for args in [[], ["--help"], ["help"]] {
            let r = try resnet(args)
            #expect(r.status == 0 && r.stdout.contains("Commands:") && r.stdout.contains("resnet train"), "\(args)")
        }
    }

    /// Unknown flags, bad values and missing arguments: exit status 2, the reason and the
    /// command's help on stderr, nothing on stdout, nothing started.
    @Test(arguments: [
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["train", "--bogus"], "unknown option '--bogus'"),
        (["train", "--epochs", "abc"], "--epochs: 'abc' is not an integer"),
        (["train", "--epochs", "0"], "--epochs: '0' is not an integer in 1..."),
        (["train", "--epochs"], "--epochs needs a value"),
        (["train", "--lr", "-1"], "--lr: '-1' is not a number"),
        (["train", "--lr", "nan"], "--lr: 'nan' is not a number"),
        (["train", "--batch-size", "1e3"], "--batch-size: '1e3' is not an integer"),
        (["train", "--model", "resnet21"], "unknown model 'resnet21'"),
        (["train", "--shortcut", "D"], "--shortcut: 'D' is not one of"),
        (["train", "--normalization", "zscore"], "--normalization: 'zscore' is not one of"),
        (["train", "--threads", "0"], "--threads: '0' is not an integer"),
        (["train", "stray"], "unexpected argument 'stray'"),
        (["train", "--json=yes"], "--json takes no value"),
        (["eval"], "--checkpoint FILE is required"),
        (["infer", "--model", "resnet18"], "are required"),
        (["train", "--warmup", "cosine"], "--warmup: 'cosine' is not one of none, paper, linear:STEPS"),
        (["train", "--warmup", "linear:0"], "--warmup: 'linear:0' is not one of"),
        (["degradation", "--warmup", "linear:x"], "--warmup: 'linear:x' is not one of"),
        (["degradation", "--depths", "20"], "--depths: two increasing depths"),
        (["degradation", "--depths", "56,20"], "--depths: two increasing depths"),
        (["zoo", "--v2"], "unknown option '--v2'"),
    ])
    func usageErrors(_ args: [String], _ message: String) throws {
        let r = try resnet(args)
        #expect(r.status == 2, "\(args): status \(r.status)")
        #expect(r.stderr.contains(message), "\(args): \(r.stderr)")
        #expect(r.stderr.contains("Usage: resnet"), "\(args): no usage in \(r.stderr)")
        #expect(r.stdout.isEmpty, "\(args): \(r.stdout)")
    }

    /// Bad files are errors (status 1) with the file named, not usage errors.
    @Test func runtimeErrors() throws {
        let r = try resnet(["train", "--data", "/nonexistent/cifar", "--epochs", "1"])
        #expect(r.status == 1 && r.stderr.contains("/nonexistent/cifar"), "\(r.status) \(r.stderr)")
        let e = try resnet(["eval", "--checkpoint", "/nonexistent/model.safetensors"])
        #expect(e.status == 1 && e.stderr.contains("/nonexistent/model.safetensors"), "\(e.status) \(e.stderr)")
    }

    static let small = ["train", "--model", "resnet8", "--train-subset", "256", "--test-subset", "100", "--batch-size", "32",
                        "--epochs", "2", "--threads", "2"]

    /// 16 steps straight, and the same run stopped after step 5 (mid-epoch), resumed, stopped after
    /// step 8 (an epoch boundary), resumed to the end: bit-identical weights, optimizer state and
    /// log. A different seed gives different weights (the comparison can fail).
    @Test func resumeIsExact() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let straight = try resnet(Self.small + ["--out", "a", "--json"], in: dir)
        #expect(straight.status == 0, "\(straight.stderr)")

        let first = try resnet(Self.small + ["--out", "b", "--stop-after", "5"], in: dir)
        #expect(first.status == 0 && first.stdout.contains("Stopped after step 5"), "\(first.stdout) \(first.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("b/model.safetensors").path))
        let second = try resnet(Self.small + ["--out", "b", "--resume", "--stop-after", "8"], in: dir)
        #expect(second.status == 0 && second.stdout.contains("epoch 1, batch 5, step 5"), "\(second.stdout) \(second.stderr)")
        let third = try resnet(Self.small + ["--out", "b", "--resume", "--json"], in: dir)
        #expect(third.status == 0 && third.stdout.contains("epoch 2, batch 0, step 8"), "\(third.stdout) \(third.stderr)")

        func bytes(_ path: String) throws -> Data { try Data(contentsOf: dir.appendingPathComponent(path)) }
        #expect(try bytes("a/model.safetensors") == bytes("b/model.safetensors"), "resumed weights differ")
        // The checkpoints' tensors (weights, batch-norm statistics, momentum buffers) are identical;
        // only the JSON header differs (wall times).
        func tensorBytes(_ path: String) throws -> Data {
            let d = try bytes(path)
            let n = d.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            return d.dropFirst(8 + n)
        }
        let ca = try tensorBytes("a/checkpoint.safetensors"), cb = try tensorBytes("b/checkpoint.safetensors")
        #expect(ca.count > 75_002 * 4 * 2 && ca == cb)
        let logA = try deterministicLog(dir.appendingPathComponent("a/log.csv"))
        let logB = try deterministicLog(dir.appendingPathComponent("b/log.csv"))
        #expect(logA.count == 9 && logA == logB)

        // The JSON summary: exactly the issue's keys, errors as fractions, same errors after resume.
        let json = try #require(try JSONSerialization.jsonObject(with: Data(straight.lastLine.utf8)) as? [String: Any])
        #expect(Set(json.keys) == ["model", "epochs", "final_test_error", "final_train_error", "images_per_sec",
                                   "wall_seconds", "peak_rss_mb"])
        #expect(json["model"] as? String == "resnet8" && json["epochs"] as? Int == 2)
        for key in ["final_test_error", "final_train_error"] {
            let v = try #require(json[key] as? Double)
            #expect(v >= 0 && v <= 1, "\(key) = \(v)")
        }
        for key in ["images_per_sec", "wall_seconds", "peak_rss_mb"] { #expect((json[key] as? Double ?? 0) > 0, "\(key)") }
        let resumed = try #require(try JSONSerialization.jsonObject(with: Data(third.lastLine.utf8)) as? [String: Any])
        #expect(resumed["final_test_error"] as? Double == json["final_test_error"] as? Double)
        #expect(resumed["final_train_error"] as? Double == json["final_train_error"] as? Double)

        // The per-epoch files.
        let svg = try String(contentsOf: dir.appendingPathComponent("a/curves.svg"), encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.components(separatedBy: "<polyline").count == 3)
        #expect(straight.stdout.contains("epoch 1/2  train err") && straight.stdout.contains("test err"))

        let other = try resnet(Self.small + ["--out", "c", "--seed", "1"], in: dir)
        #expect(other.status == 0)
        #expect(try bytes("a/model.safetensors") != bytes("c/model.safetensors"))

        // eval on the final model: the same test error as training reported, and a confusion matrix.
        let eval = try resnet(["eval", "--checkpoint", "a/model.safetensors", "--test-subset", "100", "--json"], in: dir)
        #expect(eval.status == 0, "\(eval.stderr)")
        let e = try #require(try JSONSerialization.jsonObject(with: Data(eval.lastLine.utf8)) as? [String: Any])
        #expect(e["test_error"] as? Double == json["final_test_error"] as? Double)
        let confusion = try #require(e["confusion"] as? [[Int]])
        #expect(confusion.count == 10 && confusion.allSatisfy { $0.count == 10 } && confusion.joined().reduce(0, +) == 100)
        #expect((e["per_class_error"] as? [Double])?.count == 10)
        let text = try resnet(["eval", "--checkpoint", "a/checkpoint.safetensors", "--test-subset", "100"], in: dir)
        #expect(text.status == 0 && text.stdout.contains("Confusion matrix") && text.stdout.contains("Ankle boot"), "\(text.stdout)")

        // A Fashion-MNIST model on CIFAR-10 images: an error naming the mismatch, not a crash.
        let cifar = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("ResidualDataTests/Fixtures").path
        let wrong = try resnet(["eval", "--checkpoint", "a/model.safetensors", "--data", cifar], in: dir)
        #expect(wrong.status == 1 && wrong.stderr.contains("do not fit 3x32x32 images"), "\(wrong.stderr)")

        // Resuming with different options is refused rather than silently mixing runs.
        let mismatch = try resnet(Self.small + ["--out", "b", "--resume", "--lr", "0.05"], in: dir)
        #expect(mismatch.status == 2 && mismatch.stderr.contains("different run"), "\(mismatch.stderr)")
    }

    /// Ctrl-C: the run saves a checkpoint after the current step and exits with status 130; the
    /// checkpoint loads and evaluates.
    @Test func interruptSavesCheckpoint() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (p, out, err) = try start(["train", "--model", "resnet8", "--train-subset", "8192", "--test-subset", "100",
                                       "--batch-size", "32", "--epochs", "1", "--out", "run"], in: dir)
        let deadline = Date().addingTimeInterval(120)
        while p.isRunning && Date() < deadline {
            if (try? String(contentsOf: out, encoding: .utf8))?.contains("step 1/") == true { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        let stdout = try String(contentsOf: out, encoding: .utf8), stderr = try String(contentsOf: err, encoding: .utf8)
        #expect(p.terminationStatus == 130, "status \(p.terminationStatus): \(stdout) \(stderr)")
        #expect(stdout.contains("Interrupted: checkpoint saved"), "\(stdout)")
        let eval = try resnet(["eval", "--checkpoint", "run/checkpoint.safetensors", "--test-subset", "100", "--json"], in: dir)
        #expect(eval.status == 0 && eval.lastLine.contains("test_error"), "\(eval.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/log.csv").path))
    }

    /// The learning rates log.csv records (one per curve point: the rate of the point's last step).
    func loggedRates(_ url: URL) throws -> [(step: Int, rate: Double)] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").dropFirst().map {
            let f = $0.split(separator: ",", omittingEmptySubsequences: false)
            return (Int(f[1])!, Double(f[2])!)
        }
    }

    /// `--warmup linear:4` on 16 steps (8 per epoch, a curve point every 2): the rate of step i
    /// (0-based) is 0.1·i/4 for i < 4, then the paper's schedule of the whole run (/10 at 8 and 12).
    @Test func linearWarmup() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try resnet(Self.small + ["--out", "w", "--warmup", "linear:4"], in: dir)
        #expect(r.status == 0 && r.stdout.contains("after a linear warm-up over 4 steps"), "\(r.stdout) \(r.stderr)")
        let rates = try loggedRates(dir.appendingPathComponent("w/log.csv"))
        #expect(rates.map(\.step) == [2, 4, 6, 8, 10, 12, 14, 16])
        let expected = [0.025, 0.075, 0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
        for ((step, rate), e) in zip(rates, expected) { #expect(abs(rate - e) < 1e-6 * e, "step \(step): \(rate), expected \(e)") }
        // Without a warm-up the same points start at the full rate.
        let plain = try resnet(Self.small + ["--out", "n"], in: dir)
        #expect(plain.status == 0 && !plain.stdout.contains("warm-up"))
        #expect(try loggedRates(dir.appendingPathComponent("n/log.csv")).map(\.rate).prefix(2) == [0.1, 0.1])
    }

    /// `--warmup paper`: lr/10 until the training error of the last 10 batches is below 80 %, then the
    /// full rate, then the paper's divisions; the switch is part of the checkpoint, so a run stopped
    /// before the switch (mid-window) and after it resumes to the same weights as a straight run.
    @Test func paperWarmup() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let args = ["train", "--model", "resnet8", "--train-subset", "1024", "--test-subset", "100", "--batch-size", "32",
                    "--epochs", "2", "--threads", "2", "--warmup", "paper"]
        let straight = try resnet(args + ["--out", "a"], in: dir)
        #expect(straight.status == 0, "\(straight.stderr)")
        let line = try #require(straight.stdout.split(separator: "\n").first { $0.contains("Warm-up over after step") },
                                "\(straight.stdout)")
        let switchStep = try #require(Int(line.split(separator: " ")[4].dropLast()))
        // Not before a full window; in this run it comes in the first epoch (32 steps), before the
        // first division (step 32): curve points up to the switch at 0.01, after it at 0.1.
        #expect(switchStep >= 10 && switchStep < 28, "switch after step \(switchStep)")
        let rates = try loggedRates(dir.appendingPathComponent("a/log.csv"))
        for (step, rate) in rates {
            let expected = step <= switchStep ? 0.01 : step <= 32 ? 0.1 : step <= 48 ? 0.01 : 0.001
            #expect(abs(rate - expected) < 1e-6 * expected, "step \(step): \(rate), expected \(expected)")
        }
        #expect(rates.contains { $0.step <= switchStep } && rates.contains { $0.step > switchStep && $0.step <= 32 })

        let first = try resnet(args + ["--out", "b", "--stop-after", "\(switchStep - 3)"], in: dir)
        #expect(first.status == 0 && !first.stdout.contains("Warm-up over"), "\(first.stdout)")
        let second = try resnet(args + ["--out", "b", "--resume", "--stop-after", "\(switchStep + 2)"], in: dir)
        #expect(second.status == 0 && second.stdout.contains(line), "the resumed run switches at the same step: \(second.stdout)")
        let third = try resnet(args + ["--out", "b", "--resume"], in: dir)
        #expect(third.status == 0 && !third.stdout.contains("Warm-up over"), "\(third.stdout)")
        #expect(try Data(contentsOf: dir.appendingPathComponent("a/model.safetensors"))
                == Data(contentsOf: dir.appendingPathComponent("b/model.safetensors")), "resumed weights differ")
        #expect(try deterministicLog(dir.appendingPathComponent("a/log.csv")) == deterministicLog(dir.appendingPathComponent("b/log.csv")))

        // Fewer steps than the window: the warm-up never ends, and its rate is a ceiling under the
        // schedule's divisions (/10 at steps 4 and 6 of 8), not a rate for the rest of the run.
        let short = try resnet(["train", "--model", "resnet8", "--train-subset", "256", "--test-subset", "100", "--batch-size",
                                "32", "--epochs", "1", "--warmup", "paper", "--out", "s"], in: dir)
        #expect(short.status == 0 && !short.stdout.contains("Warm-up over"), "\(short.stdout) \(short.stderr)")
        let shortRates = try loggedRates(dir.appendingPathComponent("s/log.csv"))
        #expect(shortRates.map(\.step) == [2, 4, 6, 8])
        for ((step, rate), e) in zip(shortRates, [0.01, 0.01, 0.01, 0.001]) {
            #expect(abs(rate - e) < 1e-6 * e, "step \(step): \(rate), expected \(e)")
        }

        // Without the warm-up the run differs, and a checkpoint of one is not resumed as the other.
        let mismatch = try resnet(Array(args.dropLast(2)) + ["--out", "b", "--resume"], in: dir)
        #expect(mismatch.status == 2 && mismatch.stderr.contains("different run"), "\(mismatch.stderr)")
    }

    /// A float32 tensor of a safetensors file, read by hand (this target links nothing).
    func safetensor(_ url: URL, _ name: String) throws -> [Float] {
        let d = try Data(contentsOf: url)
        let n = d.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try #require(try JSONSerialization.jsonObject(with: d.subdata(in: 8..<(8 + n))) as? [String: Any])
        let entry = try #require(header[name] as? [String: Any], "\(name) not in \(url.lastPathComponent)")
        let offsets = try #require(entry["data_offsets"] as? [Int])
        let bytes = d.subdata(in: (8 + n + offsets[0])..<(8 + n + offsets[1]))
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// `--zero-init-residual` (not the paper's) says so, starts every residual branch's last BN at
    /// γ = 0 (after one step from zero momentum |γ| <= lr·|grad|, far below the default 1; the
    /// other BNs stay near 1), is part of the checkpoint and changes the run.
    @Test func zeroInitResidual() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let zero = try resnet(Self.small + ["--out", "z", "--zero-init-residual", "--stop-after", "1"], in: dir)
        #expect(zero.status == 0 && zero.stdout.contains("zero-initialised (not the paper's)"), "\(zero.stdout) \(zero.stderr)")
        let checkpoint = dir.appendingPathComponent("z/checkpoint.safetensors")
        for block in ["layer1.0", "layer2.0", "layer3.0"] {
            let last = try safetensor(checkpoint, "\(block).bn2.weight"), first = try safetensor(checkpoint, "\(block).bn1.weight")
            #expect(last.count == first.count && !last.isEmpty)
            #expect(last.allSatisfy { abs($0) < 0.05 }, "\(block).bn2.weight \(last)")
            #expect(first.allSatisfy { abs($0 - 1) < 0.05 }, "\(block).bn1.weight \(first)")
        }
        let eval = try resnet(["eval", "--checkpoint", "z/checkpoint.safetensors", "--test-subset", "10"], in: dir)
        #expect(eval.status == 0, "\(eval.stderr)")
        let mismatch = try resnet(Self.small + ["--out", "z", "--resume"], in: dir)
        #expect(mismatch.status == 2 && mismatch.stderr.contains("different run"), "\(mismatch.stderr)")
        let resumed = try resnet(Self.small + ["--out", "z", "--resume", "--zero-init-residual"], in: dir)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let plain = try resnet(Self.small + ["--out", "p"], in: dir)
        #expect(plain.status == 0 && !plain.stdout.contains("zero-initialised"))
        #expect(try Data(contentsOf: dir.appendingPathComponent("z/model.safetensors"))
                != Data(contentsOf: dir.appendingPathComponent("p/model.safetensors")))
    }

    /// The degradation experiment at toy scale: four nets, one figure with two panels, a CSV.
    @Test func degradationSmoke() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try resnet(["degradation", "--depths", "8,14", "--epochs", "1", "--train-subset", "256", "--test-subset", "100",
                            "--batch-size", "64", "--out", "d", "--json"], in: dir)
        #expect(r.status == 0, "\(r.stderr)")
        let svg = try String(contentsOf: dir.appendingPathComponent("d/degradation.svg"), encoding: .utf8)
        #expect(svg.components(separatedBy: "<polyline").count == 9, "4 nets x (train, test)")
        #expect(svg.contains(">plain</text>") && svg.contains(">ResNet</text>"))
        let csv = try String(contentsOf: dir.appendingPathComponent("d/degradation.csv"), encoding: .utf8).split(separator: "\n")
        #expect(csv.first == "model,epoch,step,train_error,test_error")
        #expect(Set(csv.dropFirst().map { $0.split(separator: ",")[0] }) == ["plain8", "plain14", "resnet8", "resnet14"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.lastLine.utf8)) as? [String: Any])
        #expect((json["models"] as? [[String: Any]])?.count == 4)
    }
}
