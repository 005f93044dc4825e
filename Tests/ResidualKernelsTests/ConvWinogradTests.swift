import Testing
import ResidualKernels

/// Winograd F(4x4, 3x3) (`ConvAlgorithm.winograd`) against the Double reference and the direct
/// kernel, forward and backward-data (with and without `accumulate`), 1, 2 and 3 threads.
///
/// Tolerance. Winograd is not within the direct kernel's rigorous bound (γ_n Σ|x·w|): its
/// transforms multiply values by up to 5 (Bᵀ), 8 (Aᵀ) and 1/24..1 (G) and add up to 6 of them per
/// stage, so rounding in V = Bᵀ d B, U = G g Gᵀ and the 36 channel sums is amplified by their
/// condition (Barabasz et al. 2018, "Error analysis and improving the accuracy of Winograd
/// convolution": F(4,3) about an order of magnitude above direct in fp32). Measured on zero-mean
/// data in [-1, 1) (`centered`; values in [0, 2) hide cancellation), with
/// `scale = u · sqrt(terms) · max|x| · max|w|` (u = 2⁻²⁴, terms = 9 · input channels, the typical
/// random-walk error of the direct sum): direct reaches 2-31 scale, Winograd 4-217 (C = 64, 32x32,
/// batch 2), about 10x direct. The bound is `8 · directError + 1024 · scale`, ~5x above the worst
/// measured value. What it must catch is of another order: a dropped or misplaced edge tile, a
/// wrong flip or transposition leaves errors of the size of the outputs (|y| ≈ sqrt(terms)/3 ·
/// |x||w|, i.e. ~10⁶ scale), and a transform coefficient off by 0.1% (e.g. 1/24 -> 1/24.024) adds
/// ~10⁻³ |y| ≈ 10³-10⁴ scale.
@Suite struct ConvWinogradTests {
    /// C and K in {1, 3, 15, 16, 17, 33, 64}, H and W in {1, 2, 3, 5, 7, 8, 13, 17, 32}, batch 1-3,
    /// padding 1 (the ResNet case) and 0 and 2 (the other paddings `supports` accepts).
    static let shapes: [Conv2dShape] = {
        func s(_ n: Int, _ c: Int, _ h: Int, _ w: Int, _ o: Int, pad: Int = 1) -> Conv2dShape {
            Conv2dShape(batch: n, inChannels: c, height: h, width: w, outChannels: o, kernelH: 3, kernelW: 3,
                        padH: pad, padW: pad)
        }
        return [s(1, 1, 1, 1, 1), s(2, 3, 2, 3, 15), s(1, 15, 5, 7, 16), s(3, 16, 7, 8, 17), s(1, 17, 13, 17, 33),
                s(2, 33, 8, 13, 64), s(1, 64, 17, 5, 3), s(2, 64, 32, 32, 64), s(1, 16, 32, 17, 16),
                s(3, 17, 3, 32, 1), s(1, 1, 8, 5, 33), s(2, 3, 1, 13, 3), s(1, 64, 2, 2, 15),
                s(1, 3, 8, 8, 64, pad: 0), s(1, 64, 13, 13, 33, pad: 0), s(3, 15, 3, 3, 16, pad: 0),
                s(2, 33, 7, 5, 17, pad: 2), s(1, 16, 1, 2, 1, pad: 2),
                // Few tiles, many output-channel panels, over 4 MFLOP: split over output channels.
                s(1, 128, 5, 5, 128), s(1, 96, 7, 7, 160),
                // A transformed weight over 16 MB (352 x 352 channels): blocks of up to 64 tiles
                // (27 here, one block), split over output-channel panels at 2 and 3 threads.
                s(3, 352, 9, 9, 352)]
    }()

    static let u = 0x1p-24

    /// `8 · directError + 1024 · u · sqrt(terms) · max|x| · max|w|` (see the suite's comment).
    static func bound(direct: Double, terms: Int, x: [Float], w: [Float]) -> Double {
        let mx = Double(x.map { abs($0) }.max() ?? 0), mw = Double(w.map { abs($0) }.max() ?? 0)
        return 8 * direct + 1024 * u * Double(terms).squareRoot() * mx * mw
    }

    static func maxError(_ a: [Float], _ b: [Float]) -> Double {
        var worst = 0.0
        for (p, q) in zip(a, b) {
            if p.isNaN || q.isNaN { return .infinity }
            worst = max(worst, Double(abs(p - q)))
        }
        return worst
    }

