import ResidualKernels
#if canImport(Glibc)
import Glibc
#endif

// `swift run -c release bench [options]`: kernel (and later model) speed, as ratios to the CPU's
// own FMA peak measured in the same run. See docs/Kernels.md, "Benchmarks".

let usage = """
    Usage: bench [--threads N[,N...]] [--filter PATTERN] [--models] [--long] [--algorithms] [--all] [--samples N] [--json] [--list]

    Measures the CPU's fp32 FMA peak (record `peak`, 1 thread and all threads), then every selected
    benchmark; each record reports GFLOP/s and % of the peak measured for its thread count.

    Options:
      --threads LIST    thread counts to run, e.g. 2 or 1,2 (default: all cores, \(Threading.defaultThreadCount))
      --filter PATTERN  only benchmarks whose name contains PATTERN (case-insensitive); with * or ?
                        PATTERN is a glob over the whole name, e.g. 'sgemm *x1024'
      --models          run the models suite instead of the kernel suite (whole-model training and
                        inference, each configuration in its own child process for its peak RSS)
      --long            run the slow checks (memory flatness over 1,000 training steps)
      --algorithms      run the 3x3 stride-1 conv layers with each algorithm forced (direct vs
                        Winograd rows `convalg ... <algorithm>`, FLOPs counted as direct)
      --all             run every suite
      --samples N       timed samples per benchmark, median reported (default 7)
      --json            print one JSON array of records instead of the table
      --list            list the selected benchmark names and exit
      --help            show this help
    """

struct Options {
    var threads: [Int] = [Threading.defaultThreadCount]
    var filter: String? = nil
    var suites: Set<Suite> = [.kernels]
    var samples = 7
    var json = false
    var list = false
    var child: String? = nil
}

func printError(_ text: String) {
    var bytes = Array(text.utf8)
    _ = write(2, &bytes, bytes.count)
}

func usageError(_ message: String) -> Never {
    printError("bench: \(message)\n\n\(usage)\n")
    exit(2)
}

func parseOptions(_ args: [String]) -> Options {
    var o = Options()
    var i = 0
    func value(_ flag: String) -> String {
        i += 1
        guard i < args.count else { usageError("\(flag) needs a value") }
        return args[i]
    }
    while i < args.count {
        var arg = args[i]
        var inline: String? = nil
        if arg.hasPrefix("--"), let eq = arg.firstIndex(of: "=") {
            inline = String(arg[arg.index(after: eq)...])
            arg = String(arg[..<eq])
        }
        func take() -> String { inline ?? value(arg) }
        switch arg {
        case "--threads":
            let text = take()
            let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
            guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) > 0 }) else {
                usageError("--threads expects positive integers, e.g. 2 or 1,2 (got '\(text)')")
            }
            o.threads = parts.map { $0! }
        case "--filter": o.filter = take()
        case "--child": o.child = take()   // internal: run one isolated benchmark (ModelBench.swift)
        case "--samples":
            let text = take()
            guard let n = Int(text), n > 0 else { usageError("--samples expects a positive integer (got '\(text)')") }
            o.samples = n
        case "--models", "--long", "--algorithms", "--all", "--json", "--list", "--help":
            if inline != nil { usageError("\(arg) takes no value") }
            switch arg {
            case "--models": o.suites = [.models]
            case "--long": o.suites = [.long]
            case "--algorithms": o.suites = [.algorithms]
            case "--all": o.suites = Set(Suite.allCases)
            case "--json": o.json = true
            case "--list": o.list = true
            default: print(usage); exit(0)
            }
        default:
            usageError(arg.hasPrefix("-") ? "unknown option '\(arg)'" : "unexpected argument '\(arg)'")
        }
        i += 1
    }
    return o
}

/// Substring match, or a glob (`*`, `?`) over the whole name when the pattern has wildcards;
/// both case-insensitive.
func matches(_ name: String, _ pattern: String) -> Bool {
    let n = Array(name.lowercased()), p = Array(pattern.lowercased())
    guard p.contains("*") || p.contains("?") else { return name.lowercased().contains(pattern.lowercased()) }
    // Iterative glob with backtracking to the last star.
    var i = 0, j = 0, star = -1, mark = 0
    while i < n.count {
        if j < p.count && (p[j] == "?" || p[j] == n[i]) { i += 1; j += 1 }
        else if j < p.count && p[j] == "*" { star = j; mark = i; j += 1 }
        else if star >= 0 { j = star + 1; mark += 1; i = mark }
        else { return false }
    }
    while j < p.count && p[j] == "*" { j += 1 }
    return j == p.count
}

let options = parseOptions(Array(CommandLine.arguments.dropFirst()))
if let child = options.child { childMain(child, threads: options.threads[0], samples: options.samples) }
let all = registry.flatMap { $0.benchmarks }
let selected = all.filter { b in
    b.name != PeakBench.name && options.suites.contains(b.suite)
        && (options.filter.map { matches(b.name, $0) } ?? true)
}
let showPeak = options.filter.map { matches(PeakBench.name, $0) } ?? true

if options.list {
    if showPeak { print(PeakBench.name) }
    for b in selected { print(b.name) }
    exit(0)
}

let timing = TimingOptions(samples: options.samples)
let loadBefore = loadAverage()
if !options.json {
    print("bench: threads \(options.threads.map(String.init).joined(separator: ",")), "
          + "\(timing.samples) samples (median), load average before: \(loadBefore)")
}

func run(_ b: Benchmark, threads: Int, peak: Double?) -> Record {
    if b.isolated {
        var (median, foreign, extra) = runIsolated(b, threads: threads, samples: timing.samples)
            ?? (.nan, 0, [])
        // The child measures the peak around its own samples (ModelBench.swift, `childMain`).
        let flops = extra.first { $0.0 == "flops" }?.1 ?? 0
        let localPeak = extra.first { $0.0 == "peak_gflops" }?.1
        extra.removeAll { $0.0 == "flops" }
        return Record(name: b.name, threads: threads, medianSeconds: median, flops: flops,
                      peakGflops: localPeak ?? peak, foreignCores: foreign, extra: extra)
    }
    Threading.threadCount = threads
    let prepared = b.prepare(threads)
    let (median, foreign) = measure(prepared, minSampleSeconds: b.minSampleSeconds, options: timing)
    return Record(name: b.name, threads: threads, medianSeconds: median, flops: prepared.flops,
                  peakGflops: peak, foreignCores: foreign, extra: prepared.extraFields(median))
}

// The peak first, for 1 thread, all cores and every requested count: the other records divide by it.
var peaks: [Int: Double] = [:]
var records: [Record] = []
for t in Set([1, Threading.defaultThreadCount] + options.threads).sorted() {
    var r = run(PeakBench.benchmark, threads: t, peak: nil)
    peaks[t] = r.gflops
    r.peakGflops = r.gflops
    if showPeak { records.append(r) }
}
for b in selected {
    for t in options.threads { records.append(run(b, threads: t, peak: peaks[t])) }
}
Threading.threadCount = Threading.defaultThreadCount
addQuietProjection(&records)

if options.json {
    printJSON(records)
} else {
    printTable(records)
    printModelTable(records)
    print("load average after: \(loadAverage()) (foreign cores: CPU used by other processes during"
          + " the timed samples; figures with > 0.2 are noisy)")
}
