import Testing
import ResidualKernels

/// `ConvForwardPlan` (packed once, any batch) with the fused epilogue, against the Double reference
/// of conv + bias, plus a residual, then ReLU.
@Suite struct ConvPlanTests {
    /// Every algorithm that accepts each awkward shape, every epilogue combination, 1 and 2 threads,
    /// run at the planned batch and at another one (the plan's packing must not depend on it).
    @Test(arguments: awkwardConvShapes)
    func matchesReference(_ shape: Conv2dShape) {
        for batch in [shape.batch, shape.batch + 1] {
            var s = shape
            s.batch = batch
            let k = ConvCase(s, seed: 11)
            let fwd = k.forwardReference()
            let residual = convTestValues(k.dy.count, seed: 99)
            // Winograd's plan is checked against its own bound in ConvWinogradTests.
            for alg in ConvAlgorithm.allCases where alg.supports(shape) && alg != .winograd {
                // Planned at the original batch; the weight buffer is overwritten afterwards, so a plan
                // that kept a pointer to it instead of its own copy fails.
                var w = k.w
                let plan = ConvForwardPlan(shape, weight: w, algorithm: alg)
                for i in w.indices { w[i] = .nan }
                for (useBias, useResidual, relu) in [(true, true, true), (true, false, false), (false, true, false),
                                                     (false, false, true), (false, false, false)] {
                    var want = [Float](repeating: 0, count: k.dy.count), magnitude = want
                    for i in want.indices {
                        // The reference includes the bias: take it out when the epilogue has none.
                        let o = i % s.outChannels
                        var v = Double(fwd.values[i]) - (useBias ? 0 : Double(k.bias[o]))
                        var m = Double(fwd.magnitude[i])
                        if useResidual { v += Double(residual[i]); m += Double(abs(residual[i])) }
                        want[i] = Float(relu ? max(v, 0) : v)
                        magnitude[i] = Float(m)
                    }
                    var results: [[Float]] = []
                    for threads in [1, 2] {
                        var y = [Float](repeating: .nan, count: k.dy.count)
                        k.bias.withUnsafeBufferPointer { b in
                            residual.withUnsafeBufferPointer { r in
                                let e = ConvEpilogue(bias: useBias ? b.baseAddress : nil,
                                                     residual: useResidual ? r.baseAddress : nil, relu: relu)
                                plan.run(batch: batch, input: k.x, output: &y, epilogue: e, threads: threads)
                            }
                        }
                        // Three roundings beyond the convolution's: the reference's own (to float, before
                        // the bias is taken out), the residual addition, and the bias addition.
                        let ratio = worstRatio(y, want, magnitude: magnitude, terms: k.forwardTerms + 3)
                        let what = "\(alg) t\(threads) bias \(useBias) residual \(useResidual) relu \(relu)"
                        #expect(ratio <= 1, "\(what) \(k): \(ratio)")
                        if relu { #expect(y.allSatisfy { $0 >= 0 }, "\(alg) relu \(k)") }
                        results.append(y)
                    }
                    #expect(results[0] == results[1], "\(alg) \(k): 1 and 2 threads differ")
                }
            }
        }
    }

    /// A plan with a bias-only epilogue gives exactly the bits of `conv2dForwardNHWC` with that bias.
    @Test func bitIdenticalToUnplannedForward() {
        for shape in awkwardConvShapes {
            let k = ConvCase(shape, seed: 5)
            for alg in ConvAlgorithm.allCases where alg.supports(shape) {
                var a = [Float](repeating: 0, count: k.dy.count), b = a
                conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &a, algorithm: alg)
                let plan = ConvForwardPlan(shape, weight: k.w, algorithm: alg)
                k.bias.withUnsafeBufferPointer { bias in
                    plan.run(batch: shape.batch, input: k.x, output: &b, epilogue: ConvEpilogue(bias: bias.baseAddress))
                }
                #expect(a == b, "\(alg) \(k)")
            }
        }
    }

    /// The epilogue fused into the direct pass's tiles, on the shapes that split over 1, 2 and 3
    /// threads (block ranges, tile ranges, L2 groups, channel blocks): bit-identical to the
    /// convolution with its bias followed by a separate residual addition and ReLU. A tile whose
    /// epilogue is skipped or applied twice (bias added twice, ReLU before the last channel block)
    /// fails it.
    @Test(arguments: ConvNHWCTests.splitShapes)
    func fusedEpilogueOnSplits(_ shape: Conv2dShape) {
        let k = ConvCase(shape, seed: 21)
        let residual = convTestValues(k.dy.count, seed: 22).map { $0 - 1.5 }
        for alg in ConvAlgorithm.allCases where alg.supports(shape) && alg != .grouped {
            var want = [Float](repeating: 0, count: k.dy.count)
            conv2dForwardNHWC(shape, input: k.x, weight: k.w, bias: k.bias, output: &want, algorithm: alg, threads: 1)
            for i in want.indices { want[i] = max(want[i] + residual[i], 0) }
            let plan = ConvForwardPlan(shape, weight: k.w, algorithm: alg)
            for threads in [1, 2, 3] {
                var y = [Float](repeating: .nan, count: k.dy.count)
                k.bias.withUnsafeBufferPointer { b in
                    residual.withUnsafeBufferPointer { r in
                        plan.run(batch: shape.batch, input: k.x, output: &y,
                                 epilogue: ConvEpilogue(bias: b.baseAddress, residual: r.baseAddress, relu: true),
                                 threads: threads)
                    }
                }
                #expect(y == want, "\(alg) t\(threads) \(k)")
            }
        }
    }

    /// The epilogue alone at sizes around the SIMD width and the threading threshold, in place.
    @Test func epilogueMatchesScalar() {
        for (pixels, channels) in [(0, 5), (1, 1), (3, 15), (2, 16), (5, 17), (1031, 16), (3, 70_001), (4099, 64)] {
            let n = pixels * channels
            let y0 = convTestValues(n, seed: 3), r = convTestValues(n, seed: 4), b = convTestValues(channels, seed: 5)
            var want = y0
            for i in 0..<n { want[i] = max(y0[i] + b[i % channels] + r[i], 0) }
            for threads in [1, 2] {
                var y = y0
                b.withUnsafeBufferPointer { bp in
                    r.withUnsafeBufferPointer { rp in
                        applyConvEpilogue(ConvEpilogue(bias: bp.baseAddress, residual: rp.baseAddress, relu: true),
                                          pixels: pixels, channels: channels, &y, threads: threads)
                    }
                }
                #expect(y == want, "\(pixels)x\(channels) t\(threads)")
            }
        }
    }
}