    @Test(arguments: shapes)
    func forwardMatchesReference(_ shape: Conv2dShape) {
        #expect(ConvAlgorithm.winograd.supports(shape))
        let k = ConvCase(shape, seed: 3, centered: true)
        let ref = k.forwardReference().values
        var direct = [Float](repeating: .nan, count: k.dy.count)
        conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &direct, algorithm: .direct)
        let tolerance = Self.bound(direct: Self.maxError(direct, ref), terms: 9 * shape.inChannels, x: k.x, w: k.w)
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            var y = [Float](repeating: .nan, count: k.dy.count)
            conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &y, algorithm: .winograd,
                              threads: threads)
            let err = Self.maxError(y, ref)
            #expect(err <= tolerance, "forward t\(threads) \(k): error \(err) > \(tolerance)")
            results.append(y)
        }
        #expect(results[0] == results[1] && results[1] == results[2], "forward \(k): differs by thread count")
    }

    @Test(arguments: shapes)
    func backwardDataMatchesReference(_ shape: Conv2dShape) {
        let k = ConvCase(shape, seed: 4, centered: true)
        let ref = k.backwardDataReference().values
        var direct = [Float](repeating: .nan, count: k.x.count)
        conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &direct, algorithm: .direct)
        let tolerance = Self.bound(direct: Self.maxError(direct, ref), terms: 9 * shape.outChannels, x: k.dy, w: k.w)
        let old = convTestValues(k.x.count, seed: 77).map { $0 - 1 }
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            var dx = [Float](repeating: .nan, count: k.x.count)
            conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &dx, algorithm: .winograd,
                                   threads: threads)
            let err = Self.maxError(dx, ref)
            #expect(err <= tolerance, "backward-data t\(threads) \(k): error \(err) > \(tolerance)")
            // accumulate: exactly old + the overwriting result (one rounding, in the output transform).
            var acc = old
            conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &acc, accumulate: true,
                                   algorithm: .winograd, threads: threads)
            #expect(acc == zip(old, dx).map { $0 + $1 }, "accumulating backward-data t\(threads) \(k)")
            results.append(dx)
        }
        #expect(results[0] == results[1] && results[1] == results[2], "backward-data \(k): differs by thread count")
    }

    /// The transformed weight and the tile scratch are reused across calls (`ScratchPool.winograd`).
    /// A weight changed in place between calls (same pointer, as an optimizer step does) must give
    /// the new weight's result, forward and backward-data: a transform cached by pointer would
    /// return the old one (errors of the size of the outputs).
    @Test func weightChangedInPlaceIsTransformedAgain() {
        let s = Self.shapes[5]
        let cases = [ConvCase(s, seed: 21, centered: true), ConvCase(s, seed: 22, centered: true)]
        let w = UnsafeMutablePointer<Float>.allocate(capacity: cases[0].w.count)
        defer { w.deallocate() }
        for k in cases + cases {
            w.update(from: k.w, count: k.w.count)
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: k.dy.count), direct = y
                conv2dForwardNHWC(s, input: k.x, weight: w, bias: nil, output: &y, algorithm: .winograd,
                                  threads: threads)
                conv2dForwardNHWC(s, input: k.x, weight: k.w, bias: nil, output: &direct, algorithm: .direct)
                let ref = Self.reference(k, forward: true)
                let tol = Self.bound(direct: Self.maxError(direct, ref), terms: 9 * s.inChannels, x: k.x, w: k.w)
                #expect(Self.maxError(y, ref) <= tol, "forward after an in-place weight change \(k)")
                var dx = [Float](repeating: .nan, count: k.x.count), dxDirect = dx
                conv2dBackwardDataNHWC(s, gradOutput: k.dy, weight: w, gradInput: &dx, algorithm: .winograd,
                                       threads: threads)
                conv2dBackwardDataNHWC(s, gradOutput: k.dy, weight: k.w, gradInput: &dxDirect, algorithm: .direct)
                let refDx = Self.reference(k, forward: false)
                let tolDx = Self.bound(direct: Self.maxError(dxDirect, refDx), terms: 9 * s.outChannels, x: k.dy,
                                       w: k.w)
                #expect(Self.maxError(dx, refDx) <= tolDx, "backward-data after an in-place weight change \(k)")
            }
        }
    }

    /// Reference values without the bias (the in-place test passes none).
    static func reference(_ k: ConvCase, forward: Bool) -> [Float] {
        if !forward { return k.backwardDataReference().values }
        var y = [Float](repeating: 0, count: k.dy.count)
        referenceConv2dForwardNHWC(k.s, input: k.x, weight: k.w, bias: nil, output: &y)
        return y
    }

    /// Pool buffers hold whatever their last user wrote: filled with NaN (and dirtied by other
    /// shapes' passes), they must not change a single bit of a pass, so every element the pass
    /// reads it wrote first.
    @Test func dirtyScratchDoesNotChangeResults() {
        let s = Self.shapes[4], other = Self.shapes[19]
        let k = ConvCase(s, seed: 23, centered: true), ko = ConvCase(other, seed: 24, centered: true)
        func run(_ threads: Int) -> [Float] {
            var y = [Float](repeating: .nan, count: k.dy.count), dx = [Float](repeating: .nan, count: k.x.count)
            conv2dForwardNHWC(s, input: k.x, weight: k.w, bias: k.bias, output: &y, algorithm: .winograd,
                              threads: threads)
            conv2dBackwardDataNHWC(s, gradOutput: k.dy, weight: k.w, gradInput: &dx, algorithm: .winograd,
                                   threads: threads)
            return y + dx
        }
        for threads in [1, 2] {
            let clean = run(threads)
            #expect(!clean.contains { $0.isNaN })
            // Dirty the pool: NaN in every free buffer of up to 1 MB, then another shape's passes.
            let loans = (0..<8).map { ScratchPool.winograd.acquire(floats: 1 << (10 + $0 % 9)) }
            for b in loans { b.floats.update(repeating: .nan, count: b.bytes / 4) }
            for b in loans { ScratchPool.winograd.release(b) }
            var yo = [Float](repeating: 0, count: ko.dy.count)
            conv2dForwardNHWC(other, input: ko.x, weight: ko.w, bias: nil, output: &yo, algorithm: .winograd,
                              threads: threads)
            let again = run(threads)
            #expect(again == clean, "t\(threads): a pass after the pool's buffers were dirtied differs")
        }
    }

    /// The plan (weights transformed once) with the fused epilogue is bit-identical to the unplanned
    /// Winograd forward followed by `applyConvEpilogue`, at the planned batch and another one.
    @Test(arguments: [shapes[5], shapes[7], shapes[16], shapes[18]])
    func planFusesEpilogue(_ shape: Conv2dShape) {
        let plan = ConvForwardPlan(shape, weight: ConvCase(shape, seed: 8, centered: true).w, algorithm: .winograd)
        for batch in [shape.batch, shape.batch + 1] {
            var s = shape
            s.batch = batch
            let k = ConvCase(s, seed: 8, centered: true)
            let residual = convTestValues(k.dy.count, seed: 9).map { $0 - 1 }
            var want = [Float](repeating: 0, count: k.dy.count)
            conv2dForwardNHWC(s, input: k.x, weight: k.w, bias: nil, output: &want, algorithm: .winograd)
            k.bias.withUnsafeBufferPointer { b in
                residual.withUnsafeBufferPointer { r in
                    applyConvEpilogue(ConvEpilogue(bias: b.baseAddress, residual: r.baseAddress, relu: true),
                                      pixels: batch * s.outH * s.outW, channels: s.outChannels, &want)
                }
            }
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: k.dy.count)
                k.bias.withUnsafeBufferPointer { b in
                    residual.withUnsafeBufferPointer { r in
                        plan.run(batch: batch, input: k.x, output: &y,
                                 epilogue: ConvEpilogue(bias: b.baseAddress, residual: r.baseAddress, relu: true),
                                 threads: threads)
                    }
                }
                #expect(y == want, "plan t\(threads) \(k)")
            }
        }
    }

    /// `supports` says exactly what the kernel handles.
    @Test func supportsExactlyThreeByThreeStrideOne() {
        func s(k: Int = 3, kw: Int = 3, stride: Int = 1, pad: Int = 1, groups: Int = 1) -> Conv2dShape {
            Conv2dShape(batch: 1, inChannels: 4, height: 8, width: 8, outChannels: 4, kernelH: k, kernelW: kw,
                        strideH: stride, strideW: stride, padH: pad, padW: pad, groups: groups)
        }
        #expect(ConvAlgorithm.winograd.supports(s()) && ConvAlgorithm.winograd.supports(s(pad: 0))
                && ConvAlgorithm.winograd.supports(s(pad: 2)))
        for bad in [s(pad: 3), s(stride: 2), s(k: 1, kw: 1, pad: 0), s(kw: 1), s(k: 5, kw: 5), s(groups: 2)] {
            #expect(!ConvAlgorithm.winograd.supports(bad), "\(bad)")
        }
    }
}
