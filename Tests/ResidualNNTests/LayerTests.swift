import Testing
import Foundation
import Residual
import ResidualTestSupport

/// Plain loops over NCHW, the reference for the layers' forward passes.
enum Naive {
    static func conv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, stride: Int, padding: Int, groups: Int) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, cg, k) = (w.shape[0], w.shape[1], w.shape[2])
        let oh = (h + 2 * padding - k) / stride + 1, ow = (wd + 2 * padding - k) / stride + 1
        let xs = x.scalars, ws = w.scalars, bs = b?.scalars
        var out = [Float](repeating: 0, count: n * o * oh * ow)
        for i in 0..<n { for f in 0..<o { for y in 0..<oh { for z in 0..<ow {
            var acc = Double(bs?[f] ?? 0)
            let g = f / (o / groups)
            for ci in 0..<cg { for ky in 0..<k { for kx in 0..<k {
                let iy = y * stride - padding + ky, ix = z * stride - padding + kx
                guard iy >= 0, iy < h, ix >= 0, ix < wd else { continue }
                let channel = g * cg + ci
                acc += Double(xs[((i * c + channel) * h + iy) * wd + ix]) * Double(ws[((f * cg + ci) * k + ky) * k + kx])
            } } }
            out[((i * o + f) * oh + y) * ow + z] = Float(acc)
        } } } }
        return Tensor(shape: [n, o, oh, ow], scalars: out)
    }

    static func pool(_ x: Tensor, k: Int, stride: Int, padding: Int, max isMax: Bool) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let oh = (h + 2 * padding - k) / stride + 1, ow = (w + 2 * padding - k) / stride + 1
        let xs = x.scalars
        var out: [Float] = []
        for plane in 0..<(n * c) { for y in 0..<oh { for z in 0..<ow {
            var best = -Float.infinity, sum: Float = 0
            for ky in 0..<k { for kx in 0..<k {
                let iy = y * stride - padding + ky, ix = z * stride - padding + kx
                guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                let v = xs[(plane * h + iy) * w + ix]
                best = max(best, v); sum += v
            } }
            out.append(isMax ? best : sum / Float(k * k))
        } } }
        return Tensor(shape: [n, c, oh, ow], scalars: out)
    }
}

