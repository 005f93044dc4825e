import Testing
import ResidualKernels

/// Channels-last pooling kernels and the option-A shortcut against their scalar references, at
/// channel counts 1, 3, 15, 16, 17, 37, odd spatial sizes, padding, batch 1 and 2, 1 and 2 threads.
@Suite struct PoolNHWCKernelTests {
    /// (batch, channels, height, width, kernel, stride, padding)
    static let cases: [(Int, Int, Int, Int, Int, Int, Int)] = [
        (1, 1, 5, 5, 3, 2, 1), (2, 3, 7, 6, 3, 2, 1), (1, 15, 4, 4, 2, 2, 0), (2, 16, 9, 9, 3, 2, 1),
        (1, 17, 5, 7, 3, 1, 1), (2, 37, 6, 5, 2, 1, 0), (1, 16, 1, 1, 1, 1, 0), (1, 33, 3, 3, 3, 3, 1),
        // Large enough that the forward passes split their rows over 2 threads (`poolRowsPerThread`).
        (2, 64, 57, 57, 3, 2, 1), (1, 17, 61, 61, 3, 1, 1),
    ]

    func geometry(_ c: (Int, Int, Int, Int, Int, Int, Int)) -> ConvGeometry {
        ConvGeometry(channels: c.1, height: c.2, width: c.3, kernelH: c.4, kernelW: c.4, strideH: c.5, strideW: c.5,
                     padH: c.6, padW: c.6)
    }

