import Foundation
import Testing
import ResidualKernels

/// The flat SIMD kernels of the engine's hot path (reductions, `vexp`, softmax cross-entropy)
/// against plain scalar references at sizes around every vector width the kernels use (SIMD16
/// body, SIMD8 and partial SIMD4 tails), primes, and large sizes. The optimizer updates are
/// checked in `OptimizerKernelTests`, the element-wise ops in `ElementwiseKernelTests`.
@Suite struct FlatKernelTests {
    static let sizes = [0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 15, 16, 17, 23, 24, 28, 31, 32, 33, 47, 63, 64, 65,
                        97, 127, 1021]
    static let large = [16_383, 16_385, 40_009]
    static let u = Float.ulpOfOne / 2

    /// Values on a 1/8 grid in [-4, 4]: every partial sum of up to 2²⁰ of them is exact in float,
    /// so any correct summation order gives exactly the reference, and a lost or doubled element
    /// (at least 1/8) shows.
    static func grid(_ n: Int, seed: UInt64) -> Buffer {
        let b = Buffer(n, seed: seed, lower: -4, upper: 4)
        for i in 0..<n { b.pointer[i] = (b.pointer[i] * 8).rounded() / 8 }
        return b
    }

    @Test func sumIsExactOnAGridAndWithinItsBound() {
        for n in Self.sizes + Self.large {
            let g = Self.grid(n, seed: UInt64(n) + 1)
            #expect(Double(sum(n, g.pointer)) == referenceSum(n, g.pointer), "grid sum n=\(n)")
            let x = Buffer(n, seed: UInt64(n) + 7)
            var abs = 0.0
            for i in 0..<n { abs += Double(Swift.abs(x[i])) }
            // A sum of about n/32 + 10 terms per path: the classical bound γ ≤ depth·u on Σ|x|.
            let bound = (Double(n) / 32 + 10) * Double(Self.u) * abs
            #expect(Swift.abs(Double(sum(n, x.pointer)) - referenceSum(n, x.pointer)) <= bound, "sum n=\(n)")
            if n > 0 {
                #expect(mean(n, x.pointer) == sum(n, x.pointer) / Float(n), "mean n=\(n)")
            }
        }
        #expect(sum(0, Buffer(zeros: 0).pointer) == 0)
        #expect(mean(0, Buffer(zeros: 0).pointer).isNaN)
    }

    /// Exact: against the scalar maximum, on negative data (a tail padded with 0 instead of -inf
    /// would win), and with the maximum planted at every position of small sizes (each tail lane).
    @Test func maximumFindsEveryPosition() {
        for n in Self.sizes + Self.large {
            let x = Buffer(n, seed: UInt64(n) + 3, lower: -2, upper: -1)
            #expect(maximum(n, x.pointer) == referenceMaximum(n, x.pointer), "max n=\(n)")
            if n <= 65 {
                for j in 0..<n {
                    let saved = x.pointer[j]
                    x.pointer[j] = 5
                    #expect(maximum(n, x.pointer) == 5, "max n=\(n) at \(j)")
                    x.pointer[j] = saved
                }
            }
        }
        #expect(maximum(0, Buffer(zeros: 0).pointer) == -.infinity)
    }

    /// `vexp` within 2 ulp of `exp` in Double over the whole normal range, and the edges (underflow to 0, overflow to infinity, NaN, ±infinity).
    @Test func vexpIsAccurate() {
        var worst = 0.0
        var x: Float = -87.3
        var xs: [Float] = []
        while x < 88.7 { xs.append(x); x += 0.0137 }
        xs += [0, -0.0, 1, -1, 0.5, 88.72, -87.33, 1e-8, -1e-8, Float.ulpOfOne]
        while xs.count % 16 != 0 { xs.append(0.25) }
        for start in stride(from: 0, to: xs.count, by: 16) {
            let v = SIMD16<Float>(xs[start..<start + 16])
            let e = vexp(v)
            for l in 0..<16 {
                let exact = Foundation.exp(Double(v[l]))
                let err = Swift.abs(Double(e[l]) - exact) / (exact * Double(Float.ulpOfOne))
                worst = Swift.max(worst, err)
            }
        }
        #expect(worst <= 2, "vexp worst error \(worst) ulp")
        var lanes = SIMD16<Float>(repeating: 0)
        for (l, v) in [Float(-88), -100, -.infinity, 89, .infinity, .nan, 88.7, -87.3].enumerated() { lanes[l] = v }
        let edge = vexp(lanes)
        #expect(edge[0] == 0 && edge[1] == 0 && edge[2] == 0)
        #expect(edge[3] == .infinity && edge[4] == .infinity && edge[5].isNaN)
        #expect(edge[6].isFinite && edge[6] > 3e38 && edge[7] > 1.1e-38)
    }

