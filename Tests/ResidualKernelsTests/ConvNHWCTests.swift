import Testing
import ResidualKernels

/// Deterministic values in [-1, 1) (a 64-bit LCG), so failures reproduce.
func convTestValues(_ count: Int, seed: UInt64) -> [Float] {
    var s = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
    return (0..<count).map { _ in
        s = s &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return Float(Int64(bitPattern: s >> 11) % 2_000_000) / 1_000_000
    }
}

/// A convolution case with its inputs and the Double references of all three passes, plus, per output
/// element, the sum of |terms| that bounds the float32 accumulation error.
struct ConvCase: CustomStringConvertible {
    let s: Conv2dShape
    let x: [Float], w: [Float], dy: [Float], bias: [Float]

    /// - Parameter centered: values in [-1, 1) instead of [0, 2) (`convTestValues`' range), so sums
    ///   cancel as real activations and weights do (Winograd's error is relative to Σ|terms|).
    init(_ s: Conv2dShape, seed: UInt64 = 1, centered: Bool = false) {
        self.s = s
        let shift: Float = centered ? 1 : 0
        x = convTestValues(s.batch * s.height * s.width * s.inChannels, seed: seed).map { $0 - shift }
        w = convTestValues(s.outChannels * s.inChannels / s.groups * s.kernelH * s.kernelW, seed: seed + 1)
            .map { $0 - shift }
        dy = convTestValues(s.batch * s.outH * s.outW * s.outChannels, seed: seed + 2).map { $0 - shift }
        bias = convTestValues(s.outChannels, seed: seed + 3).map { $0 - shift }
    }

    var description: String {
        "N\(s.batch) C\(s.inChannels) \(s.height)x\(s.width) O\(s.outChannels) k\(s.kernelH)x\(s.kernelW) " +
            "s\(s.strideH) p\(s.padH) g\(s.groups)"
    }

    /// Reference output and the per-element magnitude bound Σ|x·w| (+|bias|).
    func forwardReference() -> (values: [Float], magnitude: [Float]) {
        var y = [Float](repeating: 0, count: dy.count), m = y
        referenceConv2dForwardNHWC(s, input: x, weight: w, bias: bias, output: &y)
        let ax = x.map { abs($0) }, aw = w.map { abs($0) }, ab = bias.map { abs($0) }
        referenceConv2dForwardNHWC(s, input: ax, weight: aw, bias: ab, output: &m)
        return (y, m)
    }

    func backwardDataReference() -> (values: [Float], magnitude: [Float]) {
        var dx = [Float](repeating: 0, count: x.count), m = dx
        referenceConv2dBackwardDataNHWC(s, gradOutput: dy, weight: w, gradInput: &dx)
        referenceConv2dBackwardDataNHWC(s, gradOutput: dy.map { abs($0) }, weight: w.map { abs($0) }, gradInput: &m)
        return (dx, m)
    }

    func backwardWeightReference() -> (values: [Float], magnitude: [Float], bias: [Float], biasMagnitude: [Float]) {
        var dw = [Float](repeating: 0, count: w.count), m = dw
        var db = [Float](repeating: 0, count: bias.count), mb = db
        referenceConv2dBackwardWeightNHWC(s, input: x, gradOutput: dy, gradWeight: &dw, gradBias: &db)
        referenceConv2dBackwardWeightNHWC(s, input: x.map { abs($0) }, gradOutput: dy.map { abs($0) },
                                          gradWeight: &m, gradBias: &mb)
        return (dw, m, db, mb)
    }

    /// Terms summed into one output element of each pass (the accumulation length).
    var forwardTerms: Int { s.inChannels / s.groups * s.kernelH * s.kernelW + 1 }
    var backwardDataTerms: Int { s.outChannels / s.groups * s.kernelH * s.kernelW }
    var backwardWeightTerms: Int { s.batch * s.outH * s.outW }
}

/// Largest |got - want| / bound over all elements, with `bound = γ_n · magnitude` and
/// γ_n = n·u / (1 - n·u), u = 2⁻²⁴: the worst-case error of summing n products in float32 in any
/// order (Higham, Accuracy and Stability of Numerical Algorithms, 3.1). A result <= 1 is within the
/// rigorous bound; an indexing mistake gives errors of the order of the values themselves (≫ 1).
func worstRatio(_ got: [Float], _ want: [Float], magnitude: [Float], terms: Int) -> Double {
    let u = 0x1p-24, n = Double(terms)
    let gamma = n * u / (1 - n * u)
    var worst = 0.0
    for i in 0..<want.count {
        let err = Double(abs(got[i] - want[i]))
        if got[i].isNaN { return .infinity }
        // The reference itself is rounded to float once: allow half an ulp of the result on top.
        let bound = gamma * Double(magnitude[i]) + Double(want[i].ulp) + 1e-30
        worst = max(worst, err / bound)
    }
    return worst
}

