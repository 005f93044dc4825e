import Testing
import ResidualKernels

/// Batch-norm kernels against the Double-precision scalar references, in both views: channels-last
/// (`inner == 1`, vectorised over channels, chunked rows) and NCHW (`inner > 1`), at awkward channel
/// counts (1, 3, 15, 16, 17, 37, 64), row counts that do and do not fill the row chunks, and 1 and
/// 2 threads. Tolerances are float32 rounding of sums of up to a few thousand terms (≤ 2e-5
/// relative); a wrong index, a missing term or a swapped operand misses by orders of magnitude.
@Suite struct BatchNormKernelTests {
    /// (outer, channels, inner)
    static let views: [ChannelView] = [
        .init(outer: 1, channels: 1, inner: 1), .init(outer: 7, channels: 3, inner: 1),
        .init(outer: 33, channels: 15, inner: 1), .init(outer: 513, channels: 16, inner: 1),
        .init(outer: 1100, channels: 17, inner: 1), .init(outer: 301, channels: 37, inner: 1),
        .init(outer: 260, channels: 64, inner: 1), .init(outer: 2, channels: 1, inner: 1),
        .init(outer: 3, channels: 5, inner: 17), .init(outer: 1, channels: 16, inner: 49),
        .init(outer: 4, channels: 3, inner: 16), .init(outer: 2, channels: 7, inner: 1),
    ]

    @Test(arguments: [1, 2])
    func statistics(threads: Int) {
        for v in Self.views {
            let x = Buffer(v.count, seed: UInt64(v.count), lower: -2, upper: 3)
            let m = Buffer(zeros: v.channels), s = Buffer(zeros: v.channels)
            let rm = Buffer(zeros: v.channels), rs = Buffer(zeros: v.channels)
            batchNormStatistics(v, x.pointer, mean: m.pointer, variance: s.pointer, threads: threads)
            referenceBatchNormStatistics(v, x.pointer, mean: rm.pointer, variance: rs.pointer)
            #expect(relativeDifference(m.values, rm.values) < 2e-5, "mean \(v)")
            #expect(relativeDifference(s.values, rs.values) < 2e-5, "variance \(v)")
        }
    }

    /// |mean| ≫ std: E[x²] − E[x]² in float32 would lose every digit here (1e6 vs 1e-2); the chunked
    /// two-pass statistics with Chan's merge keep the variance to float rounding.
    @Test(arguments: [1, 2])
    func varianceWithLargeMean(threads: Int) {
        for v in [ChannelView(outer: 3000, channels: 19, inner: 1), ChannelView(outer: 5, channels: 3, inner: 600)] {
            let x = Buffer(v.count, seed: 9, lower: 999.9, upper: 1000.1)
            let m = Buffer(zeros: v.channels), s = Buffer(zeros: v.channels)
            let rm = Buffer(zeros: v.channels), rs = Buffer(zeros: v.channels)
            batchNormStatistics(v, x.pointer, mean: m.pointer, variance: s.pointer, threads: threads)
            referenceBatchNormStatistics(v, x.pointer, mean: rm.pointer, variance: rs.pointer)
            #expect(relativeDifference(s.values, rs.values) < 1e-3, "variance \(v): \(s.values.prefix(3)) vs \(rs.values.prefix(3))")
            #expect(relativeDifference(m.values, rm.values) < 1e-6)
        }
    }

    /// The sums do not depend on the thread count: the same bits with 1, 2 and 3 threads.
    @Test func deterministicAcrossThreadCounts() {
        let v = ChannelView(outer: 4099, channels: 21, inner: 1)
        let x = Buffer(v.count, seed: 3), dy = Buffer(v.count, seed: 4)
        var results: [[Float]] = []
        for t in [1, 2, 3] {
            let m = Buffer(zeros: 21), s = Buffer(zeros: 21), gg = Buffer(zeros: 21), gb = Buffer(zeros: 21)
            let dx = Buffer(zeros: v.count)
            batchNormStatistics(v, x.pointer, mean: m.pointer, variance: s.pointer, threads: t)
            batchNormBackward(v, x: x.pointer, dy: dy.pointer, mean: m.pointer, invStd: s.pointer,
                              gamma: nil, training: true, fusedReLU: nil, dx: dx.pointer, dgamma: gg.pointer, dbeta: gb.pointer, threads: t)
            results.append(m.values + s.values + gg.values + gb.values + dx.values)
        }
        #expect(results[0] == results[1] && results[1] == results[2])
    }

