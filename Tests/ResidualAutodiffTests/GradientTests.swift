import Testing
import ResidualAutodiff
import ResidualKernels
import ResidualTestSupport

/// Every op's backward against central finite differences (ResidualTestSupport.GradientCheck).
/// Inputs are random, with seeds fixed per case; where an op has a kink (relu, max, pooling) inputs
/// are kept away from it.
@Suite struct GradientTests {
    func expectPass(_ check: GradientCheck, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(check.passed, "\(check)", sourceLocation: sourceLocation)
    }

    // MARK: element-wise, with broadcasting and size-1 dimensions

    @Test(arguments: [
        ([2, 3], [2, 3]), ([2, 3], [3]), ([2, 3], [1, 3]), ([4, 1, 5], [3, 1]), ([2, 3, 4, 5], [1, 3, 1, 1]),
        ([1], [3, 2]), ([3, 1], [1, 4]), ([5], []),
    ])
    func binaryBroadcast(_ shapes: ([Int], [Int])) {
        let a = testTensor(shapes.0, seed: 1, awayFromZero: 0.5), b = testTensor(shapes.1, seed: 2, lower: 0.5, upper: 2)
        expectPass(checkGradients([a, b]) { $0[0] + $0[1] })
        expectPass(checkGradients([a, b]) { $0[0] - $0[1] })
        expectPass(checkGradients([a, b]) { $0[0] * $0[1] })
        expectPass(checkGradients([a, b]) { $0[0] / $0[1] })
        expectPass(checkGradients([b, a]) { $0[0] / $0[1] * 0.1 + $0[1] })
    }

    @Test func scalarOperands() {
        let x = testTensor([3, 4], seed: 3, lower: 0.5, upper: 2)
        expectPass(checkGradients([x]) { 2 * $0[0] + 1 - $0[0] / 3 })
        expectPass(checkGradients([x]) { 1 / $0[0] - (3 - $0[0]) * 0.5 })
    }

    @Test func unary() {
        let x = testTensor([3, 17], seed: 4, awayFromZero: 0.05)
        let positive = testTensor([3, 17], seed: 5, lower: 0.3, upper: 3)
        expectPass(checkGradients([x]) { -$0[0] })
        expectPass(checkGradients([x]) { exp($0[0]) })
        expectPass(checkGradients([positive]) { log($0[0]) })
        expectPass(checkGradients([positive]) { sqrt($0[0]) })
        expectPass(checkGradients([positive]) { pow($0[0], 3) })
        expectPass(checkGradients([positive]) { pow($0[0], 2) })
        expectPass(checkGradients([positive]) { pow($0[0], -1.5) })
        expectPass(checkGradients([x]) { relu($0[0]) })
        expectPass(checkGradients([x]) { sigmoid($0[0] * 3) })
        expectPass(checkGradients([x]) { tanh($0[0] * 2) })
    }

    @Test func powTensorExponent() {
        let a = testTensor([2, 3], seed: 6, lower: 0.5, upper: 2)
        let b = testTensor([3], seed: 7, lower: -1, upper: 2)
        expectPass(checkGradients([a, b]) { pow($0[0], $0[1]) })
    }

    /// A value used several times: its gradient is the sum over every use.
    @Test func repeatedUse() {
        let x = testTensor([4, 5], seed: 8, lower: 0.5, upper: 1.5)
        expectPass(checkGradients([x]) { x in
            let t = x[0]
            let a: Tensor = t * t
            let b: Tensor = t * 3
            return a + b + exp(t) * t
        })
        expectPass(checkGradients([x]) { x in
            let y: Tensor = x[0] * 2
            let s: Tensor = sum(y, axes: [1], keepingDimensions: true)
            return y * y + s * y
        })
    }

    // MARK: reductions

    @Test(arguments: [[0], [1], [2], [0, 2], [1, 2], [0, 1, 2], [-1]])
    func reductions(_ axes: [Int]) {
        let x = testTensor([3, 4, 5], seed: 9)
        expectPass(checkGradients([x]) { sum($0[0], axes: axes) })
        expectPass(checkGradients([x]) { sum($0[0], axes: axes, keepingDimensions: true) * $0[0] })
        expectPass(checkGradients([x]) { mean($0[0], axes: axes) })
        // distinct values, so no ties within the finite-difference step
        let d = Tensor(shape: [3, 4, 5], scalars: (0..<60).map { Float(($0 * 37) % 60) * 0.1 })
        expectPass(checkGradients([d]) { max($0[0], axes: axes) })
    }

