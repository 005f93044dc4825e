import Dispatch
import ResidualKernels
#if canImport(Glibc)
import Glibc
#endif

// The benchmark harness: a registry of named benchmarks, each timed with warm-up, repeated samples
// and the median. Families (peak, sgemm, conv, models, ...) each live in their own file and are
// listed once in `Registry.swift`.

/// One benchmark: a stable name (scripts key on it) and a factory that prepares the inputs for a
/// thread count and returns the work to time.
///
/// `prepare` runs outside the timed region: allocate and fill buffers there, capture them in the
/// returned closure, and free them in a `deinit` of a captured object (or let ARC do it) when the
/// ``Prepared`` value is dropped. The harness sets `Threading.threadCount` to the thread count
/// before calling `prepare`, so code that reads the global (ops, models) runs with it too.
struct Benchmark {
    /// Stable, unique name, e.g. `sgemm 1024x1024x1024` or `conv resnet18.conv3_x b16 fwd+bwd`.
    var name: String
    /// Suites not selected by default (e.g. `models`) run only when asked for (`--models`).
    var suite: Suite = .kernels
    /// Minimum duration of one timed sample: fast calls are repeated within a sample until it lasts
    /// this long, so timer resolution and call overhead stay negligible.
    var minSampleSeconds: Double = 0.05
    /// Run in a child process of the bench executable, one per thread count, so process-wide
    /// figures (peak resident memory) belong to this benchmark alone (models; `runIsolated`).
    var isolated = false
    var prepare: (_ threads: Int) -> Prepared
}

enum Suite: String, CaseIterable {
    /// `long`: slow checks (memory flatness over 1,000 training steps), only with `--long`.
    /// `algorithms`: the 3x3 stride-1 conv layers with each algorithm forced, only with `--algorithms`.
    case kernels, models, long, algorithms
}

/// What a benchmark hands the harness after its setup.
struct Prepared {
    /// Floating-point operations per call of `run`, for GFLOP/s and % of peak (0: not reported).
    var flops: Double
    /// The timed work: one call is one iteration.
    var run: () -> Void
    /// Extra JSON fields computed from the median seconds per call (e.g. `images_per_sec`).
    var extraFields: (_ medianSeconds: Double) -> [(String, Double)] = { _ in [] }
}

/// A family of benchmarks in its own file, listed in `Registry.swift`.
protocol BenchmarkFamily {
    static var benchmarks: [Benchmark] { get }
}

/// One measured result, printed as a table row and as a JSON record.
struct Record {
    var name: String
    var threads: Int
    var medianSeconds: Double
    var flops: Double
    var peakGflops: Double?
    /// Cores' worth of CPU time used by *other* processes while the samples ran (0 on a quiet machine,
    /// ~1 when something else keeps a core busy): the noise indicator for this figure.
    var foreignCores: Double
    var extra: [(String, Double)] = []

    var gflops: Double { flops > 0 && medianSeconds > 0 ? flops / medianSeconds / 1e9 : 0 }
    /// The FLOP count is not what ran (the extra field `winograd` = 1: a convolution computed with
    /// Winograd, counted as direct), so GFLOP/s is an effective figure.
    var isEffective: Bool { extra.contains { $0.0 == "winograd" && $0.1 != 0 } }
    var percentOfPeak: Double? {
        guard let peakGflops, peakGflops > 0, flops > 0 else { return nil }
        return 100 * gflops / peakGflops
    }
}

struct TimingOptions {
    var samples = 7
    var warmups = 2
}

/// Times `prepared.run`: one untimed first call (allocations, page faults, lazy setup), an estimate of
/// the per-call time, `warmups` untimed samples, then `samples` timed samples; returns the median
/// seconds per call and the foreign CPU load measured over the timed part.
func measure(_ prepared: Prepared, minSampleSeconds: Double, options: TimingOptions) -> (Double, Double) {
    prepared.run()
    let t0 = now()
    prepared.run()
    let once = max(now() - t0, 1e-9)
    let calls = max(1, Int((minSampleSeconds / once).rounded(.up)))
    func sample() -> Double {
        let start = now()
        for _ in 0..<calls { prepared.run() }
        return (now() - start) / Double(calls)
    }
    for _ in 0..<options.warmups { _ = sample() }
    let load = CPULoad()
    var times: [Double] = []
    for _ in 0..<max(1, options.samples) { times.append(sample()) }
    let foreign = load.foreignCores()
    times.sort()
    let mid = times.count / 2
    let median = times.count % 2 == 1 ? times[mid] : (times[mid - 1] + times[mid]) / 2
    return (median, foreign)
}

/// Monotonic wall-clock seconds.
@inline(__always) func now() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
}

/// CPU time used by other processes over an interval, from `/proc/stat` (all CPUs, busy jiffies)
/// minus this process's own user+system time (`getrusage`). Returns 0 where `/proc` is missing.
struct CPULoad {
    private let busy0: Double?, self0: Double, wall0: Double