/// Shapes with awkward sizes: channel counts 1, 3, 13, 15, 16, 17, 31 and 300 (channel-blocked
/// weights), odd spatial sizes 1..13, batch 1 and 3, strides 1..3, padding beyond the kernel's reach.
let awkwardConvShapes: [Conv2dShape] = {
    func s(_ n: Int, _ c: Int, _ h: Int, _ w: Int, _ o: Int, _ k: Int, _ stride: Int, _ pad: Int,
           kw: Int? = nil, groups: Int = 1) -> Conv2dShape {
        Conv2dShape(batch: n, inChannels: c, height: h, width: w, outChannels: o, kernelH: k, kernelW: kw ?? k,
                    strideH: stride, strideW: stride, padH: pad, padW: pad, groups: groups)
    }
    return [
        s(1, 1, 5, 5, 1, 1, 1, 0), s(1, 1, 1, 1, 1, 3, 1, 1), s(1, 3, 9, 9, 16, 3, 1, 1),
        s(3, 17, 7, 5, 13, 3, 2, 1), s(1, 15, 13, 13, 31, 3, 1, 3), s(1, 16, 8, 8, 16, 1, 2, 2),
        s(3, 3, 13, 11, 16, 7, 2, 3), s(1, 13, 5, 7, 17, 3, 3, 1), s(1, 17, 1, 1, 16, 3, 1, 1),
        s(1, 31, 9, 9, 32, 1, 1, 0), s(3, 16, 9, 9, 48, 1, 2, 0), s(1, 300, 5, 6, 40, 3, 2, 1),
        s(1, 16, 7, 9, 64, 3, 1, 0), s(3, 16, 5, 5, 17, 3, 1, 1, kw: 1), s(1, 8, 6, 6, 12, 3, 2, 1, groups: 4),
        s(3, 32, 13, 13, 48, 3, 1, 1), s(3, 24, 13, 11, 64, 3, 2, 1), s(1, 64, 7, 7, 64, 3, 1, 1),
        // The tap-reuse kernel (3-wide, stride 1, <= 16 output channels): full 16-pixel tiles, edge
        // tiles and row tails, in forward and backward-data.
        s(2, 16, 11, 35, 16, 3, 1, 1), s(1, 5, 6, 33, 7, 3, 1, 0), s(1, 16, 5, 16, 15, 3, 1, 2),
        // The 16-input-channel backward-weight kernel (C = 16, 3-wide, O % 8 == 0): stride 2 and 3,
        // 1x1 and 2-wide images, padding beyond the kernel's reach, 5-tall kernels, 8..48 outputs
        // (also s(2, 16, 11, 35, 16, ...) and s(1, 16, 7, 9, 64, ...) above).
        s(3, 16, 9, 13, 32, 3, 2, 1), s(2, 16, 1, 1, 24, 3, 1, 1), s(1, 16, 4, 2, 8, 3, 3, 3),
        s(1, 16, 6, 3, 8, 5, 1, 2, kw: 3), s(3, 16, 7, 17, 48, 3, 1, 1),
    ]
}()

