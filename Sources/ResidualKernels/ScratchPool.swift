/// A bounded, thread-safe set of reusable scratch buffers for kernels whose scratch is too large to
/// allocate per call.
///
/// Why: Winograd's transformed weight is 36·C·K floats (38 MB at 512 channels) and is needed for
/// one call only; a fresh allocation of that size is a fresh `mmap`, so every call page-faulted it
/// in again (about 15 ms of a 512 x 512 weight transform that computes in ~3 ms) and `munmap`ed it
/// afterwards. Buffers handed back here keep their pages. The pool is the kernels' own: it does not
/// depend on the autodiff layer's buffer pool, and callers never see it.
///
/// Bounded: it keeps at most `maxBuffers` buffers and `maxBytes` bytes; a buffer released beyond
/// that evicts the oldest ones first. A buffer is 64-byte aligned, at least the requested size
/// (sizes are rounded up to 4 KiB) and holds whatever its last user wrote: callers overwrite every
/// element they read.
public final class ScratchPool: @unchecked Sendable {
    /// One buffer on loan from a pool; give it back with ``ScratchPool/release(_:)``.
    public struct Buffer {
        public let raw: UnsafeMutableRawPointer
        public let bytes: Int
        public var floats: UnsafeMutablePointer<Float> { raw.assumingMemoryBound(to: Float.self) }
    }

    /// The pool the Winograd pass uses for transformed weights and per-thread tile scratch. 96 MB
    /// holds the forward and backward-data weights of the largest ResNet layer (2 x 38 MB at 512
    /// channels) plus the per-thread scratch.
    public static let winograd = ScratchPool(maxBytes: 96 << 20, maxBuffers: 16)

    public let maxBytes: Int, maxBuffers: Int
    private let free: LockedState<(buffers: [Buffer], bytes: Int)>

    public init(maxBytes: Int, maxBuffers: Int) {
        self.maxBytes = maxBytes
        self.maxBuffers = maxBuffers
        free = LockedState((buffers: [], bytes: 0))
    }

    deinit {
        free.withLock { state in for b in state.buffers { b.raw.deallocate() } }
    }

    /// A buffer of at least `floats` floats: the smallest free one that fits, else a new one.
    public func acquire(floats: Int) -> Buffer {
        let need = (max(1, floats) * 4 + 4095) / 4096 * 4096
        let reused: Buffer? = free.withLock { state in
            var best: Int? = nil
            for (i, b) in state.buffers.enumerated() where b.bytes >= need {
                if best == nil || b.bytes < state.buffers[best!].bytes { best = i }
            }
            guard let i = best else { return nil }
            state.bytes -= state.buffers[i].bytes
            return state.buffers.remove(at: i)
        }
        if let reused { return reused }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: need, alignment: 64)
        raw.bindMemory(to: Float.self, capacity: need / 4)
        return Buffer(raw: raw, bytes: need)
    }

    /// Gives a buffer back; the oldest buffers are freed while the pool is over its bounds.
    public func release(_ buffer: Buffer) {
        let evicted: [Buffer] = free.withLock { state in
            state.buffers.append(buffer)
            state.bytes += buffer.bytes
            var out: [Buffer] = []
            while state.buffers.count > maxBuffers || state.bytes > maxBytes {
                let b = state.buffers.removeFirst()
                state.bytes -= b.bytes
                out.append(b)
            }
            return out
        }
        for b in evicted { b.raw.deallocate() }
    }

    /// Runs `body` with a buffer of at least `floats` floats, released afterwards.
    public func with<R>(floats: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
        let b = acquire(floats: floats)
        defer { release(b) }
        return try body(b.floats)
    }

    /// Buffers and bytes currently held (for tests).
    public var retained: (buffers: Int, bytes: Int) { free.withLock { ($0.buffers.count, $0.bytes) } }
}
