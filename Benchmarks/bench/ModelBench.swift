import Residual
#if canImport(Glibc)
import Glibc
#endif

/// Whole models (issue 8): training steps (forward + backward + SGD with momentum, batch statistics)
/// and eval-mode inference with no tape, on the architectures the peers were measured with
/// (`../shared/perf/ANCHORS.md`): torchvision's ResNet-18 (projection shortcuts, option B) and
/// ResNet-50 "v1.5" (stride on the 3x3), He et al.'s CIFAR ResNet-20/56 (option A). Random weights,
/// synthetic data (normal inputs, uniform labels), lr 0.1, momentum 0.9, weight decay 1e-4, as the
/// peers' `train.py`.
///
/// Every model benchmark runs in a child process of the bench executable (`isolated`), one per
/// configuration and thread count, so `peak_rss_mb` (the child's `ru_maxrss`) is that configuration's
/// peak resident memory, process included, as `/usr/bin/time -v` reports it for the peers.
///
/// Effective GFLOP/s follow ANCHORS.md: 6 x MAC per image for training, 2 x MAC for inference, with
/// MACs of convolutions + the final FC only (`arch.py`'s counts, checked against the zoo's layers by
/// `ModelBench.macs`).
enum ModelBench: BenchmarkFamily {
    struct Model: Sendable {
        var name: String
        var hw: Int
        var build: @Sendable () -> any Layer
        /// `arch.py`'s multiply-accumulates per image (convolutions + FC).
        var macs: Double
        var parameters: Int
    }

    static let models: [String: Model] = [
        "resnet20": Model(name: "resnet20", hw: 32, build: { CIFARResNet(n: 3) }, macs: 40_551_040,
                          parameters: 269_722),
        "resnet56": Model(name: "resnet56", hw: 32, build: { CIFARResNet(n: 9) }, macs: 125_485_696,
                          parameters: 853_018),
        "resnet18": Model(name: "resnet18", hw: 224, build: { ResNet(depth: .d18, shortcut: .b) },
                          macs: 1_814_073_344, parameters: 11_689_512),
        "resnet50": Model(name: "resnet50", hw: 224,
                          build: { ResNet(depth: .d50, shortcut: .b, stridePlacement: .middleConvolution) },
                          macs: 4_089_184_256, parameters: 25_557_032),
    ]

    /// The peers' best figure (images/s) on this machine kind, 2 and 1 threads (ANCHORS.md, section 4):
    /// PyTorch eager channels-last for training, ONNX Runtime for inference.
    struct Peer: Sendable { var framework: String; var twoThreads: Double; var oneThread: Double; var rssMB: Double }
    static let peers: [String: Peer] = [
        "train resnet20 b128": Peer(framework: "torch nhwc", twoThreads: 1081.3, oneThread: 488.7, rssMB: 1010),
        "train resnet56 b128": Peer(framework: "torch nhwc", twoThreads: 353.0, oneThread: 193.7, rssMB: 1439),
        "train resnet18 b16": Peer(framework: "torch nhwc", twoThreads: 32.2, oneThread: 18.2, rssMB: 1438),
        "infer resnet18 b1": Peer(framework: "onnxruntime", twoThreads: 127.5, oneThread: 65.6, rssMB: 217),
        "infer resnet18 b8": Peer(framework: "onnxruntime", twoThreads: 137.1, oneThread: 69.3, rssMB: 263),
        "infer resnet50 b1": Peer(framework: "onnxruntime", twoThreads: 52.6, oneThread: 28.7, rssMB: 316),
        "infer resnet50 b8": Peer(framework: "onnxruntime", twoThreads: 60.3, oneThread: 30.2, rssMB: 380),
    ]

    /// Issue 8's targets (2 threads), as images/s: training 1.5x / 1.2x PyTorch, inference ONNX Runtime.
    static let targets: [String: Double] = [
        "train resnet20 b128": 1600, "train resnet56 b128": 530, "train resnet18 b16": 38.7,
        "infer resnet18 b1": 1000 / 7.8, "infer resnet18 b8": 137, "infer resnet50 b1": 1000 / 19.0,
        "infer resnet50 b8": 60,
    ]

    static var benchmarks: [Benchmark] {
        [
            train("resnet20", batch: 128), train("resnet56", batch: 128), train("resnet18", batch: 16),
            infer("resnet18", batch: 1), infer("resnet18", batch: 8),
            infer("resnet50", batch: 1), infer("resnet50", batch: 8),
            tapeOverhead(), flatMemory(),
        ]
    }

