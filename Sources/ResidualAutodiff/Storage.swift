import Foundation

/// The heap buffer behind a tensor: `count` floats, 64-byte aligned (one zmm register, one cache line).
///
/// Storage is shared between tensors that are reshapes of one another; `Tensor` copies it before any
/// write unless it is uniquely referenced (copy-on-write), so users see value semantics.
///
/// Buffers of 16 KiB and more are recycled through `BufferPool`: a training step allocates the same
/// sizes every step, so after the first step activations and gradients reuse the buffers freed by the
/// previous one instead of going back to `mmap`/`munmap` and page faults.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    /// Uninitialised storage; callers must write every element before it is read.
    public init(uninitializedCount count: Int) {
        precondition(count >= 0, "TensorStorage: negative count \(count)")
        self.count = count
        pointer = BufferPool.shared.allocate(count)
    }

    public convenience init(repeating value: Float, count: Int) {
        self.init(uninitializedCount: count)
        pointer.initialize(repeating: value, count: count)
    }

    public func copy() -> TensorStorage {
        let s = TensorStorage(uninitializedCount: count)
        s.pointer.update(from: pointer, count: count)
        return s
    }

    deinit { BufferPool.shared.release(pointer, count) }
}

/// A size-keyed free list of large float buffers, bounded in total size.
public final class BufferPool: @unchecked Sendable {
    public static let shared = BufferPool()

    /// Buffers smaller than this many floats go straight to malloc (fast for small sizes).
    static let minimumPooledCount = 4096
    /// Most bytes kept idle in the pool; beyond it, released buffers are freed.
    public let capacityBytes: Int

    private struct State {
        var free: [Int: [UInt]] = [:]   // addresses, by element count
        var idleBytes = 0
        var hits = 0, misses = 0
    }
    // NSLock (pthread_mutex) rather than Synchronization.Mutex: on Linux, Mutex locks with futex
    // calls inside the uninstrumented standard library, so ThreadSanitizer sees no synchronisation
    // and reports every pool access as a race (docs/Reliability.md, "Sanitizers").
    private let lock = NSLock()
    private var state = State()

    private func withState<R>(_ body: (inout State) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&state)
    }

    public init(capacityBytes: Int = 1 << 30) { self.capacityBytes = capacityBytes }

    /// A 64-byte aligned buffer of `count` floats (uninitialised): an idle pooled one of exactly that
    /// count if there is one, else from the system. `TensorStorage` is the usual client.
    public func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count >= Self.minimumPooledCount {
            let reused: UInt? = withState { s in
                guard let p = s.free[count]?.popLast() else { s.misses += 1; return nil }
                s.idleBytes -= count * 4
                s.hits += 1
                return p
            }
            if let reused, let p = UnsafeMutablePointer<Float>(bitPattern: reused) { return p }
        }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
        return raw.bindMemory(to: Float.self, capacity: max(1, count))
    }

    /// Returns a buffer from `allocate(count)`; it is kept for reuse while the idle total stays
    /// within `capacityBytes`, else freed. The caller must not touch it afterwards.
    public func release(_ pointer: UnsafeMutablePointer<Float>, _ count: Int) {
        if count >= Self.minimumPooledCount {
            let address = UInt(bitPattern: pointer)
            let kept: Bool = withState { s in
                guard s.idleBytes + count * 4 <= capacityBytes else { return false }
                s.free[count, default: []].append(address)
                s.idleBytes += count * 4
                return true
            }
            if kept { return }
        }
        UnsafeMutableRawPointer(pointer).deallocate()
    }

    /// Pooled-size allocations served from the pool (`hits`) and from the system (`misses`) so far.
    /// A training loop in its steady state only hits: `bench --models` reports misses per step.
    public var counts: (hits: Int, misses: Int) { withState { ($0.hits, $0.misses) } }

    /// Bytes currently idle in the pool.
    public var idleBytes: Int { withState { $0.idleBytes } }

    /// Frees every idle buffer (e.g. between a training run and inference).
    public func drain() {
        let buffers: [UInt] = withState { s in
            let all = s.free.values.flatMap { $0 }
            s.free = [:]
            s.idleBytes = 0
            return all
        }
        for a in buffers { UnsafeMutableRawPointer(bitPattern: a)?.deallocate() }
    }
}