    @Test(arguments: [(1, false), (2, false), (1, true), (2, true)])
    func apply(_ c: (Int, Bool)) {
        let (threads, relu) = c
        for v in Self.views {
            let x = Buffer(v.count, seed: 5), scale = Buffer(v.channels, seed: 6), shift = Buffer(v.channels, seed: 7)
            let y = Buffer(zeros: v.count), ry = Buffer(zeros: v.count)
            batchNormApply(v, x.pointer, scale: scale.pointer, shift: shift.pointer, y.pointer, relu: relu, threads: threads)
            referenceBatchNormApply(v, x.pointer, scale: scale.pointer, shift: shift.pointer, ry.pointer, relu: relu)
            #expect(y.values == ry.values, "\(v)")
            if relu { #expect(y.values.allSatisfy { $0 >= 0 }) }
        }
    }

    @Test(arguments: [(1, false, true), (2, false, true), (1, true, true), (2, true, true), (2, false, false), (2, true, false)])
    func backward(_ c: (Int, Bool, Bool)) {
        let (threads, withReLU, training) = c
        for v in Self.views {
            let x = Buffer(v.count, seed: 11, lower: -1, upper: 2), dy = Buffer(v.count, seed: 12)
            let scale = Buffer(v.channels, seed: 13), shift = Buffer(v.channels, seed: 17)   // the fused ReLU's mask
            let relu: (scale: UnsafePointer<Float>, shift: UnsafePointer<Float>)? = withReLU ? (UnsafePointer(scale.pointer), UnsafePointer(shift.pointer)) : nil
            let mean = Buffer(v.channels, seed: 14), inv = Buffer(v.channels, seed: 15, lower: 0.5, upper: 2)
            let gamma = Buffer(v.channels, seed: 16)
            let dx = Buffer(zeros: v.count), gg = Buffer(zeros: v.channels), gb = Buffer(zeros: v.channels)
            let rdx = Buffer(zeros: v.count), rgg = Buffer(zeros: v.channels), rgb = Buffer(zeros: v.channels)
            batchNormBackward(v, x: x.pointer, dy: dy.pointer, mean: mean.pointer, invStd: inv.pointer,
                              gamma: gamma.pointer, training: training, fusedReLU: relu,
                              dx: dx.pointer, dgamma: gg.pointer, dbeta: gb.pointer, threads: threads)
            referenceBatchNormBackward(v, x: x.pointer, dy: dy.pointer, mean: mean.pointer, invStd: inv.pointer,
                                       gamma: gamma.pointer, training: training, fusedReLU: relu,
                                       dx: rdx.pointer, dgamma: rgg.pointer, dbeta: rgb.pointer)
            #expect(relativeDifference(dx.values, rdx.values) < 2e-5, "dx \(v)")
            #expect(relativeDifference(gg.values, rgg.values) < 2e-5, "dgamma \(v)")
            #expect(relativeDifference(gb.values, rgb.values) < 2e-5, "dbeta \(v)")
        }
    }

    /// The block-end fusion `relu(bn(x) + residual)`: the same bits as the reference apply followed
    /// by `max(· + residual, 0)` (the unfused op sequence), both layouts, 1 and 2 threads.
    @Test(arguments: [1, 2])
    func applyAddReLU(threads: Int) {
        for v in Self.views {
            let x = Buffer(v.count, seed: 5), scale = Buffer(v.channels, seed: 6), shift = Buffer(v.channels, seed: 7)
            let r = Buffer(v.count, seed: 8)
            let y = Buffer(zeros: v.count), ry = Buffer(zeros: v.count)
            batchNormApplyAddReLU(v, x.pointer, scale: scale.pointer, shift: shift.pointer, residual: r.pointer, y.pointer,
                                  threads: threads)
            referenceBatchNormApply(v, x.pointer, scale: scale.pointer, shift: shift.pointer, ry.pointer, relu: false)
            let want = zip(ry.values, r.values).map { max($0 + $1, 0) }
            #expect(y.values == want, "\(v)")
            #expect(y.values.contains(0) && y.values.contains { $0 > 0 } || v.count < 8, "\(v): mask not exercised")
        }
    }

    /// Its backward: the shortcut's gradient is exactly `dy` where the output is positive, and the
    /// batch-norm gradients are the reference's for that masked gradient; training and inference
    /// mode, all outputs or only some (the path without statistics writes the shortcut's gradient
    /// in its own pass), 1 and 2 threads.
    @Test(arguments: [(1, true, true), (2, true, true), (2, false, true), (1, true, false), (2, true, false), (2, false, false)])
    func backwardAddReLU(_ c: (Int, Bool, Bool)) {
        let (threads, training, allOutputs) = c
        for v in Self.views {
            let x = Buffer(v.count, seed: 11, lower: -1, upper: 2), dy = Buffer(v.count, seed: 12)
            let out = Buffer(v.count, seed: 19)   // the block output: only its sign is read
            let mean = Buffer(v.channels, seed: 14), inv = Buffer(v.channels, seed: 15, lower: 0.5, upper: 2)
            let gamma = Buffer(v.channels, seed: 16)
            let gz = Buffer(v.count, seed: 20), dx = Buffer(zeros: v.count)
            let gg = Buffer(zeros: v.channels), gb = Buffer(zeros: v.channels)
            batchNormBackwardAddReLU(v, x: x.pointer, dy: dy.pointer, output: out.pointer, mean: mean.pointer,
                                     invStd: inv.pointer, gamma: gamma.pointer, training: training,
                                     residualGradient: gz.pointer, dx: dx.pointer,
                                     dgamma: allOutputs ? gg.pointer : nil, dbeta: allOutputs ? gb.pointer : nil,
                                     threads: threads)
            let masked = Buffer(zeros: v.count)
            for i in 0..<v.count { masked.pointer[i] = out.pointer[i] > 0 ? dy.pointer[i] : 0 }
            #expect(gz.values == masked.values, "shortcut gradient \(v)")
            let rdx = Buffer(zeros: v.count), rgg = Buffer(zeros: v.channels), rgb = Buffer(zeros: v.channels)
            referenceBatchNormBackward(v, x: x.pointer, dy: masked.pointer, mean: mean.pointer, invStd: inv.pointer,
                                       gamma: gamma.pointer, training: training, fusedReLU: nil,
                                       dx: rdx.pointer, dgamma: rgg.pointer, dbeta: rgb.pointer)
            #expect(relativeDifference(dx.values, rdx.values) < 2e-5, "dx \(v)")
            if allOutputs {
                #expect(relativeDifference(gg.values, rgg.values) < 2e-5, "dgamma \(v)")
                #expect(relativeDifference(gb.values, rgb.values) < 2e-5, "dbeta \(v)")
            }
        }
    }

    /// Optional outputs: asking only for dγ/dβ, or only for dx, gives the same values as asking for all.
    @Test func optionalOutputs() {
        let v = ChannelView(outer: 100, channels: 19, inner: 1)
        let x = Buffer(v.count, seed: 1), dy = Buffer(v.count, seed: 2)
        let mean = Buffer(19, seed: 3), inv = Buffer(19, seed: 4, lower: 0.5, upper: 2)
        let dx = Buffer(zeros: v.count), gg = Buffer(zeros: 19), gb = Buffer(zeros: 19)
        batchNormBackward(v, x: x.pointer, dy: dy.pointer, mean: mean.pointer, invStd: inv.pointer,
                          gamma: nil, training: true, fusedReLU: nil, dx: dx.pointer, dgamma: gg.pointer, dbeta: gb.pointer)
        let dx2 = Buffer(zeros: v.count), gg2 = Buffer(zeros: 19), gb2 = Buffer(zeros: 19)
        batchNormBackward(v, x: x.pointer, dy: dy.pointer, mean: mean.pointer, invStd: inv.pointer,
                          gamma: nil, training: true, fusedReLU: nil, dx: dx2.pointer, dgamma: nil, dbeta: nil)
        batchNormBackward(v, x: x.pointer, dy: dy.pointer, mean: mean.pointer, invStd: inv.pointer,
                          gamma: nil, training: true, fusedReLU: nil, dx: nil, dgamma: gg2.pointer, dbeta: gb2.pointer)
        #expect(dx.values == dx2.values && gg.values == gg2.values && gb.values == gb2.values)
    }
}