    /// Synthetic inputs and labels, fixed per configuration.
    static func inputs(batch: Int, hw: Int, classes: Int) -> (Tensor, [Int]) {
        var rng = SplitMix(seed: 0x5EED)
        let x = Tensor(shape: [batch, 3, hw, hw]) { p in for i in p.indices { p[i] = rng.normal() } }
        let labels = (0..<batch).map { _ in Int(rng.next() % UInt64(classes)) }
        return (x, labels)
    }

    /// One training step as a user writes it (Examples/resnet's loop, without the data loader).
    final class Trainer {
        let model: any Layer
        let optimizer: SGD
        let x: Tensor
        let labels: [Int]
        init(_ m: Model, batch: Int) {
            model = m.build()
            precondition(model.parameterCount == m.parameters,
                         "bench: \(m.name) has \(model.parameterCount) parameters, the peers' has \(m.parameters)")
            model.train()
            optimizer = SGD(model.parameters, learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
            (x, labels) = ModelBench.inputs(batch: batch, hw: m.hw, classes: m.hw == 32 ? 10 : 1000)
        }
        var steps = 0
        func step() {
            steps += 1
            let tape = Tape()
            let loss = tape.record { softmaxCrossEntropy(logits: model(x), labels: labels) }
            OpProfile.measure("tape.backward (total)") { tape.backward(loss) }
            OpProfile.measure("optimizer step") { optimizer.step() }
            optimizer.zeroGrad()
        }
    }

    static func train(_ modelName: String, batch: Int) -> Benchmark {
        let m = models[modelName]!
        let name = "train \(modelName) b\(batch)"
        return Benchmark(name: name, suite: .models, minSampleSeconds: 0, isolated: true) { threads in
            let trainer = Trainer(m, batch: batch)
            // Buffers the pool could not supply, per step after the first two (the steady state).
            // Page faults per step too: memory that goes back to the system and is faulted in again.
            var base = (steps: 0, misses: 0, faults: 0)
            return Prepared(flops: 6 * m.macs * Double(batch), run: {
                if trainer.steps == 2 { base = (2, BufferPool.shared.counts.misses, minorFaults()) }
                trainer.step()
            }, extraFields: { seconds in
                let steps = Double(max(1, trainer.steps - base.steps))
                let misses = Double(BufferPool.shared.counts.misses - base.misses) / steps
                let faults = Double(minorFaults() - base.faults) / steps
                return modelFields(name, batch: batch)(seconds)
                    + [("pool_misses_per_step", misses), ("page_faults_per_step", faults)]
            })
        }
    }

    static func infer(_ modelName: String, batch: Int) -> Benchmark {
        let m = models[modelName]!
        let name = "infer \(modelName) b\(batch)"
        return Benchmark(name: name, suite: .models, minSampleSeconds: 0, isolated: true) { threads in
            let model = m.build()
            precondition(model.parameterCount == m.parameters, "bench: \(m.name) parameter count")
            model.eval()
            let (x, _) = inputs(batch: batch, hw: m.hw, classes: 1000)
            // With RESIDUAL_PROFILE=1 the profile lists the folded convolutions (`conv2dInference`,
            // which time themselves) and the whole forward; the difference is everything else (pooling,
            // FC, layout conversion, allocation). `RESIDUAL_PROFILE_TAPE=1` instead runs the forward on
            // a tape (never differentiated), which attributes every op but runs the unfolded path.
            let taped = OpProfile.isEnabled && getenv("RESIDUAL_PROFILE_TAPE") != nil
            return Prepared(flops: 2 * m.macs * Double(batch), run: {
                if taped {
                    _ = Tape().record { model(x) }
                } else {
                    _ = OpProfile.measure("inference forward (total)") { withoutTape { model(x) } }
                }
            }, extraFields: modelFields(name, batch: batch))
        }
    }

    /// `images_per_sec` and `peak_rss_mb` (filled in by the child process; see `childMain`).
    static func modelFields(_ name: String, batch: Int) -> (Double) -> [(String, Double)] {
        { seconds in [("images_per_sec", Double(batch) / seconds), ("peak_rss_mb", peakRSSMegabytes())] }
    }

