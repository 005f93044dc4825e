import Dispatch
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Wall-clock time per op, forward and backward, for finding what dominates a training step.
///
/// Off unless the environment sets `RESIDUAL_PROFILE=1` (read once), or `OpProfile.isEnabled` is set;
/// when off, the cost is one relaxed atomic load per recorded op. When on, the tape attributes to
/// each recorded op the time since the previous op was recorded on that tape (its forward: kernels
/// and the Swift around them), and to `"<op> backward"` the time its backward rule took (gradient
/// accumulation included). Ops are named by the function that called `Tape.recordOp` and the
/// shape of their output (`conv2d [128, 16, 32, 32]`); `report()` also sums them by op family.
/// Forward work that is not recorded (inference outside a tape) is not seen.
public enum OpProfile {
    private static let enabled = Atomic<Bool>(
        getenv("RESIDUAL_PROFILE").map { String(cString: $0) != "0" && String(cString: $0) != "" } ?? false)

    private struct Entry { var seconds = 0.0; var calls = 0 }
    // NSLock, not Mutex: ThreadSanitizer does not see Mutex's synchronisation on Linux (Storage.swift).
    nonisolated(unsafe) private static var table: [String: Entry] = [:]
    private static let lock = NSLock()
    private static func withTable<R>(_ body: (inout [String: Entry]) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&table)
    }

    public static var isEnabled: Bool {
        get { enabled.load(ordering: .relaxed) }
        set { enabled.store(newValue, ordering: .relaxed) }
    }

    /// Monotonic seconds.
    @inline(__always) static func now() -> Double {
        Double(DispatchTime.now().uptimeNanoseconds) * 1e-9
    }

    static func add(_ name: String, _ seconds: Double) {
        withTable { t in
            t[name, default: Entry()].seconds += seconds
            t[name, default: Entry()].calls += 1
        }
    }

    /// Records time spent outside the tape (e.g. `"optimizer step"`), when profiling is on.
    public static func measure<R>(_ name: String, _ body: () throws -> R) rethrows -> R {
        guard isEnabled else { return try body() }
        let t0 = now()
        defer { add(name, now() - t0) }
        return try body()
    }

    public static func reset() { withTable { $0 = [:] } }

    /// `(name, seconds, calls)` sorted by time, largest first.
    public static var entries: [(name: String, seconds: Double, calls: Int)] {
        withTable { t in t.map { ($0.key, $0.value.seconds, $0.value.calls) } }
            .sorted { $0.seconds > $1.seconds }
    }

    /// A table of the entries with their share of the total.
    public static func report(detailed: Bool = true) -> String {
        var out = table(families, title: "op profile by family")
        if detailed { out += table(entries, title: "op profile by op and output shape") }
        return out
    }

    private static func table(_ e: [(name: String, seconds: Double, calls: Int)], title: String) -> String {
        let total = e.reduce(0) { $0 + $1.seconds }
        var out = "\(title) (wall time; forward = time since the previous recorded op)\n"
        for (name, s, calls) in e {
            let share = total > 0 ? 100 * s / total : 0
            out += pad(String(Int((s * 1e3).rounded())) + " ms", 10) + pad(String(Int(share.rounded())) + "%", 6)
                + pad(String(calls), 8) + "  " + name + "\n"
        }
        out += pad(String(Int((total * 1e3).rounded())) + " ms", 10) + "  total\n"
        return out
    }

    private static func pad(_ s: String, _ n: Int) -> String {
        String(repeating: " ", count: max(0, n - s.count)) + s
    }

    /// The op's base name (`conv2d(_:_:bias:...)` -> `conv2d`) and its output shape.
    static func key(_ function: StaticString, _ shape: [Int]) -> String {
        let s = function.description
        return String(s.prefix { $0 != "(" }) + " " + describe(shape)
    }

    /// `conv2d [128, 16, 32, 32] backward` -> `conv2d backward`.
    static func family(_ key: String) -> String {
        guard let open = key.firstIndex(of: "["), let close = key.lastIndex(of: "]") else { return key }
        let base = key[..<open].trimmingCharacters(in: .whitespaces)
        return base + key[key.index(after: close)...]
    }

    /// The entries summed by op family (shapes merged), largest first.
    public static var families: [(name: String, seconds: Double, calls: Int)] {
        var sums: [String: (Double, Int)] = [:]
        for e in entries {
            let f = family(e.name)
            sums[f, default: (0, 0)].0 += e.seconds
            sums[f, default: (0, 0)].1 += e.calls
        }
        return sums.map { ($0.key, $0.value.0, $0.value.1) }.sorted { $0.seconds > $1.seconds }
    }
}