    init() { busy0 = CPULoad.busySeconds(); self0 = CPULoad.ownSeconds(); wall0 = now() }

    func foreignCores() -> Double {
        guard let busy0, let busy1 = CPULoad.busySeconds() else { return 0 }
        let wall = now() - wall0
        guard wall > 0 else { return 0 }
        let foreign = (busy1 - busy0) - (CPULoad.ownSeconds() - self0)
        return max(0, foreign / wall)
    }

    /// Busy time summed over all CPUs (user, nice, system, irq, softirq, steal), in seconds.
    static func busySeconds() -> Double? {
        #if canImport(Glibc)
        guard let f = fopen("/proc/stat", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 512)
        guard fgets(&line, Int32(line.count), f) != nil else { return nil }
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let fields = text.split(separator: " ").dropFirst().compactMap { Double($0) }
        guard fields.count >= 8 else { return nil }
        // user nice system idle iowait irq softirq steal
        let busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
        return busy / Double(sysconf(Int32(_SC_CLK_TCK)))
        #else
        return nil
        #endif
    }

    static func ownSeconds() -> Double {
        #if canImport(Glibc)
        var u = rusage()
        getrusage(RUSAGE_SELF.rawValue, &u)
        return Double(u.ru_utime.tv_sec) + Double(u.ru_utime.tv_usec) * 1e-6
            + Double(u.ru_stime.tv_sec) + Double(u.ru_stime.tv_usec) * 1e-6
        #else
        return 0
        #endif
    }
}

/// The 1-minute load average (`/proc/loadavg`), for the run's header and footer.
func loadAverage() -> String {
    #if canImport(Glibc)
    var avg = [Double](repeating: 0, count: 3)
    if getloadavg(&avg, 3) == 3 {
        return "\(format(avg[0], 2)) \(format(avg[1], 2)) \(format(avg[2], 2))"
    }
    #endif
    return "?"
}

// MARK: - Shared helpers for benchmark files

/// A float buffer owned by a benchmark's prepared closure; freed when the closure is released.
final class Buffer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int

    /// `count` floats filled with a deterministic pattern in [-1, 1) (no denormals, no NaN).
    init(count: Int, seed: UInt64 = 1) {
        self.count = count
        pointer = .allocate(capacity: max(1, count))
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in 0..<count {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            pointer[i] = Float(Int32(truncatingIfNeeded: state >> 33)) / Float(1 << 31)
        }
    }

    deinit { pointer.deallocate() }
}

// MARK: - Output

func format(_ x: Double, _ digits: Int) -> String {
    if !x.isFinite { return "-" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (abs(x) * scale).rounded() / scale
    var s = String(Int(r))
    if digits > 0 {
        var frac = Int(((r - r.rounded(.down)) * scale).rounded())
        var ds = ""
        for _ in 0..<digits { ds = String(frac % 10) + ds; frac /= 10 }
        s += "." + ds
    }
    return x < 0 && r > 0 ? "-" + s : s
}

func printTable(_ records: [Record]) {
    let header = ["name", "threads", "median ms", "GFLOP/s", "% of peak", "foreign cores"]
    let rows = records.map { r in
        [r.name, String(r.threads), format(r.medianSeconds * 1e3, 3),
         r.flops > 0 ? format(r.gflops, 1) + (r.isEffective ? "*" : "") : "-",
         r.percentOfPeak.map { format($0, 1) } ?? "-",
         format(r.foreignCores, 2)]
    }
    var widths = header.map(\.count)
    for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in
            let pad = String(repeating: " ", count: widths[i] - c.count)
            return i == 0 ? c + pad : pad + c   // names left-aligned, numbers right-aligned
        }.joined(separator: "  ")
    }
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    for row in rows { print(line(row)) }
    if records.contains(where: \.isEffective) {
        print("* effective GFLOP/s: direct FLOP count, computed with Winograd F(4x4, 3x3) (fewer"
              + " multiplications), so it can exceed 100 % of peak")
    }
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(u)
            }
        }
    }
    return out + "\""
}

func jsonNumber(_ x: Double?) -> String {
    guard let x, x.isFinite else { return "null" }
    return format(x, 4)
}

/// Exactly one JSON array of records on stdout.
func printJSON(_ records: [Record]) {
    var lines: [String] = []
    for r in records {
        var fields = [
            ("name", jsonString(r.name)),
            ("threads", String(r.threads)),
            ("median_ms", jsonNumber(r.medianSeconds * 1e3)),
            ("gflops", jsonNumber(r.flops > 0 ? r.gflops : nil)),
            ("percent_of_peak", jsonNumber(r.percentOfPeak)),
            ("foreign_cores", jsonNumber(r.foreignCores)),
        ]
        for (k, v) in r.extra { fields.append((k, jsonNumber(v))) }
        lines.append("  {" + fields.map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}")
    }
    print("[\n" + lines.joined(separator: ",\n") + (lines.isEmpty ? "]" : "\n]"))
}
