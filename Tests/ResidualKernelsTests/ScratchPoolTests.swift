import Testing
import ResidualKernels

/// The kernels' bounded scratch pool (`ScratchPool`, used by Winograd for its transformed weight
/// and tile scratch): reuse, best fit, bounds, and no buffer on loan twice under concurrency.
@Suite struct ScratchPoolTests {
    @Test func releasedBufferIsReused() {
        let pool = ScratchPool(maxBytes: 1 << 20, maxBuffers: 4)
        let a = pool.acquire(floats: 1000)
        #expect(a.bytes >= 4000 && a.bytes % 4096 == 0)
        #expect(Int(bitPattern: a.raw) % 64 == 0)
        pool.release(a)
        #expect(pool.retained.buffers == 1 && pool.retained.bytes == a.bytes)
        let b = pool.acquire(floats: 900)
        #expect(b.raw == a.raw, "a free buffer that fits must be reused, not a fresh allocation")
        #expect(pool.retained.buffers == 0 && pool.retained.bytes == 0)
        pool.release(b)
    }

    @Test func smallestFittingBufferIsChosen() {
        let pool = ScratchPool(maxBytes: 1 << 22, maxBuffers: 8)
        let big = pool.acquire(floats: 100_000), small = pool.acquire(floats: 2_000), mid = pool.acquire(floats: 20_000)
        pool.release(big); pool.release(small); pool.release(mid)
        let got = pool.acquire(floats: 10_000)
        #expect(got.raw == mid.raw, "best fit: the 20K buffer, not the 100K one")
        let tooBig = pool.acquire(floats: 200_000)
        #expect(tooBig.raw != big.raw && tooBig.bytes >= 800_000, "no free buffer fits: a new one")
        pool.release(got); pool.release(tooBig)
    }

    @Test func boundsEvictOldestFirst() {
        let pool = ScratchPool(maxBytes: 5 * 4096, maxBuffers: 3)
        let bufs = (0..<4).map { _ in pool.acquire(floats: 1024) }   // 4 KiB each
        for b in bufs { pool.release(b) }
        #expect(pool.retained.buffers == 3 && pool.retained.bytes == 3 * 4096, "at most maxBuffers kept")
        // The oldest (bufs[0]) went; the three newest remain.
        let loans = (0..<3).map { _ in pool.acquire(floats: 1024) }
        #expect(!loans.contains { $0.raw == bufs[0].raw } && Set(loans.map(\.raw)) == Set(bufs[1...].map(\.raw)))
        for b in loans { pool.release(b) }
        // Bytes: a 16 KiB buffer on top of 12 KiB retained exceeds 20 KiB: the oldest 4 KiB ones go.
        let large = pool.acquire(floats: 4096)
        pool.release(large)
        #expect(pool.retained.bytes <= pool.maxBytes && pool.retained.buffers == 2)
        let last = (0..<2).map { _ in pool.acquire(floats: 1) }
        #expect(last.contains { $0.raw == large.raw })
        for b in last { pool.release(b) }
    }

    @Test func concurrentLoansAreDistinct() {
        let pool = ScratchPool(maxBytes: 1 << 24, maxBuffers: 16)
        let seen = LockedState<[UnsafeMutableRawPointer: Int]>([:])
        let clash = LockedState(false)
        parallelFor(64, threads: 4) { range in
            for i in range {
                let b = pool.acquire(floats: 256 + i % 3 * 1024)
                // Mark the buffer as ours; if another loan holds it, the mark is already set.
                let ok = seen.withLock { s -> Bool in
                    if s[b.raw, default: 0] != 0 { return false }
                    s[b.raw] = i + 1
                    return true
                }
                b.floats.update(repeating: Float(i), count: 256)
                let intact = (0..<256).allSatisfy { b.floats[$0] == Float(i) }
                seen.withLock { $0[b.raw] = 0 }
                pool.release(b)
                if !ok || !intact { clash.withLock { $0 = true } }
            }
        }
        #expect(!clash.withLock { $0 }, "a buffer was on loan to two callers at once")
        #expect(pool.retained.buffers <= pool.maxBuffers)
    }
}