    /// Per-op cost of the tape: a chain of `layers` tiny ops (`x * w + b`, then ReLU, on 16 floats)
    /// recorded and differentiated, against the same chain run with no tape. The kernels do ~nothing,
    /// so the time per op is the engine's overhead (tensor creation, node recording, backward rule
    /// calls, gradient bookkeeping).
    static func tapeOverhead() -> Benchmark {
        let layers = 200, width = 16
        let name = "tape tiny ops \(layers)x3 fwd+bwd"
        return Benchmark(name: name, suite: .models, minSampleSeconds: 0.2, isolated: true) { threads in
            var rng = SplitMix(seed: 7)
            let ws = (0..<layers).map { _ in
                Parameter(Tensor(shape: [width]) { p in for i in p.indices { p[i] = 1 + 0.01 * rng.normal() } })
            }
            let bs = (0..<layers).map { _ in Parameter(Tensor(zeros: [width])) }
            let x = Tensor(shape: [1, width]) { p in for i in p.indices { p[i] = rng.normal() } }
            func forward() -> Tensor {
                var h = x
                for l in 0..<layers { h = relu(h * ws[l].value + bs[l].value) }
                return sum(h)
            }
            // The same chain with no tape, timed once here: the fraction that is recording + backward.
            let t0 = now()
            var reps = 0
            while now() - t0 < 0.2 { _ = withoutTape { forward() }; reps += 1 }
            let untaped = (now() - t0) / Double(reps)
            let ops = Double(layers * 3)
            return Prepared(flops: 0, run: {
                let tape = Tape()
                let loss = tape.record { forward() }
                tape.backward(loss)
                for p in ws { p.zeroGrad() }
                for p in bs { p.zeroGrad() }
            }, extraFields: { seconds in
                [("us_per_op_fwd_bwd", seconds / ops * 1e6), ("us_per_op_fwd_untaped", untaped / ops * 1e6),
                 ("peak_rss_mb", peakRSSMegabytes())]
            })
        }
    }

    /// Memory flatness: resident memory after 1,000 training steps of ResNet-20 against after 100
    /// (issue 8: within 5%). Batch 32 (`RESIDUAL_BENCH_LONG_BATCH`) keeps it to a few minutes: what could grow (the pool, the tape,
    /// optimizer state, caches) grows per step, not per image. Only with `--long`.
    static func flatMemory() -> Benchmark {
        let batch = Int(environment("RESIDUAL_BENCH_LONG_BATCH") ?? "") ?? 32
        let name = "train resnet20 b\(batch) rss 100 vs 1000 steps"
        return Benchmark(name: name, suite: .long, minSampleSeconds: 0, isolated: true) { threads in
            let m = models["resnet20"]!
            let trainer = Trainer(m, batch: batch)
            var rss100 = 0.0, rss1000 = 0.0, seconds = 0.0
            let steps = Int(environment("RESIDUAL_BENCH_LONG_STEPS") ?? "") ?? 1000
            // flops 0: the harness's median is meaningless here (one call does all the steps).
            return Prepared(flops: 0, run: {
                if rss1000 > 0 { return }   // the harness's warm-up and samples: the work is done once
                let start = now()
                for s in 1...steps {
                    trainer.step()
                    if s == min(100, steps) { rss100 = currentRSSMegabytes() }
                }
                rss1000 = currentRSSMegabytes()
                seconds = now() - start
            }, extraFields: { _ in
                [("steps", Double(steps)), ("rss_after_100_mb", rss100), ("rss_after_all_mb", rss1000),
                 ("rss_growth_percent", 100 * (rss1000 - rss100) / max(rss100, 1)),
                 ("images_per_sec", Double(batch * steps) / max(seconds, 1e-9)),
                 ("peak_rss_mb", peakRSSMegabytes())]
            })
        }
    }
}

func environment(_ key: String) -> String? {
    guard let v = getenv(key) else { return nil }
    return String(cString: v)
}

/// Peak resident set size of this process (`ru_maxrss`, KiB on Linux), in MB (10^6 bytes, as
/// `/usr/bin/time` figures are usually quoted... ANCHORS.md quotes KiB/1024: we do the same).
func peakRSSMegabytes() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

/// Minor page faults of this process so far (`ru_minflt`).
func minorFaults() -> Int {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return u.ru_minflt
}

/// Current resident set size (`/proc/self/statm`, second field, pages), in MB (MiB).
func currentRSSMegabytes() -> Double {
    guard let f = fopen("/proc/self/statm", "r") else { return 0 }
    defer { fclose(f) }
    var size = 0, resident = 0
    guard withUnsafeMutablePointer(to: &size, { s in
        withUnsafeMutablePointer(to: &resident) { r in fscanfTwo(f, s, r) }
    }) else { return 0 }
    return Double(resident) * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

private func fscanfTwo(_ f: UnsafeMutablePointer<FILE>, _ a: UnsafeMutablePointer<Int>,
                       _ b: UnsafeMutablePointer<Int>) -> Bool {
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, Int32(line.count), f) != nil else { return false }
    let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    let parts = text.split(separator: " ").compactMap { Int($0) }
    guard parts.count >= 2 else { return false }
    a.pointee = parts[0]; b.pointee = parts[1]
    return true
}

/// A small deterministic generator for the synthetic data (SplitMix64 + Box-Muller).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
    mutating func normal() -> Float {
        let u = max(uniform(), 1e-7), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * Float.pi * v)
    }
}