    @Test func reduceAll() {
        let x = testTensor([2, 1, 3], seed: 10)
        expectPass(checkGradients([x]) { sum($0[0]) })
        expectPass(checkGradients([x]) { mean($0[0]) * 3 })
    }

    // MARK: movement

    @Test func movement() {
        let x = testTensor([2, 3, 4, 5], seed: 11)
        expectPass(checkGradients([x]) { $0[0].reshaped([6, -1]) * testTensor([6, 20], seed: 12) })
        expectPass(checkGradients([x]) { permute($0[0], [0, 2, 3, 1]) })
        expectPass(checkGradients([x]) { permute($0[0], [3, 1, 0, 2]) })
        expectPass(checkGradients([x]) { transposed($0[0]) })
        expectPass(checkGradients([x]) { slice($0[0], lower: [0, 1, 1, 0], upper: [2, 3, 4, 5]) })
        expectPass(checkGradients([x]) { slice($0[0], lower: [0, 0, 0, 0], upper: [2, 3, 4, 5], stride: [1, 1, 2, 2]) })
        expectPass(checkGradients([x]) { slice($0[0], lower: [1, 0, 1, 1], upper: [2, 3, 4, 5], stride: [1, 2, 3, 2]) })
        let y = testTensor([2, 1, 4, 5], seed: 13)
        expectPass(checkGradients([x, y]) { concatenate([$0[0], $0[1], $0[0]], axis: 1) })
        expectPass(checkGradients([x, x]) { concatenate([$0[0], $0[1]], axis: -1) })
        expectPass(checkGradients([x]) { pad($0[0], [(0, 0), (0, 0), (1, 2), (3, 1)]) })
        // the paper's option-A shortcut: subsample by 2 and zero-pad channels
        expectPass(checkGradients([x]) {
            pad(slice($0[0], lower: [0, 0, 0, 0], upper: [2, 3, 4, 5], stride: [1, 1, 2, 2]), [(0, 0), (2, 1), (0, 0), (0, 0)])
        })
    }

    // MARK: products

    @Test func matmulShapes() {
        expectPass(checkGradients([testTensor([3, 4], seed: 14), testTensor([4, 5], seed: 15)]) { matmul($0[0], $0[1]) })
        expectPass(checkGradients([testTensor([2, 3, 4], seed: 16), testTensor([2, 4, 5], seed: 17)]) { matmul($0[0], $0[1]) })
        expectPass(checkGradients([testTensor([2, 3, 4], seed: 18), testTensor([4, 1], seed: 19)]) { matmul($0[0], $0[1]) })
        expectPass(checkGradients([testTensor([1, 17], seed: 20), testTensor([17, 16], seed: 21)]) { matmul($0[0], $0[1]) })
    }

    @Test func linearLayer() {
        let x = testTensor([4, 7], seed: 22), w = testTensor([3, 7], seed: 23), b = testTensor([3], seed: 24)
        expectPass(checkGradients([x, w, b]) { linear($0[0], weight: $0[1], bias: $0[2]) })
        expectPass(checkGradients([x, w]) { linear($0[0], weight: $0[1], bias: nil) })
    }

    // MARK: softmax and loss

    @Test func logSoftmaxAxes() {
        let x = testTensor([3, 5], seed: 25, lower: -3, upper: 3)
        expectPass(checkGradients([x]) { logSoftmax($0[0]) })
        expectPass(checkGradients([x]) { logSoftmax($0[0], axis: 0) })
        expectPass(checkGradients([testTensor([2, 3, 4], seed: 26)]) { logSoftmax($0[0], axis: 1) })
    }

    @Test(arguments: [Float(0), 0.1])
    func crossEntropy(_ smoothing: Float) {
        let logits = testTensor([5, 7], seed: 27, lower: -4, upper: 4)
        expectPass(checkGradients([logits]) {
            softmaxCrossEntropy(logits: $0[0], labels: [0, 6, 3, 3, 1], labelSmoothing: smoothing)
        })
    }

    // MARK: convolution, pooling, normalization