@Suite struct LayerTests {
    @Test(arguments: [(1, 0, 1, true), (2, 1, 1, false), (1, 1, 2, true), (2, 2, 3, true)])
    func conv2d(_ c: (stride: Int, padding: Int, groups: Int, bias: Bool)) {
        let conv = withSeed(2) {
            Conv2d(inputChannels: 6, outputChannels: 6, kernelSize: 3, stride: c.stride, padding: c.padding,
                   groups: c.groups, bias: c.bias)
        }
        #expect((conv.bias != nil) == c.bias)
        #expect(conv.namedParameters().map(\.0) == (c.bias ? ["weight", "bias"] : ["weight"]))
        let x = testTensor([2, 6, 7, 7], seed: 3)
        let y = conv(x)
        #expect(relativeError(y, Naive.conv(x, conv.weight.data, conv.bias?.data, stride: c.stride, padding: c.padding,
                                            groups: c.groups)) < 1e-5)
        let check = checkGradients([x], parameters: conv.parameters) { conv($0[0]) }
        #expect(check.passed, "\(check)")
    }

    @Test func linear() {
        let lin = withSeed(5) { Linear(inputFeatures: 7, outputFeatures: 3) }
        let x = testTensor([4, 7], seed: 6)
        let w = lin.weight.data.scalars, b = lin.bias!.data.scalars, xs = x.scalars
        var expected: [Float] = []
        for i in 0..<4 {
            for o in 0..<3 {
                var acc = b[o]
                for j in 0..<7 { acc += xs[i * 7 + j] * w[o * 7 + j] }
                expected.append(acc)
            }
        }
        #expect(relativeError(lin(x), Tensor(shape: [4, 3], scalars: expected)) < 1e-6)
        let check = checkGradients([x], parameters: lin.parameters) { lin($0[0]) }
        #expect(check.passed, "\(check)")
        let noBias = Linear(inputFeatures: 7, outputFeatures: 3, bias: false)
        #expect(noBias.bias == nil && noBias.parameterCount == 21)
    }

    @Test func batchNormGradientsAndOptions() {
        let x = testTensor([3, 4, 5, 5], seed: 3, lower: -2, upper: 3)
        let bn = BatchNorm2d(channels: 4)
        bn.weight!.data = testTensor([4], seed: 4, lower: 0.5, upper: 1.5)
        bn.bias!.data = testTensor([4], seed: 5)
        var check = checkGradients([x], parameters: bn.parameters) { bn($0[0]) }
        #expect(check.passed, "train: \(check)")
        bn.runningMean.value = testTensor([4], seed: 6); bn.runningVar.value = testTensor([4], seed: 7, lower: 0.5, upper: 2)
        bn.eval()
        check = checkGradients([x], parameters: bn.parameters) { bn($0[0]) }
        #expect(check.passed, "eval: \(check)")

        // Without affine: no parameters, output standardised per channel.
        let plain = BatchNorm2d(channels: 4, affine: false)
        #expect(plain.parameterCount == 0 && plain.namedBuffers().count == 3)
        let y = plain(x).scalars
        for ch in 0..<4 {
            var v: [Float] = []
            for i in 0..<3 { let start: Int = (i * 4 + ch) * 25; v += y[start..<(start + 25)] }
            let mean: Float = v.reduce(0, +) / Float(v.count)
            let variance: Float = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(v.count)
            #expect(abs(mean) < 1e-5 && abs(variance - 1) < 1e-3, "channel \(ch): mean \(mean), variance \(variance)")
        }
        check = checkGradients([x]) { plain($0[0]) }
        #expect(check.passed, "affine: false: \(check)")

        // Momentum and eps: r ← (1 − m)·r + m·batch, with the unbiased variance; eps in the denominator.
        let custom = BatchNorm2d(channels: 1, momentum: 0.25, epsilon: 0.5, affine: false)
        let z = Tensor(shape: [1, 1, 2, 2], scalars: [1, 2, 3, 6])      // mean 3, biased var 3.5, unbiased 14/3
        let out = custom(z).scalars
        #expect(abs(custom.runningMean.value.scalar - 0.75) < 1e-6)
        #expect(abs(custom.runningVar.value.scalar - (0.75 + 0.25 * 14 / 3)) < 1e-6)
        #expect(abs(out[0] - (1 - 3) / Float(4).squareRoot()) < 1e-6, "(x − mean)/√(var + eps) = -2/√4")
        custom.eval()
        let e = custom(z).scalars
        let rm = custom.runningMean.value.scalar, rv = custom.runningVar.value.scalar
        #expect(abs(e[3] - (6 - rm) / (rv + 0.5).squareRoot()) < 1e-5)
    }

    /// In evaluation mode BN uses running statistics: an image's output does not depend on the rest
    /// of the batch.
    @Test func batchNormEvalIndependentOfBatch() {
        let bn = BatchNorm2d(channels: 3)
        for seed in 0..<5 { _ = bn(testTensor([8, 3, 4, 4], seed: UInt64(seed), lower: -1, upper: 3)) }
        bn.eval()
        let a = testTensor([1, 3, 4, 4], seed: 10), others = testTensor([5, 3, 4, 4], seed: 11, lower: -9, upper: 9)
        let alone = bn(a).scalars
        let inBatch = slice(bn(concatenate([others, a], axis: 0)), lower: [5, 0, 0, 0], upper: [6, 3, 4, 4]).scalars
        #expect(alone == inBatch)
        bn.train()
        let trainAlone = bn(a).scalars
        let trainInBatch = slice(bn(concatenate([others, a], axis: 0)), lower: [5, 0, 0, 0], upper: [6, 3, 4, 4]).scalars
        #expect(trainAlone != trainInBatch, "training mode does depend on the batch")
    }

    @Test func batchNormRunningStatisticsMatchPyTorch() {
        let c = parityCases
        let bn = BatchNorm2d(channels: 6)
        bn.weight!.data = c["bn_train.weight"]; bn.bias!.data = c["bn_train.bias"]
        bn.runningMean.value = c["bn_train.running_mean"]; bn.runningVar.value = c["bn_train.running_var"]
        let y = bn(c["bn_train.input"])
        #expect(relativeError(y, c["bn_train.output"]) < 1e-4)
        #expect(relativeError(bn.runningMean.value, c["bn_train.new_running_mean"]) < 1e-5)
        #expect(relativeError(bn.runningVar.value, c["bn_train.new_running_var"]) < 1e-5)
        #expect(bn.numBatchesTracked.value.scalar == 1)
        let bn5 = BatchNorm2d(channels: 5)
        bn5.weight!.data = c["bn_eval.weight"]; bn5.bias!.data = c["bn_eval.bias"]
        bn5.runningMean.value = c["bn_eval.running_mean"]; bn5.runningVar.value = c["bn_eval.running_var"]
        bn5.eval()
        #expect(relativeError(bn5(c["bn_eval.input"]), c["bn_eval.output"]) < 1e-4)
    }

    @Test func activationAndShapeLayers() {
        let x = testTensor([2, 3, 4, 4], seed: 1, awayFromZero: 0.05)
        #expect(ReLU()(x).scalars == x.scalars.map { max($0, 0) })
        var check = checkGradients([x]) { ReLU()($0[0]) }
        #expect(check.passed, "ReLU: \(check)")

        let gap = GlobalAvgPool()(x)
        #expect(gap.shape == [2, 3, 1, 1])
        let xs = x.scalars
        #expect(relativeError(gap, Tensor(shape: [2, 3, 1, 1], scalars: (0..<6).map { p in xs[(p * 16)..<(p * 16 + 16)].reduce(0, +) / 16 })) < 1e-6)
        check = checkGradients([x]) { GlobalAvgPool()($0[0]) }
        #expect(check.passed, "GlobalAvgPool: \(check)")

        let flat = Flatten()(x)
        #expect(flat.shape == [2, 48] && flat.scalars == x.scalars)
        check = checkGradients([x]) { Flatten()($0[0]) * Flatten()($0[0]) }
        #expect(check.passed, "Flatten: \(check)")

        #expect(Identity()(x).scalars == x.scalars && Identity().parameterCount == 0)
    }

    @Test(arguments: [(2, nil as Int?, 0), (3, 2, 1), (3, 1, 0)])
    func pooling(_ c: (kernel: Int, stride: Int?, padding: Int)) {
        // Values 0.03 apart in random order: a ±0.01 finite-difference step never changes a maximum.
        var g = SeededGenerator(seed: 9)
        let x = Tensor(shape: [2, 3, 7, 7], scalars: (0..<294).map { Float($0) * 0.03 - 4 }.shuffled(using: &g))
        let s = c.stride ?? c.kernel
        let maxPool = MaxPool2d(kernelSize: c.kernel, stride: c.stride, padding: c.padding)
        let avgPool = AvgPool2d(kernelSize: c.kernel, stride: c.stride, padding: c.padding)
        #expect(maxPool.stride == s && avgPool.stride == s)
        #expect(relativeError(maxPool(x), Naive.pool(x, k: c.kernel, stride: s, padding: c.padding, max: true)) == 0)
        #expect(relativeError(avgPool(x), Naive.pool(x, k: c.kernel, stride: s, padding: c.padding, max: false)) < 1e-6)
        var check = checkGradients([x]) { maxPool($0[0]) }
        #expect(check.passed, "MaxPool2d: \(check)")
        check = checkGradients([x]) { avgPool($0[0]) }
        #expect(check.passed, "AvgPool2d: \(check)")
    }

    @Test func dropout() {
        let d = Dropout(probability: 0.5, seed: 3)
        let y = d(Tensor(ones: [10_000])).scalars
        #expect(y.allSatisfy { $0 == 0 || $0 == 2 })
        #expect(abs(y.filter { $0 == 2 }.count - 5000) < 300)
        // Seeded: the same seed gives the same masks; masks differ from call to call.
        let e = Dropout(probability: 0.5, seed: 3)
        #expect(e(Tensor(ones: [10_000])).scalars == y)
        #expect(e(Tensor(ones: [10_000])).scalars != y)
        // Gradient: the same mask and scale as the forward pass.
        let f = Dropout(probability: 0.3, seed: 4)
        let x = testTensor([64], seed: 5, awayFromZero: 0.1)
        let tape = Tape()
        let xw = tape.watch(x)
        let out = tape.record { f(xw) }
        let g = tape.gradients(of: out, withRespectTo: [xw], seed: Tensor(ones: [64]))[0]
        #expect(zip(g.scalars, zip(out.scalars, x.scalars)).allSatisfy { g, p in abs(g - p.0 / p.1) < 1e-5 })
        #expect(g.scalars.allSatisfy { $0 == 0 || abs($0 - 1 / 0.7) < 1e-6 })
        d.eval()
        #expect(d(Tensor(ones: [10])).scalars == [Float](repeating: 1, count: 10))
    }

    @Test func sequentialBuilderAndResidual() {
        let deep = true
        let net = withSeed(1) {
            Sequential {
                Conv2d(inputChannels: 2, outputChannels: 2, kernelSize: 3, padding: 1, bias: false)
                if deep { BatchNorm2d(channels: 2) }
                for _ in 0..<2 { ReLU() }
                if !deep { Identity() } else { Flatten() }
            }
        }
        #expect(net.count == 5 && net[4] is Flatten)
        #expect(net.namedParameters().map(\.0) == ["0.weight", "1.weight", "1.bias"])

        let body = withSeed(2) { Sequential { Conv2d(inputChannels: 2, outputChannels: 2, kernelSize: 3, padding: 1); BatchNorm2d(channels: 2) } }
        let unit = Residual { body }
        let x = testTensor([2, 2, 4, 4], seed: 3)
        unit.eval()
        #expect(unit(x).scalars == relu(body(x) + x).scalars)
        // Gradients through the sum (without the final ReLU, whose kink finite differences cannot
        // straddle reliably; ReLU is checked on its own above).
        let linearSum = Residual(activation: false) { body }
        let check = checkGradients([x], parameters: linearSum.parameters) { linearSum($0[0]) }
        #expect(check.passed, "Residual: \(check)")
        let projected = withSeed(4) {
            Residual(shortcut: Conv2d(inputChannels: 2, outputChannels: 3, kernelSize: 1)) {
                Conv2d(inputChannels: 2, outputChannels: 3, kernelSize: 3, padding: 1)
            }
        }
        #expect(projected(x).shape == [2, 3, 4, 4])
        #expect(projected.namedParameters().map(\.0) == ["body.0.weight", "body.0.bias", "shortcut.weight", "shortcut.bias"])
        let linearUnit = Residual(activation: false) { Identity() }
        #expect(linearUnit(x).scalars == (x + x).scalars)
    }

    @Test func summaryCountsMultiplyAdds() {
        let net = Sequential {
            Conv2d(inputChannels: 3, outputChannels: 8, kernelSize: 3, padding: 1, bias: false)
            BatchNorm2d(channels: 8)
            ReLU()
            MaxPool2d(kernelSize: 2)
            Flatten()
            Linear(inputFeatures: 8 * 4 * 4, outputFeatures: 10)
        }
        net[5].freeze()
        let s = ModelSummary(net, inputShape: [3, 8, 8])
        #expect(s.rows.map(\.name) == ["0", "1", "2", "3", "4", "5"])
        #expect(s.rows.map(\.kind) == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear"])
        #expect(s.rows.map(\.outputShape) == [[1, 8, 8, 8], [1, 8, 8, 8], [1, 8, 8, 8], [1, 8, 4, 4], [1, 128], [1, 10]])
        #expect(s.rows.map(\.parameters) == [216, 16, 0, 0, 0, 1290])
        #expect(s.rows.map(\.macs) == [8 * 8 * 8 * 27, 0, 0, 0, 0, 1280])
        #expect(s.totalMACs == 8 * 8 * 8 * 27 + 1280 && s.totalParameters == 216 + 16 + 1290)
        #expect(s.trainableParameters == 232 && s.outputShape == [1, 10])
        #expect(s.description.contains("Total parameters: 1,522") && s.description.contains("Non-trainable parameters: 1,290"))
        #expect(s.description.contains("Multiply-adds per image at input [3, 8, 8]: 15,104 (0.000 G)"))
        // Modes are restored: the summary runs in eval mode.
        #expect((net[1] as! BatchNorm2d).isTraining)
    }
}

let parityCases: ReferenceCases = {
    try! ReferenceCases(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/layers.safetensors"))
}()
