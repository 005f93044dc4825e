import Testing
import ResidualKernels

/// The flat element-wise kernels (ReLU, add, add+ReLU, accumulate) against scalar loops, at sizes
/// around the SIMD width and the per-thread block, with 1 and 2 threads. Exact: each output element
/// is one rounding of the same formula.
@Suite struct ElementwiseKernelTests {
    static let sizes = [0, 1, 15, 16, 17, 31, 16_383, 16_384, 16_385, 40_009]

    @Test(arguments: [1, 2])
    func matchScalarLoops(threads: Int) {
        for n in Self.sizes {
            let a = Buffer(n, seed: 1), b = Buffer(n, seed: 2), out = Buffer(zeros: n)
            reluForward(n, a.pointer, out.pointer, threads: threads)
            #expect(out.values == a.values.map { max($0, 0) }, "relu \(n)")
            reluBackward(n, b.pointer, a.pointer, out.pointer, threads: threads)
            #expect(out.values == zip(b.values, a.values).map { $1 > 0 ? $0 : 0 }, "relu backward \(n)")
            add(n, a.pointer, b.pointer, out.pointer, threads: threads)
            #expect(out.values == zip(a.values, b.values).map { $0 + $1 }, "add \(n)")
            addReLU(n, a.pointer, b.pointer, out.pointer, threads: threads)
            #expect(out.values == zip(a.values, b.values).map { max($0 + $1, 0) }, "addReLU \(n)")
            let acc = Buffer(n, seed: 3)
            let expected = zip(acc.values, a.values).map { $0 + $1 }
            accumulate(n, a.pointer, into: acc.pointer, threads: threads)
            #expect(acc.values == expected, "accumulate \(n)")
        }
    }

    /// The ReLU gradient at exactly 0 is 0 (PyTorch's convention), and zeros pass ReLU as zeros.
    @Test func reluAtZero() {
        let y = Buffer(zeros: 17), g = Buffer(17, seed: 4), out = Buffer(17, seed: 5)
        reluBackward(17, g.pointer, y.pointer, out.pointer)
        #expect(out.values.allSatisfy { $0 == 0 })
    }
}