// MARK: - Child processes and the models table

/// Runs one benchmark in a fresh child process (`bench --child NAME --threads T --samples S`) and
/// reads its result line. The child reports median seconds, foreign load and its extra fields.
func runIsolated(_ b: Benchmark, threads: Int, samples: Int) -> (Double, Double, [(String, Double)])? {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { return nil }
    let args = ["/proc/self/exe", "--child", b.name, "--threads", String(threads), "--samples", String(samples)]
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
    posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
    var cArgs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for a in cArgs { free(a) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, "/proc/self/exe", &actions, nil, &cArgs, environ)
    posix_spawn_file_actions_destroy(&actions)
    close(pipeFDs[1])
    guard rc == 0 else { close(pipeFDs[0]); return nil }
    var output: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(pipeFDs[0], &chunk, chunk.count)
        if n <= 0 { break }
        output += chunk[0..<n]
    }
    close(pipeFDs[0])
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    guard status == 0 else {
        printError("bench: '\(b.name)' (\(threads) threads) failed in its child process (status \(status))\n")
        return nil
    }
    var median = 0.0, foreign = 0.0
    var extra: [(String, Double)] = []
    for line in String(decoding: output, as: UTF8.self).split(separator: "\n") {
        let parts = line.split(separator: " ")
        guard parts.count == 3, parts[0] == "field", let v = Double(parts[2]) else { continue }
        switch parts[1] {
        case "median_seconds": median = v
        case "foreign_cores": foreign = v
        default: extra.append((String(parts[1]), v))
        }
    }
    return (median, foreign, extra)
}

/// The child's side: time the named benchmark in this process and print `field NAME VALUE` lines.
func childMain(_ name: String, threads: Int, samples: Int) -> Never {
    guard let b = registry.flatMap({ $0.benchmarks }).first(where: { $0.name == name }) else {
        printError("bench: no benchmark named '\(name)'\n")
        exit(2)
    }
    Threading.threadCount = threads
    let prepared = b.prepare(threads)
    var median: Double, foreign: Double, peakGflops: Double? = nil
    if prepared.flops > 0 && b.minSampleSeconds == 0 {
        // Each timed call is bracketed by two 50 ms samples of the FMA peak, and % of peak is the
        // median over calls of (this call's GFLOP/s) / (the mean of its two peaks): on a shared
        // machine the CPU a process gets changes within seconds, so only a peak measured right
        // next to the call says what that call could have reached.
        let peak = PeakBench.benchmark.prepare(threads)
        func peakSample() -> Double {
            let start = now()
            var calls = 0
            repeat { peak.run(); calls += 1 } while now() - start < 0.05
            return peak.flops * Double(calls) / (now() - start) / 1e9
        }
        for _ in 0..<3 { prepared.run() }   // first call and two warm-ups, untimed
        let load = CPULoad()
        var times: [Double] = [], ratios: [Double] = []
        for _ in 0..<max(1, samples) {
            let p0 = peakSample()
            let t0 = now()
            prepared.run()
            let t = now() - t0
            let p1 = peakSample()
            times.append(t)
            ratios.append(prepared.flops / t / 1e9 / ((p0 + p1) / 2))
        }
        foreign = load.foreignCores()
        func mid(_ v: [Double]) -> Double {
            let s = v.sorted(), m = s.count / 2
            return s.count % 2 == 1 ? s[m] : (s[m - 1] + s[m]) / 2
        }
        median = mid(times)
        // Reported so that the parent's gflops / peak equals the median ratio.
        peakGflops = prepared.flops / median / 1e9 / mid(ratios)
    } else {
        (median, foreign) = measure(prepared, minSampleSeconds: b.minSampleSeconds,
                                    options: TimingOptions(samples: samples))
    }
    if let peakGflops { print("field peak_gflops \(peakGflops)") }
    print("field median_seconds \(median)")
    print("field foreign_cores \(foreign)")
    print("field flops \(prepared.flops)")
    for (k, v) in prepared.extraFields(median) { print("field \(k) \(v)") }
    if OpProfile.isEnabled { printError("\(name), \(threads) threads, all steps run:\n" + OpProfile.report()) }
    exit(0)
}