    /// Probabilities within a bound of Double softmax (exp's 2 ulp, the sum's rounding, the
    /// division, the rounding of x − max), loss within 1e-6 relative, and the gradient exactly the scalar formula on the
    /// kernel's probabilities. Logits up to ±30 (exponentials spanning e⁻⁶⁰) and shifted by 10⁴
    /// (must not overflow).
    @Test(arguments: [Float(0), 0.1])
    func softmaxCrossEntropyMatchesDouble(smoothing: Float) {
        for cols in Self.sizes where cols > 0 {
            for (spread, offset) in [(Float(1), Float(0)), (30, 0), (3, 10_000)] {
                let rows = 3
                let x = Buffer(rows * cols, seed: UInt64(cols) * 5 + 1, lower: -spread, upper: spread)
                for i in 0..<rows * cols { x.pointer[i] += offset }
                var labels = (0..<rows).map { ($0 * 7 + cols / 2) % cols }
                let p = Buffer(zeros: rows * cols)
                var expected = [Double](repeating: 0, count: rows * cols)
                let (loss, ref) = labels.withUnsafeMutableBufferPointer { lp in
                    (softmaxCrossEntropyForward(rows: rows, cols: cols, logits: x.pointer, labels: lp.baseAddress!,
                                                labelSmoothing: smoothing, probabilities: p.pointer),
                     referenceSoftmaxCrossEntropy(rows: rows, cols: cols, logits: x.pointer, labels: lp.baseAddress!,
                                                  labelSmoothing: smoothing, probabilities: &expected))
                }
                // exp's 2 ulp, the sum (cols/16 + 6 terms deep), the division, and the rounding of
                // x − max (up to |x − max| ≤ 2·spread units of u: intrinsic to float softmax).
                let tol = (Double(cols) / 16 + 8 + 4 * Double(spread)) * Double(Self.u)
                var worst = 0.0
                for i in 0..<rows * cols { worst = Swift.max(worst, Swift.abs(Double(p[i]) - expected[i]) / expected[i]) }
                #expect(worst <= tol, "softmax cols=\(cols) spread \(spread) offset \(offset): \(worst) > \(tol)")
                // The offset makes lse ≈ 10⁴ and the loss a difference of two such numbers in float.
                let lossTol = offset == 0 ? 1e-6 * Swift.max(1, Swift.abs(ref)) : 2e-3 * Double(rows)
                #expect(Swift.abs(loss - ref) <= lossTol, "loss cols=\(cols) \(loss) vs \(ref)")

                let scale: Float = 1 / 3, d = Buffer(zeros: rows * cols)
                labels.withUnsafeMutableBufferPointer { lp in
                    softmaxCrossEntropyBackward(rows: rows, cols: cols, probabilities: p.pointer, labels: lp.baseAddress!,
                                                labelSmoothing: smoothing, scale: scale, gradient: d.pointer)
                }
                var same = true
                for r in 0..<rows {
                    for j in 0..<cols {
                        var e = (p[r * cols + j] - smoothing / Float(cols)) * scale
                        if j == labels[r] { e -= (1 - smoothing) * scale }
                        same = same && e.bitPattern == d[r * cols + j].bitPattern
                    }
                }
                #expect(same, "softmax backward cols=\(cols)")
            }
        }
    }
}
