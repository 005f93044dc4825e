import Testing
import Foundation
import ResidualAutodiff
import ResidualTestSupport

/// Forward values against hand-computed results and plain-loop references.
@Suite struct ForwardTests {
    func close(_ a: [Float], _ b: [Float], _ tol: Float = 1e-5) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= tol * max(1, abs($1)) }
    }

    @Test func broadcastValues() {
        let a = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3], scalars: [10, 20, 30])
        #expect((a + b).scalars == [11, 22, 33, 14, 25, 36])
        let c = Tensor(shape: [2, 1], scalars: [2, 3])
        #expect((a * c).scalars == [2, 4, 6, 12, 15, 18])
        #expect((a - 1).scalars == [0, 1, 2, 3, 4, 5])
        #expect(sum(a, axes: [0]).scalars == [5, 7, 9])
        #expect(max(a, axes: [1]).scalars == [3, 6])
        #expect(mean(a).scalar == 3.5)
    }

    @Test func matmulValues() {
        let a = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3, 2], scalars: [7, 8, 9, 10, 11, 12])
        #expect(matmul(a, b).scalars == [58, 64, 139, 154])
        let l = linear(a, weight: transposed(b), bias: Tensor(shape: [2], scalars: [1, -1]))
        #expect(l.scalars == [59, 63, 140, 153])
    }

    @Test func movementValues() {
        let x = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        #expect(permute(x, [1, 0]).scalars == [1, 4, 2, 5, 3, 6])
        #expect(slice(x, lower: [0, 0], upper: [2, 3], stride: [1, 2]).scalars == [1, 3, 4, 6])
        #expect(concatenate([x, x], axis: 0).shape == [4, 3])
        #expect(concatenate([x, x], axis: 1).scalars == [1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6])
        #expect(pad(x, [(0, 0), (1, 0)]).scalars == [0, 1, 2, 3, 0, 4, 5, 6])
    }

    /// conv2d against a direct six-loop reference, including stride, padding and groups.
    @Test(arguments: [(1, 1, 1), (2, 1, 1), (1, 0, 2), (2, 3, 1)])
    func convolutionMatchesDirectLoops(_ c: (Int, Int, Int)) {
        let (stride, padding, groups) = c
        let (n, ch, h, w, o, k) = (2, 4, 7, 6, 6, 3)
        let x = testTensor([n, ch, h, w], seed: 1), wt = testTensor([o, ch / groups, k, k], seed: 2)
        let b = testTensor([o], seed: 3)
        let y = conv2d(x, wt, bias: b, stride: stride, padding: padding, groups: groups)
        let oh = (h + 2 * padding - k) / stride + 1, ow = (w + 2 * padding - k) / stride + 1
        #expect(y.shape == [n, o, oh, ow])
        var expected = [Float](repeating: 0, count: n * o * oh * ow)
        let cg = ch / groups, og = o / groups
        for i in 0..<n { for oc in 0..<o { for yy in 0..<oh { for xx in 0..<ow {
            var s = Double(b[oc])
            let gi = oc / og
            for ic in 0..<cg { for ky in 0..<k { for kx in 0..<k {
                let iy = yy * stride - padding + ky, ix = xx * stride - padding + kx
                if iy >= 0 && iy < h && ix >= 0 && ix < w {
                    s += Double(x[i, gi * cg + ic, iy, ix]) * Double(wt[oc, ic, ky, kx])
                }
            }}}
            expected[((i * o + oc) * oh + yy) * ow + xx] = Float(s)
        }}}}
        #expect(close(y.scalars, expected, 1e-4))
    }

    @Test func poolingValues() {
        let x = Tensor(shape: [1, 1, 4, 4], scalars: (1...16).map(Float.init))
        #expect(maxPool2d(x, kernelSize: 2, stride: 2).scalars == [6, 8, 14, 16])
        #expect(maxPool2d(x, kernelSize: 3, stride: 2, padding: 1).scalars == [6, 8, 14, 16])
        #expect(avgPool2d(x, kernelSize: 2, stride: 2).scalars == [3.5, 5.5, 11.5, 13.5])
        // count_include_pad: the corner window sees 1,2,5,6 and five zeros of padding.
        #expect(avgPool2d(x, kernelSize: 3, stride: 2, padding: 1)[0, 0, 0, 0] == Float(14) / 9)
        #expect(globalAvgPool(x).scalars == [8.5])
        let negative = Tensor(shape: [1, 1, 2, 2], scalars: [-5, -6, -7, -8])
        #expect(maxPool2d(negative, kernelSize: 3, stride: 1, padding: 1)[0, 0, 0, 0] == -5, "padding never wins")
    }

    @Test func batchNormNormalises() {
        let x = testTensor([8, 3, 4, 4], seed: 4, lower: -3, upper: 5)
        let (y, m, v) = batchNormTraining(x, weight: nil, bias: nil, epsilon: 0)
        let ym = mean(y, axes: [0, 2, 3]).scalars
        let yv = mean(y * y, axes: [0, 2, 3]).scalars
        #expect(ym.allSatisfy { abs($0) < 1e-5 })
        #expect(yv.allSatisfy { abs($0 - 1) < 1e-4 })
        #expect(close(m.scalars, mean(x, axes: [0, 2, 3]).scalars))
        let centered = x - mean(x, axes: [0, 2, 3], keepingDimensions: true)
        #expect(close(v.scalars, mean(centered * centered, axes: [0, 2, 3]).scalars, 1e-4))
    }

    /// Batch size 1 with a constant channel: variance 0, output finite (eps keeps sqrt(var + eps) > 0).
    @Test func batchNormConstantChannelStaysFinite() {
        let x = Tensor(repeating: 3, shape: [1, 2, 1, 1])
        let tape = Tape()
        let xs = tape.watch(x)
        var out = Tensor(0)
        let loss = tape.record { () -> Tensor in
            out = batchNormTraining(xs, weight: nil, bias: nil, epsilon: 1e-5).output
            return sum(out * Tensor(shape: [1, 2, 1, 1], scalars: [1, 2]))
        }
        #expect(out.scalars.allSatisfy { $0.isFinite && $0 == 0 })
        let g = tape.gradients(of: loss, withRespectTo: [xs])[0]
        #expect(g.scalars.allSatisfy { $0.isFinite })
    }

    @Test func batchNormInferenceUsesGivenStatistics() {
        let x = Tensor(shape: [2, 2, 1, 1], scalars: [1, 2, 3, 4])
        let y = batchNormInference(x, weight: Tensor(shape: [2], scalars: [2, 1]), bias: Tensor(shape: [2], scalars: [0, 1]),
                                   mean: Tensor(shape: [2], scalars: [1, 2]), variance: Tensor(shape: [2], scalars: [4, 1]),
                                   epsilon: 0)
        #expect(y.scalars == [0, 1, 2, 3])
    }

    @Test func crossEntropyValue() {
        let logits = Tensor(shape: [2, 3], scalars: [1, 2, 3, 0, 0, 0])
        let loss = softmaxCrossEntropy(logits: logits, labels: [2, 1])
        let e1: Float = Foundation.exp(1), e2: Float = Foundation.exp(2), e3: Float = Foundation.exp(3)
        let lse0: Float = Foundation.log(e1 + e2 + e3)
        let l0: Float = lse0 - 3
        let l1: Float = Foundation.log(3)
        let average: Float = (l0 + l1) / 2
        #expect(abs(loss.scalar - average) < 1e-6)
        // Huge logits stay finite (max subtracted first).
        let big = Tensor(shape: [1, 2], scalars: [1000, -1000])
        #expect(softmaxCrossEntropy(logits: big, labels: [1]).scalar == 2000)
        let ls = exp(logSoftmax(testTensor([4, 9], seed: 5, lower: -50, upper: 50)))
        #expect(sum(ls, axes: [1]).scalars.allSatisfy { abs($0 - 1) < 1e-5 })
        // Label smoothing ε: loss = (1-ε)·CE + ε·mean_j(lse - x_j)
        let s = softmaxCrossEntropy(logits: logits, labels: [2, 1], labelSmoothing: 0.3).scalar
        let smooth0: Float = lse0 - 2, smooth1: Float = l1
        let expected: Float = 0.7 * average + 0.3 * (smooth0 + smooth1) / 2
        #expect(abs(s - expected) < 1e-5)
    }
}