    @Test(arguments: [
        // (N, C, H, W, O, k, stride, padding, groups, bias)
        (2, 3, 5, 5, 4, 3, 1, 1, 1, true), (1, 2, 7, 6, 3, 3, 2, 1, 1, false), (2, 4, 6, 6, 6, 1, 2, 0, 1, false),
        (1, 4, 5, 5, 4, 3, 1, 1, 2, true), (1, 3, 9, 9, 2, 7, 2, 3, 1, false), (1, 2, 3, 3, 2, 3, 1, 2, 1, true),
        (2, 6, 4, 5, 6, 3, 1, 1, 3, false), (1, 1, 1, 1, 1, 1, 1, 0, 1, true),
        // 3x3 stride 1 with 32 channels: `ConvAlgorithm.choose` takes Winograd (forward and
        // backward-data; checked below), with partial edge tiles (7x6 outputs, 4x4 tiles).
        (1, 32, 7, 6, 33, 3, 1, 1, 1, true),
    ])
    func convolution(_ c: (Int, Int, Int, Int, Int, Int, Int, Int, Int, Bool)) {
        let (n, ch, h, w, o, k, s, p, g, hasBias) = c
        if ch == 32 {
            let shape = Conv2dShape(batch: n, inChannels: ch, height: h, width: w, outChannels: o, kernelH: k,
                                    kernelW: k, strideH: s, strideW: s, padH: p, padW: p, groups: g)
            #expect(ConvAlgorithm.choose(shape, .forward) == .winograd)
            #expect(ConvAlgorithm.choose(shape, .backwardData) == .winograd)
        }
        let x = testTensor([n, ch, h, w], seed: 28)
        let wt = testTensor([o, ch / g, k, k], seed: 29)
        let b = testTensor([o], seed: 30)
        let check = checkGradients(hasBias ? [x, wt, b] : [x, wt]) { t in
            conv2d(t[0], t[1], bias: hasBias ? t[2] : nil, stride: s, padding: p, groups: g)
        }
        expectPass(check)
    }

    /// A convolution's backward-data adds into the gradient its input already holds (the residual
    /// input of a block, in place): the shortcut's gradient arriving before the convolution's, after
    /// it, and a tensor that is both a convolution's input and its weight (the tape hands the running
    /// sum to one slot only).
    @Test func convolutionAccumulatesIntoItsInputsGradient() {
        let x = testTensor([2, 3, 5, 5], seed: 40), w = testTensor([3, 3, 3, 3], seed: 41, lower: -0.5, upper: 0.5)
        // Smooth ops only (tanh, +): a ReLU kink inside the finite-difference step would fail the check
        // for reasons unrelated to the accumulation. `+` keeps the convolution's channels-last layout
        // and hands the same gradient to both terms, as addReLU does in a block.
        expectPass(checkGradients([x, w]) { t in
            tanh(conv2d(tanh(conv2d(t[0], t[1], padding: 1)), t[1], padding: 1)) + t[0]
        })
        expectPass(checkGradients([x, w]) { t in
            let r = tanh(t[0])
            return conv2d(t[0], t[1], padding: 1) + r
        })
        expectPass(checkGradients([testTensor([1, 1, 3, 3], seed: 42)]) { t in conv2d(t[0], t[0], padding: 1) })
        // 32 channels: Winograd's backward-data (`ConvAlgorithm.choose`), accumulating in its output
        // transform.
        let x32 = testTensor([1, 32, 5, 6], seed: 43), w32 = testTensor([32, 32, 3, 3], seed: 44, lower: -0.2, upper: 0.2)
        expectPass(checkGradients([x32, w32]) { t in conv2d(t[0], t[1], padding: 1) + tanh(t[0]) })
    }

    @Test(arguments: [(3, 2, 1), (2, 2, 0), (3, 1, 1), (3, 2, 0)])
    func pooling(_ c: (Int, Int, Int)) {
        let (k, s, p) = c
        // a permutation of distinct values: no ties for max pooling
        let x = Tensor(shape: [2, 3, 7, 6], scalars: (0..<252).map { Float(($0 * 101) % 252) * 0.05 })
        expectPass(checkGradients([x]) { maxPool2d($0[0], kernelSize: k, stride: s, padding: p) })
        expectPass(checkGradients([testTensor([2, 3, 7, 6], seed: 31)]) { avgPool2d($0[0], kernelSize: k, stride: s, padding: p) })
    }

    @Test func globalAveragePool() {
        expectPass(checkGradients([testTensor([2, 3, 4, 5], seed: 32)]) { globalAvgPool($0[0]) })
    }

    @Test(arguments: [[4, 3, 5, 5], [1, 2, 3, 3], [7, 4], [2, 1, 1, 9]])
    func batchNormTrainingGradients(_ shape: [Int]) {
        let x = testTensor(shape, seed: 33, lower: -2, upper: 3)
        let c = shape[1]
        let w = testTensor([c], seed: 34, lower: 0.5, upper: 1.5), b = testTensor([c], seed: 35)
        expectPass(checkGradients([x, w, b]) { batchNormTraining($0[0], weight: $0[1], bias: $0[2], epsilon: 1e-5).output })
        expectPass(checkGradients([x]) { batchNormTraining($0[0], weight: nil, bias: nil, epsilon: 1e-3).output })
    }

