import Dispatch
import Synchronization

/// The one place where work is split across cores.
///
/// Every parallel kernel calls `parallelFor`, which cuts `0..<count` into at most `threads` contiguous
/// blocks and runs them with `DispatchQueue.concurrentPerform`. Kernel bodies take a `Range<Int>`
/// (ggml's `ith/nth` split), so a kernel never knows how many threads ran it. With one thread or one
/// block the body runs inline, with no dispatch overhead.
public enum Threading {
    private static let configured = Atomic<Int>(0)

    /// Number of worker threads the kernels may use; defaults to the number of active cores.
    /// Set it once at start-up (`--threads N`); it is read atomically, so changing it while kernels
    /// run only affects kernels started afterwards.
    public static var threadCount: Int {
        get {
            let n = configured.load(ordering: .relaxed)
            return n > 0 ? n : defaultThreadCount
        }
        set { configured.store(max(1, newValue), ordering: .relaxed) }
    }

    public static let defaultThreadCount: Int = max(1, ProcessInfo_activeProcessorCount())
}

@inline(__always)
private func ProcessInfo_activeProcessorCount() -> Int {
    // Foundation-free: sysconf keeps the kernels module dependent on the toolchain's C library only.
    #if canImport(Glibc)
    return Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    #else
    return 1
    #endif
}

#if canImport(Glibc)
import Glibc
#endif

/// Runs `body` over contiguous sub-ranges of `0..<count`, in parallel when worthwhile.
///
/// - Parameters:
///   - count: the number of work items (rows, channels, images, tiles).
///   - minimumPerThread: do not give a thread fewer items than this (small work stays inline).
///   - threads: override of `Threading.threadCount` (tests run kernels with 1 and 2 threads).
///   - body: processes one block; it must only write memory owned by its items.
@inlinable
public func parallelFor(
    _ count: Int, minimumPerThread: Int = 1, threads: Int? = nil,
    _ body: (Range<Int>) -> Void
) {
    if count <= 0 { return }
    let t = threads ?? Threading.threadCount
    let blocks = min(t, max(1, count / max(1, minimumPerThread)))
    if blocks <= 1 {
        body(0..<count)
        return
    }
    withoutActuallyEscaping(body) { body in
        let box = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: blocks) { b in
            let lo = count * b / blocks
            let hi = count * (b + 1) / blocks
            if lo < hi { box.value(lo..<hi) }
        }
    }
}

/// Wrapper that lets raw pointers and non-`Sendable` closures cross into `concurrentPerform`.
/// Only kernels use it, and only where each thread writes a disjoint part of the output.
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ value: T) { self.value = value }
}