@Suite struct ConvNHWCTests {
    /// Every algorithm that accepts a shape, every pass, 1 and 2 threads, against the Double references.
    @Test(arguments: awkwardConvShapes)
    func matchesReference(_ shape: Conv2dShape) {
        let k = ConvCase(shape)
        let fwd = k.forwardReference(), bwdD = k.backwardDataReference(), bwdW = k.backwardWeightReference()
        // Winograd is checked against its own (wider) bound in ConvWinogradTests.
        for alg in ConvAlgorithm.allCases where alg.supports(shape) && alg != .winograd {
            for threads in [1, 2] {
                var y = [Float](repeating: .nan, count: k.dy.count)
                conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &y,
                                  algorithm: alg, threads: threads)
                var dx = [Float](repeating: .nan, count: k.x.count)
                conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &dx,
                                       algorithm: alg, threads: threads)
                var dw = [Float](repeating: .nan, count: k.w.count), db = [Float](repeating: .nan, count: k.bias.count)
                conv2dBackwardWeightNHWC(shape, input: k.x, gradOutput: k.dy, gradWeight: &dw, gradBias: &db,
                                         algorithm: alg, threads: threads)
                let slack = 1.0
                let rf = worstRatio(y, fwd.values, magnitude: fwd.magnitude, terms: k.forwardTerms)
                let rd = worstRatio(dx, bwdD.values, magnitude: bwdD.magnitude, terms: k.backwardDataTerms)
                let rw = worstRatio(dw, bwdW.values, magnitude: bwdW.magnitude, terms: k.backwardWeightTerms)
                let rb = worstRatio(db, bwdW.bias, magnitude: bwdW.biasMagnitude, terms: k.backwardWeightTerms)
                #expect(rf <= slack, "forward \(alg) t\(threads) \(k): \(rf)")
                #expect(rd <= slack, "backward-data \(alg) t\(threads) \(k): \(rd)")
                #expect(rw <= slack, "backward-weight \(alg) t\(threads) \(k): \(rw)")
                #expect(rb <= 1, "bias gradient \(alg) t\(threads) \(k): \(rb)")
            }
        }
    }

    /// `accumulate: true` adds the input gradient to what `gradInput` held (the residual input's
    /// gradient summed in the kernel's epilogue): every algorithm, awkward shapes, 1 and 2 threads,
    /// against old + the Double reference, and bit-identical across thread counts. A kernel that
    /// overwrote instead of adding (or added twice, or skipped a stride phase) is off by the old
    /// values, of order 1, against a bound of order 1e-6.
    @Test(arguments: awkwardConvShapes)
    func backwardDataAccumulates(_ shape: Conv2dShape) {
        let k = ConvCase(shape, seed: 5)
        let ref = k.backwardDataReference()
        let old = convTestValues(k.x.count, seed: 99)
        let want = zip(ref.values, old).map { Float(Double($0) + Double($1)) }
        let magnitude = zip(ref.magnitude, old).map { $0 + abs($1) }
        for alg in ConvAlgorithm.allCases where alg.supports(shape) && alg != .winograd {
            var byThreads: [[Float]] = []
            for threads in [1, 2] {
                var dx = old
                conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &dx, accumulate: true,
                                       algorithm: alg, threads: threads)
                let r = worstRatio(dx, want, magnitude: magnitude, terms: k.backwardDataTerms + 1)
                #expect(r <= 1, "accumulating backward-data \(alg) t\(threads) \(k): \(r)")
                byThreads.append(dx)
            }
            #expect(byThreads[0] == byThreads[1], "accumulating backward-data \(alg) \(k): differs by thread count")
        }
    }

    /// Results are bit-identical for 1 and 2 threads (and run to run), for every pass.
    @Test func independentOfThreadCount() {
        let shapes = [
            Conv2dShape(batch: 5, inChannels: 32, height: 15, width: 15, outChannels: 64, kernelH: 3, kernelW: 3,
                        padH: 1, padW: 1),
            Conv2dShape(batch: 3, inChannels: 3, height: 30, width: 30, outChannels: 32, kernelH: 7, kernelW: 7,
                        strideH: 2, strideW: 2, padH: 3, padW: 3),
            Conv2dShape(batch: 4, inChannels: 16, height: 12, width: 37, outChannels: 16, kernelH: 3, kernelW: 3,
                        padH: 1, padW: 1),
        ]
        for shape in shapes {
            let k = ConvCase(shape, seed: 7)
            for alg in ConvAlgorithm.allCases where alg.supports(shape) {
                var results: [[Float]] = []
                for threads in [1, 2, 2] {
                    var y = [Float](repeating: 0, count: k.dy.count), dx = [Float](repeating: 0, count: k.x.count)
                    var dw = [Float](repeating: 0, count: k.w.count)
                    conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: nil, output: &y, algorithm: alg,
                                      threads: threads)
                    conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &dx, algorithm: alg,
                                           threads: threads)
                    conv2dBackwardWeightNHWC(shape, input: k.x, gradOutput: k.dy, gradWeight: &dw, gradBias: nil,
                                             algorithm: alg, threads: threads)
                    results.append(y + dx + dw)
                }
                #expect(results[0] == results[1] && results[1] == results[2], "\(alg) \(k)")
            }
        }
    }

    /// Shapes large enough (over 16 MFLOP) for the direct pass to split across threads, chosen so the
    /// split falls on awkward boundaries: few pixel tiles (7x7 and 5x5 maps: split over output-channel
    /// blocks), channel counts leaving a partial last block (80, 272, 520), L2 groups cut in two
    /// (256 -> 256 3x3: 8 blocks, at most 7 per group), stride-2 backward-data phases, and the padded
    /// or subsampled copies backward-weight makes.
    static let splitShapes: [Conv2dShape] = {
        func s(_ n: Int, _ c: Int, _ hw: Int, _ o: Int, _ k: Int, _ stride: Int) -> Conv2dShape {
            Conv2dShape(batch: n, inChannels: c, height: hw, width: hw, outChannels: o, kernelH: k, kernelW: k,
                        strideH: stride, strideW: stride, padH: k / 2, padW: k / 2)
        }
        return [s(1, 256, 7, 80, 3, 1), s(1, 160, 17, 272, 3, 2), s(2, 64, 14, 48, 3, 1), s(1, 400, 7, 520, 1, 1),
                s(1, 256, 7, 256, 3, 1), s(3, 64, 11, 144, 3, 2),
                // Backward-weight's parallel copies: dY padded to the register block's lanes (40 -> 48,
                // 4608 pixels) and the input padded per image for a stem-like C = 3 (155 x 155 x 3).
                s(2, 16, 48, 40, 3, 1), s(2, 3, 150, 16, 7, 2),
                // A strided 1x1 whose GEMM path subsamples the input in parallel (80 rows of 20 x 64).
                s(4, 64, 40, 128, 1, 2),
                // The tap-reuse kernel (3-wide, stride 1, 16 output channels), split over tiles.
                s(4, 16, 40, 16, 3, 1)]
    }()

    /// Every pass of every algorithm with 1, 2 and 3 threads on `splitShapes`: within the rigorous
    /// bound of the Double reference, and bit-identical whatever the thread count (a job that
    /// skipped, repeated or overlapped a block or tile range, or a thread-dependent summation order,
    /// fails one or the other).
    @Test(arguments: splitShapes)
    func splitsMatchReference(_ shape: Conv2dShape) {
        let k = ConvCase(shape, seed: 11)
        let fwd = k.forwardReference(), bwdD = k.backwardDataReference(), bwdW = k.backwardWeightReference()
        for alg in ConvAlgorithm.allCases where alg.supports(shape) && alg != .grouped && alg != .winograd {
            var results: [[Float]] = []
            for threads in [1, 2, 3] {
                var y = [Float](repeating: .nan, count: k.dy.count)
                conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &y, algorithm: alg,
                                  threads: threads)
                var dx = [Float](repeating: .nan, count: k.x.count)
                conv2dBackwardDataNHWC(shape, gradOutput: k.dy, weight: k.w, gradInput: &dx, algorithm: alg,
                                       threads: threads)
                var dw = [Float](repeating: .nan, count: k.w.count)
                conv2dBackwardWeightNHWC(shape, input: k.x, gradOutput: k.dy, gradWeight: &dw, gradBias: nil,
                                         algorithm: alg, threads: threads)
                let rf = worstRatio(y, fwd.values, magnitude: fwd.magnitude, terms: k.forwardTerms)
                let rd = worstRatio(dx, bwdD.values, magnitude: bwdD.magnitude, terms: k.backwardDataTerms)
                let rw = worstRatio(dw, bwdW.values, magnitude: bwdW.magnitude, terms: k.backwardWeightTerms)
                #expect(rf <= 1, "forward \(alg) t\(threads) \(k): \(rf)")
                #expect(rd <= 1, "backward-data \(alg) t\(threads) \(k): \(rd)")
                #expect(rw <= 1, "backward-weight \(alg) t\(threads) \(k): \(rw)")
                results.append(y + dx + dw)
            }
            #expect(results[0] == results[1] && results[1] == results[2], "\(alg) \(k) depends on threads")
        }
    }

    /// The NHWC kernels agree with the NCHW im2col kernels on a ResNet-like layer (transposed).
    @Test func agreesWithNCHWKernels() {
        let shape = Conv2dShape(batch: 2, inChannels: 16, height: 10, width: 10, outChannels: 32, kernelH: 3,
                                kernelW: 3, strideH: 2, strideW: 2, padH: 1, padW: 1)
        let k = ConvCase(shape, seed: 3)
        func toNCHW(_ v: [Float], _ c: Int, _ h: Int, _ w: Int) -> [Float] {
            var out = v
            for n in 0..<shape.batch { for y in 0..<h { for x in 0..<w { for ch in 0..<c {
                out[((n * c + ch) * h + y) * w + x] = v[((n * h + y) * w + x) * c + ch]
            } } } }
            return out
        }
        var y = [Float](repeating: 0, count: k.dy.count), yn = y
        conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &y)
        conv2dForward(shape, input: toNCHW(k.x, 16, 10, 10), weight: k.w, bias: k.bias, output: &yn)
        let expected = toNCHW(y, 32, shape.outH, shape.outW)
        // Each side is within γ_145 · Σ|terms| <= 8.7e-6 · 145 of the exact value (terms of magnitude
        // <= 1), so they agree within 2.6e-3; a layout mistake gives differences of order 1.
        let worst = zip(expected, yn).map { abs($0 - $1) }.max() ?? 0
        #expect(worst <= 2.6e-3, "max difference \(worst)")
    }
}