/// The peak of the machine kind on a quiet machine (ANCHORS.md: 273 GFLOP/s per core, 547 for 2).
func anchorPeak(threads: Int) -> Double { threads >= 2 ? 547 : 273 }

/// Adds `images_per_sec_at_anchor_peak` to model records: the images/s this run's fraction of the
/// measured peak would give at the anchors' quiet-machine peak. On a shared machine the peak
/// measured in the run shrinks with the load; this projection is what compares with the peers'
/// quiet-machine figures (it assumes the memory-bound parts scale like the FMA peak, which
/// flatters them slightly when the load is high).
func addQuietProjection(_ records: inout [Record]) {
    for i in records.indices where ModelBench.peers[records[i].name] != nil {
        let r = records[i]
        guard let pct = r.percentOfPeak, r.flops > 0,
              let ips = r.extra.first(where: { $0.0 == "images_per_sec" })?.1 else { continue }
        let images = ips * r.medianSeconds   // images per call
        let quietSeconds = r.flops / (pct / 100 * anchorPeak(threads: r.threads) * 1e9)
        records[i].extra.append(("images_per_sec_at_anchor_peak", images / quietSeconds))
    }
}

/// The models table: images/s, ms per step, peak RSS, % of peak and the peer beside each row.
func printModelTable(_ records: [Record]) {
    let rows = records.filter { ModelBench.peers[$0.name] != nil || $0.extra.contains { $0.0 == "us_per_op_fwd_bwd" || $0.0 == "rss_growth_percent" } }
    guard !rows.isEmpty else { return }
    print("\nmodels (peers: ../shared/perf/ANCHORS.md, same machine kind; ratio = ours / peer images/s)")
    let header = ["name", "threads", "images/s", "ms/batch", "peak RSS MB", "GFLOP/s", "% of peak",
                  "peer", "peer img/s", "ratio", "at quiet peak", "ratio", "target (2T)", "foreign"]
    var table: [[String]] = []
    for r in rows {
        func field(_ k: String) -> Double? { r.extra.first { $0.0 == k }?.1 }
        if let us = field("us_per_op_fwd_bwd") {
            table.append([r.name, String(r.threads), "-", format(r.medianSeconds * 1e3, 3),
                          field("peak_rss_mb").map { format($0, 0) } ?? "-", "-", "-",
                          "untaped fwd", format(field("us_per_op_fwd_untaped") ?? .nan, 2) + " us/op",
                          format(us, 2) + " us/op", "-", "-", "-", format(r.foreignCores, 2)])
            continue
        }
        if let growth = field("rss_growth_percent") {
            table.append([r.name, String(r.threads), format(field("images_per_sec") ?? .nan, 1), "-",
                          format(field("peak_rss_mb") ?? .nan, 0), "-", "-",
                          "RSS 100/\(Int(field("steps") ?? 0))", format(field("rss_after_100_mb") ?? .nan, 1)
                              + "/" + format(field("rss_after_all_mb") ?? .nan, 1) + " MB",
                          format(growth, 2) + "%", "-", "-", "< 5%", format(r.foreignCores, 2)])
            continue
        }
        let peer = ModelBench.peers[r.name]!
        let peerIPS = r.threads == 1 ? peer.oneThread : r.threads == 2 ? peer.twoThreads : .nan
        let ips = field("images_per_sec") ?? .nan
        let target = ModelBench.targets[r.name].map { format($0, 1) } ?? "-"
        let quiet = field("images_per_sec_at_anchor_peak") ?? .nan
        table.append([r.name, String(r.threads), format(ips, 1), format(r.medianSeconds * 1e3, 2),
                      format(field("peak_rss_mb") ?? .nan, 0), format(r.gflops, 1),
                      r.percentOfPeak.map { format($0, 1) } ?? "-", peer.framework, format(peerIPS, 1),
                      format(ips / peerIPS, 2) + "x", format(quiet, 1), format(quiet / peerIPS, 2) + "x",
                      target, format(r.foreignCores, 2)])
    }
    var widths = header.map(\.count)
    for row in table { for (i, c) in row.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            let pad = String(repeating: " ", count: widths[i] - c.count)
            return i == 0 || i == 7 ? c + pad : pad + c
        }.joined(separator: "  ")
    }
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for row in table { print(line(row)) }
}
