import Testing
import Foundation
import ResidualAutodiff

/// The buffer pool behind `TensorStorage`: buffers are reused across steps, but a buffer that is
/// still referenced is never handed out again. Each test uses an element count no other test
/// allocates, so tests running in parallel on the shared pool do not see each other's buffers.
@Suite struct StorageTests {
    /// Fills storage `s` with a value derived from `tag`.
    func fill(_ s: TensorStorage, _ tag: Int) {
        for i in 0..<s.count { s.pointer[i] = Float(tag) + Float(i % 7) * 0.125 }
    }

    func intact(_ s: TensorStorage, _ tag: Int) -> Bool {
        (0..<s.count).allSatisfy { s.pointer[$0] == Float(tag) + Float($0 % 7) * 0.125 }
    }

    @Test func liveBuffersAreNeverHandedOutAgain() {
        let count = 4096 * 3 + 11   // pooled size (>= 4096 floats)
        var live: [Int: TensorStorage] = [:]
        for tag in 0..<16 { let s = TensorStorage(uninitializedCount: count); fill(s, tag); live[tag] = s }
        // Free every other buffer, then allocate as many again: the new ones reuse the freed ones.
        for tag in stride(from: 0, to: 16, by: 2) { live[tag] = nil }
        for tag in 16..<24 { let s = TensorStorage(uninitializedCount: count); fill(s, tag); live[tag] = s }
        let addresses = live.values.map { UInt(bitPattern: $0.pointer) }
        #expect(Set(addresses).count == live.count, "two live storages share a buffer")
        for (tag, s) in live { #expect(intact(s, tag), "storage \(tag) was overwritten while alive") }
    }

    @Test func freedBuffersAreReused() {
        // A private pool: the shared one may be at capacity because of other tests in the process.
        let pool = BufferPool(capacityBytes: 1 << 20)
        let count = 4096 * 5 + 3
        let p = pool.allocate(count)
        pool.release(p, count)
        #expect(pool.idleBytes == count * 4)
        let q = pool.allocate(count)
        #expect(q == p, "a freed buffer of the same size is reused")
        #expect(UInt(bitPattern: q) % 64 == 0, "64-byte aligned")
        #expect(pool.counts.hits == 1 && pool.counts.misses == 1)
        let other = pool.allocate(count + 16)
        #expect(other != q, "a different size never gets a live buffer")
        pool.release(q, count); pool.release(other, count + 16)
        pool.drain()
        #expect(pool.idleBytes == 0)
    }

    @Test func poolStaysWithinItsCapacity() {
        let count = 4096 * 4
        let pool = BufferPool(capacityBytes: 3 * count * 4)
        let buffers = (0..<5).map { _ in pool.allocate(count) }
        #expect(Set(buffers).count == 5, "live buffers are distinct")
        for b in buffers { pool.release(b, count) }
        #expect(pool.idleBytes == 3 * count * 4, "only three fit; the other two went back to the system")
        pool.drain()
    }

    @Test func copyOnWriteKeepsPooledBuffersApart() {
        // A tensor that shares storage with another is copied before a write, into a different buffer.
        let count = 4096 * 7 + 5
        let a = Tensor(repeating: 1, shape: [count])
        var b = a
        b[flat: 0] = 2
        #expect(a[flat: 0] == 1 && b[flat: 0] == 2)
        #expect(a.rawStorage.pointer != b.rawStorage.pointer)
    }

    @Test func trainingStepsReuseActivationBuffers() {
        // The same recorded computation twice, on buffers recycled from the first: gradients are right
        // and identical both times.
        let n = 4096 * 2 + 9
        let w = Parameter(Tensor(shape: [n]) { p in for i in p.indices { p[i] = Float(i % 5) - 2 } })
        func step() -> [Float] {
            let tape = Tape()
            let loss = tape.record { sum(relu(w.value * w.value + w.value)) }
            tape.backward(loss)
            defer { w.zeroGrad() }
            return w.grad!.scalars
        }
        let first = step(), second = step()
        #expect(first == second)
        // d/dw relu(w² + w) = (2w + 1) where w² + w > 0.
        for i in [0, 1, 2, 3, 4] {
            let x = Float(i % 5) - 2
            #expect(first[i] == (x * x + x > 0 ? 2 * x + 1 : 0))
        }
    }

    @Test func profilerNamesRecordedOps() {
        OpProfile.isEnabled = true
        defer { OpProfile.isEnabled = false }
        let w = Parameter(Tensor(ones: [4]))
        let tape = Tape()
        let loss = tape.record { sum(relu(w.value * w.value)) }
        tape.backward(loss)
        let names = Set(OpProfile.entries.map(\.name)), families = Set(OpProfile.families.map(\.name))
        #expect(names.contains("relu [4]") && names.contains("relu [4] backward") && names.contains("sum [] backward"),
                "profile entries: \(names.sorted())")
        #expect(families.contains("relu") && families.contains("relu backward"), "families: \(families.sorted())")
    }
}
