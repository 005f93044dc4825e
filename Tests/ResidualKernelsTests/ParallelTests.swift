import Testing
import Foundation
import Synchronization
import ResidualKernels

/// `parallelFor` must really run its blocks at the same time (the sanitizer runs rely on it to
/// exercise the kernels on 2+ threads), cover every index exactly once, and stay inline for one thread.
@Suite struct ParallelTests {
    /// Each of two blocks waits for the other to start: this only completes if both run at once.
    @Test(.enabled(if: ProcessInfo.processInfo.activeProcessorCount >= 2, "needs 2 cores"))
    func twoBlocksRunConcurrently() {
        let started = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let met = Atomic<Int>(0)
        let threadIDs = Mutex<Set<UInt>>([])
        parallelFor(2, threads: 2) { range in
            let me = range.lowerBound, other = 1 - me
            threadIDs.withLock { _ = $0.insert(UInt(pthread_self())) }
            started[me].signal()
            if started[other].wait(timeout: .now() + 30) == .success { met.add(1, ordering: .relaxed) }
        }
        #expect(met.load(ordering: .relaxed) == 2, "the two blocks did not overlap")
        #expect(threadIDs.withLock { $0.count } == 2)
    }

    @Test(arguments: [0, 1, 2, 3, 15, 16, 17, 97])
    func coversEveryIndexOnce(_ count: Int) {
        for threads in [1, 2, 3, 8] {
            for minimum in [1, 4, 64] {
                // Blocks write disjoint slots; an overlap would count 2 (and be a race under TSan).
                let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(count, 1))
                hits.initialize(repeating: 0)
                defer { hits.deallocate() }
                let box = UncheckedSendable(hits)
                parallelFor(count, minimumPerThread: minimum, threads: threads) { range in
                    for i in range { box.value[i] += 1 }
                }
                #expect((0..<count).allSatisfy { hits[$0] == 1 }, "count \(count), threads \(threads), minimum \(minimum)")
            }
        }
    }

    @Test func oneThreadRunsInline() {
        let caller = pthread_self()
        var sameThread = true
        parallelFor(100, threads: 1) { _ in sameThread = sameThread && pthread_equal(pthread_self(), caller) != 0 }
        #expect(sameThread)
    }
}
