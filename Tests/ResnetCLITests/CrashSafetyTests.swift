import Testing
import Foundation

/// Reliability of `resnet train` as a process (docs/Reliability.md): SIGKILL inside a checkpoint
/// write never leaves a broken checkpoint and `--resume` still reaches the uninterrupted run's
/// weights bit for bit; a NaN batch stops training with the step and tensor named and the last
/// good checkpoint kept, or is skipped with --skip-nonfinite. `scripts/crash_test.sh` does the
/// kill test at random moments, many times.
@Suite(.serialized) struct CrashSafetyTests {
    static let run = ["train", "--model", "resnet8", "--train-subset", "256", "--test-subset", "100", "--batch-size", "32",
                      "--epochs", "3", "--threads", "2", "--seed", "5", "--out", "run"]

    /// Starts `resnet args` with extra environment variables; output goes to files in `dir`.
    func launch(_ args: [String], environment: [String: String] = [:], in dir: URL) throws -> (Process, URL, URL) {
        let binary = try #require(resnetBinary, "the resnet executable is not built (swift build -c release)")
        let out = dir.appendingPathComponent("stdout-\(UUID().uuidString)"), err = dir.appendingPathComponent("stderr-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        p.currentDirectoryURL = dir
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        p.standardOutput = try FileHandle(forWritingTo: out)
        p.standardError = try FileHandle(forWritingTo: err)
        try p.run()
        return (p, out, err)
    }

    func finish(_ launched: (Process, URL, URL)) throws -> Run {
        launched.0.waitUntilExit()
        return Run(status: launched.0.terminationStatus, stdout: try String(contentsOf: launched.1, encoding: .utf8),
                   stderr: try String(contentsOf: launched.2, encoding: .utf8))
    }

    func temporaries(_ dir: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasPrefix(".checkpoint.safetensors.tmp-") }
    }

    /// With writes slowed down (the RESIDUAL_TEST_SLOW_WRITE_MS hook), waits until a temporary
    /// checkpoint file appears, then SIGKILLs the run: the kill lands inside the write.
    func killDuringCheckpointWrite(_ args: [String], in dir: URL) throws {
        let out = dir.appendingPathComponent("run")
        let before = Set(temporaries(out))
        let launched = try launch(args, environment: ["RESIDUAL_TEST_SLOW_WRITE_MS": "400"], in: dir)
        let deadline = Date().addingTimeInterval(120)
        while launched.0.isRunning && Date() < deadline && Set(temporaries(out)).subtracting(before).isEmpty { usleep(5_000) }
        kill(launched.0.processIdentifier, SIGKILL)
        let r = try finish(launched)
        #expect(r.status == SIGKILL && launched.0.terminationReason == .uncaughtSignal, "not killed: \(r.stdout) \(r.stderr)")
        #expect(!Set(temporaries(out)).subtracting(before).isEmpty, "the kill did not land inside a checkpoint write")
    }

    @Test func killInsideCheckpointWritesThenResumeIsExact() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let straightArgs = Self.run.map { $0 == "run" ? "straight" : $0 }
        let straight = try resnet(straightArgs, in: dir)
        try #require(straight.status == 0, "\(straight.stderr)")
        let checkpoint = dir.appendingPathComponent("run/checkpoint.safetensors")

        // 1. Killed inside the first checkpoint write (step 8): no checkpoint file at all yet.
        try killDuringCheckpointWrite(Self.run, in: dir)
        #expect(!FileManager.default.fileExists(atPath: checkpoint.path))
        // 2. Resumed (from scratch), killed inside a later write: the previous checkpoint is whole.
        let first = try resnet(Self.run + ["--stop-after", "8"], in: dir)
        #expect(first.status == 0, "\(first.stderr)")
        let good = try Data(contentsOf: checkpoint)
        try killDuringCheckpointWrite(Self.run + ["--resume"], in: dir)
        #expect(try Data(contentsOf: checkpoint) == good, "the checkpoint changed although its replacement was killed")
        let eval = try resnet(["eval", "--checkpoint", "run/checkpoint.safetensors", "--test-subset", "100", "--json"], in: dir)
        #expect(eval.status == 0 && eval.lastLine.contains("test_error"), "\(eval.stderr)")
        // 3. Resumed to the end: the uninterrupted run's weights, bit for bit; the killed writers'
        //    temporary files are cleaned up by the next successful write.
        let last = try resnet(Self.run + ["--resume"], in: dir)
        #expect(last.status == 0 && last.stdout.contains("Resuming resnet8"), "\(last.stdout) \(last.stderr)")
        let a = try Data(contentsOf: dir.appendingPathComponent("straight/model.safetensors"))
        let b = try Data(contentsOf: dir.appendingPathComponent("run/model.safetensors"))
        #expect(a == b, "resumed weights differ from the uninterrupted run's")
        #expect(temporaries(dir.appendingPathComponent("run")).isEmpty)
    }

    /// A NaN pixel in the batch of step 11 (epoch 2): exit status 1, the step and the loss named,
    /// nothing saved after the fault: the checkpoint of step 8 stays, and loads.
    @Test func nanStopsTrainingAndKeepsTheLastGoodCheckpoint() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try finish(launch(Self.run, environment: ["RESIDUAL_INJECT_NAN_STEPS": "11"], in: dir))
        #expect(r.status == 1, "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("step 11: loss is NaN") && r.stderr.contains("last good checkpoint"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("run/model.safetensors").path))
        let eval = try resnet(["eval", "--checkpoint", "run/checkpoint.safetensors", "--test-subset", "100", "--json"], in: dir)
        #expect(eval.status == 0, "\(eval.stderr)")
        // The checkpoint is the one of step 8, and resuming from it without the fault completes.
        let resumed = try resnet(Self.run + ["--resume"], in: dir)
        #expect(resumed.status == 0 && resumed.stdout.contains("epoch 2, batch 0, step 8"), "\(resumed.stdout) \(resumed.stderr)")
    }

    /// --skip-nonfinite: the two bad batches are skipped (no update, no batch-norm statistics),
    /// reported with their step, counted at the end; training finishes with finite weights.
    @Test func skipNonfiniteSkipsAndCounts() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try finish(launch(Self.run + ["--skip-nonfinite", "--json"], environment: ["RESIDUAL_INJECT_NAN_STEPS": "3,11"], in: dir))
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(r.stderr.contains("step 3: loss is NaN: batch skipped") && r.stderr.contains("step 11: loss is NaN: batch skipped"), "\(r.stderr)")
        #expect(r.stdout.contains("Skipped 2 of 24 batches"), "\(r.stdout)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.lastLine.utf8)) as? [String: Any])
        let error = try #require(json["final_test_error"] as? Double)
        #expect(error.isFinite && error < 0.9, "a model poisoned by NaN would predict one class: \(error)")
    }
}