    @Test(arguments: [1, 2])
    func maxPool(threads: Int) {
        for c in Self.cases {
            let g = geometry(c), batch = c.0
            let inCount = batch * g.height * g.width * g.channels, outCount = batch * g.outH * g.outW * g.channels
            // distinct values (a permutation), so the winner is unambiguous, plus one tie test below
            let x = Buffer(zeros: inCount)
            for i in 0..<inCount { x.pointer[i] = Float((i * 7919) % inCount) - Float(inCount / 2) }
            let y = Buffer(zeros: outCount), ry = Buffer(zeros: outCount)
            let at = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, outCount)), rat = UnsafeMutablePointer<Int32>.allocate(capacity: max(1, outCount))
            defer { at.deallocate(); rat.deallocate() }
            maxPool2dNHWC(g, batch: batch, input: x.pointer, output: y.pointer, argmax: at, threads: threads)
            referenceMaxPool2dNHWC(g, batch: batch, input: x.pointer, output: ry.pointer, argmax: rat)
            #expect(y.values == ry.values, "\(c)")
            #expect(Array(UnsafeBufferPointer(start: at, count: outCount)) == Array(UnsafeBufferPointer(start: rat, count: outCount)))
            // backward: every output gradient lands on its winner
            let dy = Buffer(outCount, seed: 3), dx = Buffer(inCount, seed: 4)
            maxPool2dBackwardNHWC(g, batch: batch, gradOutput: dy.pointer, argmax: at, gradInput: dx.pointer, threads: threads)
            var expected = [Float](repeating: 0, count: inCount)
            for n in 0..<batch {
                for q in 0..<(g.outH * g.outW) {
                    for ch in 0..<g.channels {
                        let o = (n * g.outH * g.outW + q) * g.channels + ch
                        expected[(n * g.height * g.width + Int(rat[o])) * g.channels + ch] += dy[o]
                    }
                }
            }
            #expect(relativeDifference(dx.values, expected) < 1e-6, "backward \(c)")
        }
    }

    /// Ties go to the first pixel in window order, in the vector lanes and the scalar tail alike.
    @Test func maxPoolTies() {
        let g = ConvGeometry(channels: 17, height: 2, width: 2, kernelH: 2, kernelW: 2, strideH: 2, strideW: 2)
        let x = Buffer(zeros: 4 * 17)
        let y = Buffer(zeros: 17)
        let at = UnsafeMutablePointer<Int32>.allocate(capacity: 17)
        defer { at.deallocate() }
        maxPool2dNHWC(g, batch: 1, input: x.pointer, output: y.pointer, argmax: at)
        #expect(Array(UnsafeBufferPointer(start: at, count: 17)) == [Int32](repeating: 0, count: 17))
    }

    @Test(arguments: [1, 2])
    func avgPool(threads: Int) {
        for c in Self.cases {
            let g = geometry(c), batch = c.0
            let inCount = batch * g.height * g.width * g.channels, outCount = batch * g.outH * g.outW * g.channels
            let x = Buffer(inCount, seed: 5), y = Buffer(zeros: outCount), ry = Buffer(zeros: outCount)
            avgPool2dNHWC(g, batch: batch, input: x.pointer, output: y.pointer, threads: threads)
            referenceAvgPool2dNHWC(g, batch: batch, input: x.pointer, output: ry.pointer)
            #expect(relativeDifference(y.values, ry.values) < 1e-6, "\(c)")
            let dy = Buffer(outCount, seed: 6), dx = Buffer(inCount, seed: 7), rdx = Buffer(zeros: inCount)
            avgPool2dBackwardNHWC(g, batch: batch, gradOutput: dy.pointer, gradInput: dx.pointer, threads: threads)
            referenceAvgPool2dBackwardNHWC(g, batch: batch, gradOutput: dy.pointer, gradInput: rdx.pointer)
            #expect(relativeDifference(dx.values, rdx.values) < 1e-6, "backward \(c)")
        }
    }

    @Test(arguments: [1, 2])
    func globalAvgPool(threads: Int) {
        for (batch, spatial, c) in [(1, 1, 1), (2, 49, 3), (3, 64, 16), (1, 9, 17), (2, 5, 37), (1, 0, 4)] {
            let x = Buffer(batch * spatial * c, seed: 8), y = Buffer(zeros: batch * c), ry = Buffer(zeros: batch * c)
            globalAvgPoolNHWC(batch: batch, spatial: spatial, channels: c, input: x.pointer, output: y.pointer, threads: threads)
            referenceGlobalAvgPoolNHWC(batch: batch, spatial: spatial, channels: c, input: x.pointer, output: ry.pointer)
            #expect(relativeDifference(y.values, ry.values) < 1e-6, "\(batch) \(spatial) \(c)")
            let dy = Buffer(batch * c, seed: 9), dx = Buffer(zeros: batch * spatial * c)
            globalAvgPoolBackwardNHWC(batch: batch, spatial: spatial, channels: c, gradOutput: dy.pointer,
                                      gradInput: dx.pointer, threads: threads)
            var expected = [Float](repeating: 0, count: batch * spatial * c)
            for n in 0..<batch { for s in 0..<spatial { for ch in 0..<c { expected[(n * spatial + s) * c + ch] = dy[n * c + ch] / Float(spatial) } } }
            #expect(relativeDifference(dx.values, expected) < 1e-6)
        }
    }

    @Test(arguments: [1, 2])
    func optionAShortcut(threads: Int) {
        // (batch, height, width, channels, stride, before, after)
        for (n, h, w, c, s, b, a) in [(1, 5, 5, 3, 2, 1, 2), (2, 8, 8, 16, 2, 8, 8), (1, 7, 4, 17, 3, 0, 5), (2, 3, 3, 1, 1, 0, 0)] {
            let oh = (h + s - 1) / s, ow = (w + s - 1) / s, oc = b + c + a
            let x = Buffer(n * h * w * c, seed: 10)
            let y = Buffer(zeros: n * oh * ow * oc), ry = Buffer(zeros: n * oh * ow * oc)
            subsampleAndPadChannelsNHWC(batch: n, height: h, width: w, channels: c, stride: s, before: b, after: a,
                                        input: x.pointer, output: y.pointer, threads: threads)
            referenceSubsampleAndPadChannelsNHWC(batch: n, height: h, width: w, channels: c, stride: s, before: b, after: a,
                                                 input: x.pointer, output: ry.pointer)
            #expect(y.values == ry.values)
            // backward is the adjoint: <dy, f(x)> == <f*(dy), x> for random x, dy
            let dy = Buffer(n * oh * ow * oc, seed: 11), dx = Buffer(n * h * w * c, seed: 12)
            subsampleAndPadChannelsBackwardNHWC(batch: n, height: h, width: w, channels: c, stride: s, before: b, after: a,
                                                gradOutput: dy.pointer, gradInput: dx.pointer, threads: threads)
            let lhs = zip(dy.values, y.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let rhs = zip(dx.values, x.values).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            #expect(abs(lhs - rhs) < 1e-9 * max(1, abs(lhs)) + 1e-9)
        }
    }
}