    /// `relu(bn(x) + residual)` (the end of a residual block in one op), NCHW and channels-last,
    /// training and inference mode, gradients for x, γ, β and the residual. The residual is chosen
    /// so that the pre-activation is at least 0.5 from the kink at the checked point.
    @Test(arguments: [false, true])
    func batchNormAddReLUGradients(channelsLast: Bool) {
        let shape = [4, 3, 5, 5]
        let x = testTensor(shape, seed: 43, lower: -2, upper: 3)
        let w = testTensor([3], seed: 44, lower: 0.5, upper: 1.5), b = testTensor([3], seed: 45)
        let m = testTensor([3], seed: 46), v = testTensor([3], seed: 47, lower: 0.5, upper: 2)
        let s = testTensor(shape, seed: 48, awayFromZero: 0.5)
        let layout: Tensor.Layout = channelsLast ? .channelsLast : .standard
        func relaid(_ t: Tensor) -> Tensor { channelsLast ? t.converted(to: .channelsLast) : t }
        let trainBase = batchNormTraining(x, weight: w, bias: b, epsilon: 1e-5).output
        let r = s - trainBase
        expectPass(checkGradients([x, w, b, r]) { t in
            let y = batchNormTraining(relaid(t[0]), weight: t[1], bias: t[2], epsilon: 1e-5, residual: relaid(t[3])).output
            #expect(y.layout == layout)
            return y
        })
        let evalBase = batchNormInference(x, weight: w, bias: b, mean: m, variance: v, epsilon: 1e-5)
        let re = s - evalBase
        expectPass(checkGradients([x, w, b, re]) { t in
            batchNormInference(relaid(t[0]), weight: t[1], bias: t[2], mean: m, variance: v, epsilon: 1e-5,
                               residual: relaid(t[3]))
        })
    }

    @Test func batchNormInferenceGradients() {
        let x = testTensor([3, 4, 2, 2], seed: 36)
        let w = testTensor([4], seed: 37), b = testTensor([4], seed: 38)
        let m = testTensor([4], seed: 39), v = testTensor([4], seed: 40, lower: 0.5, upper: 2)
        expectPass(checkGradients([x, w, b]) {
            batchNormInference($0[0], weight: $0[1], bias: $0[2], mean: m, variance: v, epsilon: 1e-5)
        })
    }

    // MARK: the checker itself

    /// An op whose backward is deliberately wrong (d/dx x² reported as 2.2x): the checker must reject
    /// it, or the passing checks above prove nothing.
    @Test func checkerRejectsWrongGradient() {
        func badSquare(_ x: Tensor) -> Tensor {
            let y = x.detached * x.detached
            let cx = x.detached
            return Tape.recordOp(y, inputs: [x]) { g, _ in [g * cx * 2.2] }
        }
        func goodSquare(_ x: Tensor) -> Tensor {
            let y = x.detached * x.detached
            let cx = x.detached
            return Tape.recordOp(y, inputs: [x]) { g, _ in [g * cx * 2] }
        }
        let x = testTensor([3, 4], seed: 41, lower: 0.5, upper: 2)
        #expect(checkGradients([x]) { goodSquare($0[0]) }.passed)
        let bad = checkGradients([x]) { badSquare($0[0]) }
        #expect(!bad.passed)
        #expect(bad.mismatches.count == 12)
        // A broadcast summed along the wrong axis must fail too.
        func badBroadcastAdd(_ a: Tensor, _ b: Tensor) -> Tensor {
            let y = a.detached + b.detached
            return Tape.recordOp(y, inputs: [a, b]) { g, _ in [g, sum(g, axes: [1]).reshaped([3, 1])] }
        }
        let a = testTensor([3, 3], seed: 42), b = testTensor([1, 3], seed: 43)
        #expect(!checkGradients([a, b]) { badBroadcastAdd($0[0], $0[1]) }.passed)
    }

    /// Parameters read inside the function get their gradient checked too.
    @Test func parameterGradients() {
        let w = Parameter(testTensor([3, 4], seed: 44))
        let x = testTensor([2, 4], seed: 45)
        expectPass(checkGradients([x], parameters: [w]) { linear($0[0], weight: w.value, bias: nil) * 2 })
    }
}
