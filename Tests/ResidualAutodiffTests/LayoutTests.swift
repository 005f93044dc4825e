import Testing
import ResidualAutodiff
import ResidualTestSupport

/// Memory layouts: reading a channels-last tensor sees logical NCHW order; conversion is an op
/// with a backward; every layout-aware op gives the same numbers in both layouts and keeps
/// channels-last data channels-last; gradients of channels-last graphs pass central finite
/// differences, including broadcasting, mixed layouts and values used twice.
@Suite struct LayoutTests {
    func expectPass(_ check: GradientCheck, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(check.passed, "\(check)", sourceLocation: sourceLocation)
    }

    func cl(_ t: Tensor) -> Tensor { t.converted(to: .channelsLast) }

    /// Same logical values (exactly, or within `tolerance` relative to the largest magnitude).
    func same(_ a: Tensor, _ b: Tensor, _ tolerance: Float = 0) -> Bool {
        a.shape == b.shape && (tolerance == 0 ? a.scalars == b.scalars : relativeError(a, b) <= tolerance)
    }

    // MARK: the layout itself

    @Test func readingSeesLogicalOrder() {
        let x = testTensor([2, 3, 4, 5], seed: 1)
        let y = cl(x)
        #expect(y.layout == .channelsLast && x.layout == .standard)
        #expect(y.strides == [60, 1, 15, 3] && x.strides == [60, 20, 5, 1])
        #expect(y.scalars == x.scalars)
        #expect(y.description == x.description)
        #expect(y[1, 2, 3, 4] == x[1, 2, 3, 4] && y[0, 1, 0, 2] == x[0, 1, 0, 2])
        for i in [0, 7, 59, 119] { #expect(y[flat: i] == x[flat: i]) }
        y.withUnsafeBufferPointer { p in #expect(Array(p) == x.scalars) }
        // the raw memory really is NHWC: element (n, c, h, w) at ((n·H + h)·W + w)·C + c
        #expect(y.rawStorage.pointer[((1 * 4 + 3) * 5 + 4) * 3 + 2] == x[1, 2, 3, 4])
        #expect(y.converted(to: .standard).scalars == x.scalars)
        #expect(y.detached.layout == .channelsLast)
    }

    @Test func writingKeepsOrConvertsLayout() {
        let x = testTensor([2, 3, 2, 2], seed: 2)
        var y = cl(x)
        let shared = y
        y[1, 2, 1, 0] = 42
        y[flat: 0] = -7
        #expect(y.layout == .channelsLast, "element writes keep the layout")
        #expect(y[1, 2, 1, 0] == 42 && y.scalars[0] == -7 && y.scalars[23] == x.scalars[23])
        #expect(shared.scalars == x.scalars, "copy-on-write: the other copy is unchanged")
        var z = cl(x)
        z.withUnsafeMutableBufferPointer { $0[5] = 3 }   // logical index 5
        #expect(z.layout == .standard && z[0, 1, 0, 1] == 3)
    }

    /// C == 1 or H·W == 1: both layouts have the same bytes, so conversion shares the storage.
    @Test func degenerateShapesConvertForFree() {
        let a = testTensor([3, 1, 4, 4], seed: 3), b = testTensor([3, 5, 1, 1], seed: 4)
        #expect(cl(a).rawStorage === a.rawStorage && cl(b).rawStorage === b.rawStorage)
        #expect(cl(b).flattened().rawStorage === b.rawStorage, "flattening [N, C, 1, 1] is free")
        let log = LayoutConversionLog()
        LayoutConversionLog.$current.withValue(log) { _ = cl(a); _ = cl(b); _ = cl(testTensor([2, 2, 2, 2], seed: 5)) }
        #expect(log.counts == ["converted(to:)": 1])
    }

    @Test func reshapeAndNonLayoutAwareOpsConvert() {
        let x = testTensor([2, 3, 4, 5], seed: 6)
        let y = cl(x)
        #expect(y.reshaped([6, 20]).scalars == x.reshaped([6, 20]).scalars)
        #expect(y.reshaped([6, 20]).layout == .standard)
        #expect(sum(y, axes: [1, 3]).scalars == sum(x, axes: [1, 3]).scalars)
        #expect(max(y, axes: [0]).scalars == max(x, axes: [0]).scalars)
        #expect(permute(y, [0, 2, 3, 1]).scalars == permute(x, [0, 2, 3, 1]).scalars)
        #expect(slice(y, lower: [0, 1, 1, 0], upper: [2, 3, 4, 5], stride: [1, 1, 2, 2]).scalars ==
                slice(x, lower: [0, 1, 1, 0], upper: [2, 3, 4, 5], stride: [1, 1, 2, 2]).scalars)
        #expect(concatenate([y, x], axis: 1).scalars == concatenate([x, x], axis: 1).scalars)
        #expect(pad(y, [(0, 0), (1, 1), (0, 0), (2, 0)]).scalars == pad(x, [(0, 0), (1, 1), (0, 0), (2, 0)]).scalars)
        #expect(logSoftmax(y, axis: 1).scalars == logSoftmax(x, axis: 1).scalars)
        #expect(logSoftmax(y).scalars == logSoftmax(x).scalars)
        // broadcasting with a channels-last operand
        let w = testTensor([1, 3, 1, 1], seed: 7)
        #expect((y * w).scalars == (x * w).scalars)
        #expect((w - y).scalars == (w - x).scalars)
    }

    // MARK: forward: channels-last equals NCHW, and stays channels-last

    @Test(arguments: [[2, 3, 5, 5], [1, 17, 3, 7], [2, 16, 4, 4], [1, 1, 6, 6], [3, 37, 1, 1]])
    func layoutAwareForwardMatches(_ shape: [Int]) {
        let x = testTensor(shape, seed: 8, lower: -2, upper: 2), b = testTensor(shape, seed: 9)
        let (xc, bc) = (cl(x), cl(b))
        func check(_ name: String, _ f: (Tensor) -> Tensor, _ a: Tensor, _ ac: Tensor, tolerance: Float = 0) {
            let (r, rc) = (f(a), f(ac))
            #expect(rc.layout == .channelsLast || rc.shape[2...].allSatisfy { $0 == 1 }, "\(name) \(shape): layout \(rc.layout)")
            #expect(same(rc, r, tolerance), "\(name) \(shape): \(relativeError(rc, r))")
        }
        check("relu", relu, x, xc)
        check("exp", exp, x, xc)
        check("neg", { -$0 }, x, xc)
        check("add", { $0 + ($0.layout == .channelsLast ? bc : b) }, x, xc)
        check("mul", { $0 * ($0.layout == .channelsLast ? bc : b) }, x, xc)
        check("addReLU", { addReLU($0, $0.layout == .channelsLast ? bc : b) }, x, xc)
        let c = shape[1]
        let w = testTensor([c], seed: 10, lower: 0.5, upper: 1.5), bias = testTensor([c], seed: 11)
        for fused in [false, true] {
            check("batchNormTraining fused \(fused)", {
                batchNormTraining($0, weight: w, bias: bias, epsilon: 1e-5, fusedReLU: fused).output
            }, x, xc, tolerance: 2e-6)
            let m = testTensor([c], seed: 12), v = testTensor([c], seed: 13, lower: 0.5, upper: 2)
            check("batchNormInference fused \(fused)", {
                batchNormInference($0, weight: w, bias: bias, mean: m, variance: v, epsilon: 1e-5, fusedReLU: fused)
            }, x, xc, tolerance: 1e-6)
        }
        let (_, mean, variance) = batchNormTraining(x, weight: nil, bias: nil, epsilon: 1e-5)
        let (_, meanC, varianceC) = batchNormTraining(xc, weight: nil, bias: nil, epsilon: 1e-5)
        #expect(same(meanC, mean, 1e-5) && same(varianceC, variance, 1e-5))
        if shape[2] >= 3 && shape[3] >= 3 {
            for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
                check("maxPool2d \(k)/\(s)/\(p)", { maxPool2d($0, kernelSize: k, stride: s, padding: p) }, x, xc)
                check("avgPool2d \(k)/\(s)/\(p)", { avgPool2d($0, kernelSize: k, stride: s, padding: p) }, x, xc, tolerance: 1e-6)
            }
        }
        let pooled = globalAvgPool(xc)
        #expect(pooled.shape == [shape[0], c, 1, 1] && pooled.layout == .standard)
        #expect(same(pooled, globalAvgPool(x), 1e-6))
        check("subsampleAndPadChannels", { subsampleAndPadChannels($0, stride: 2, before: 2, after: 3) }, x, xc)
        check("subsampleAndPadChannels s1", { subsampleAndPadChannels($0, stride: 1, before: 0, after: 1) }, x, xc)
    }

    /// conv2d (groups 1) returns channels-last from either input layout; groups > 1 keeps the input's.
    @Test func convolutionLayouts() {
        let x = testTensor([2, 4, 6, 5], seed: 14), w = testTensor([6, 4, 3, 3], seed: 15)
        let a = conv2d(x, w, padding: 1), b = conv2d(cl(x), w, padding: 1)
        #expect(a.layout == .channelsLast && b.layout == .channelsLast)
        #expect(a.scalars == b.scalars)
        let wg = testTensor([6, 2, 3, 3], seed: 16)
        #expect(conv2d(x, wg, padding: 1, groups: 2).layout == .standard)
        #expect(conv2d(cl(x), wg, padding: 1, groups: 2).layout == .channelsLast)
        #expect(conv2d(cl(x), wg, padding: 1, groups: 2).scalars == conv2d(x, wg, padding: 1, groups: 2).scalars)
    }

    // MARK: gradients in channels-last

    @Test func conversionGradients() {
        let x = testTensor([2, 3, 4, 5], seed: 17)
        let w = testTensor([2, 3, 4, 5], seed: 18)
        expectPass(checkGradients([x]) { $0[0].converted(to: .channelsLast) * w })
        expectPass(checkGradients([cl(x)]) { $0[0].converted(to: .standard) * w })
        expectPass(checkGradients([x]) { cl($0[0]).converted(to: .standard).converted(to: .channelsLast) })
        // the gradient of a watched channels-last value comes back channels-last
        let tape = Tape()
        let xc = tape.watch(cl(x))
        let y = tape.record { sum(relu(xc) * w) }
        let g = tape.gradients(of: y, withRespectTo: [xc])[0]
        #expect(g.layout == .channelsLast)
        #expect(g.scalars == zip(x.scalars, w.scalars).map { $0 > 0 ? $1 : 0 })
    }

    @Test(arguments: [[2, 3, 4, 5], [1, 17, 3, 3], [2, 16, 2, 3]])
    func elementwiseGradients(_ shape: [Int]) {
        let x = testTensor(shape, seed: 19, awayFromZero: 0.3), b = testTensor(shape, seed: 20, awayFromZero: 0.3)
        let c = shape[1]
        let bias = testTensor([1, c, 1, 1], seed: 21), row = testTensor([shape[3]], seed: 22)
        expectPass(checkGradients([cl(x)]) { relu($0[0]) })
        expectPass(checkGradients([cl(x), cl(b)]) { $0[0] + $0[1] })
        expectPass(checkGradients([cl(x), b]) { $0[0] + $0[1] })          // mixed layouts
        expectPass(checkGradients([x, cl(b)]) { $0[0] * $0[1] })          // mixed layouts
        expectPass(checkGradients([cl(x), cl(b)]) { $0[0] / ($0[1] * $0[1] + 1) })
        expectPass(checkGradients([cl(x), bias]) { $0[0] * $0[1] + $0[1] }) // broadcasting
        expectPass(checkGradients([cl(x), row]) { $0[0] - $0[1] })          // broadcasting, last axis
        expectPass(checkGradients([cl(x)]) { tanh($0[0]) * exp($0[0] * 0.5) })
        // addReLU: kept away from the kink (|x + b| ≥ 0.1 is not guaranteed by the margins alone)
        let s = Tensor(shape: shape, scalars: x.scalars.map { $0 > 0 ? $0 + 0.5 : $0 - 0.5 })
        let t = Tensor(shape: shape, scalars: x.scalars.map { $0 * 0.25 })
        expectPass(checkGradients([cl(s), cl(t)]) { addReLU($0[0], $0[1]) })
        expectPass(checkGradients([cl(s), t]) { addReLU($0[0], $0[1]) })
        // a value used twice: by relu and by the addition
        expectPass(checkGradients([cl(s)]) { addReLU(relu($0[0]), $0[0]) + $0[0] * 2 })
        expectPass(checkGradients([cl(s)]) { x in
            let y = relu(x[0])
            return y * y + sum(y, axes: [1], keepingDimensions: true)
        })
    }

    /// Batch norm on channels-last data, training and inference, with and without the fused ReLU.
    /// Inputs are ±(1…2) per element and β is small, so no pre-ReLU value is within 0.2 of the kink
    /// and the finite differences never straddle it.
    @Test(arguments: [[4, 3, 3, 3], [2, 17, 2, 3], [1, 16, 3, 3], [3, 1, 2, 2]])
    func batchNormGradients(_ shape: [Int]) {
        let n = shape.reduce(1, *)
        let u = testTensor(shape, seed: 23, lower: 0, upper: 1).scalars
        let x = Tensor(shape: shape, scalars: (0..<n).map { i in (i % 2 == 0 ? 1 : -1) * (1 + u[i]) + 0.5 })
        let c = shape[1]
        let w = testTensor([c], seed: 24, lower: 0.5, upper: 1.5), b = testTensor([c], seed: 25, lower: -0.1, upper: 0.1)
        let m = testTensor([c], seed: 26, lower: 0.4, upper: 0.6), v = testTensor([c], seed: 27, lower: 1.5, upper: 2.5)
        for fused in [false, true] {
            expectPass(checkGradients([cl(x), w, b]) {
                batchNormTraining($0[0], weight: $0[1], bias: $0[2], epsilon: 1e-5, fusedReLU: fused).output
            })
            expectPass(checkGradients([cl(x)]) { batchNormTraining($0[0], weight: nil, bias: nil, epsilon: 1e-3, fusedReLU: fused).output })
            expectPass(checkGradients([cl(x), w, b]) {
                batchNormInference($0[0], weight: $0[1], bias: $0[2], mean: m, variance: v, epsilon: 1e-5, fusedReLU: fused)
            })
            // and on standard data, for the same fused op
            expectPass(checkGradients([x, w, b]) {
                batchNormTraining($0[0], weight: $0[1], bias: $0[2], epsilon: 1e-5, fusedReLU: fused).output
            })
        }
    }

    /// The fused op is exactly relu ∘ batch norm: same forward, same gradients (analytic vs analytic).
    @Test(arguments: [Tensor.Layout.standard, .channelsLast])
    func fusedReLUEqualsComposition(_ layout: Tensor.Layout) {
        let x = testTensor([4, 19, 3, 3], seed: 28, lower: -1, upper: 2).converted(to: layout)
        let w = testTensor([19], seed: 29, lower: 0.5, upper: 1.5), b = testTensor([19], seed: 30)
        let seed = testTensor([4, 19, 3, 3], seed: 31)
        func gradients(_ f: (Tensor, Tensor, Tensor) -> Tensor) -> [Tensor] {
            let tape = Tape()
            let (tx, tw, tb) = (tape.watch(x), tape.watch(w), tape.watch(b))
            let y = tape.record { f(tx, tw, tb) }
            return [y] + tape.gradients(of: y, withRespectTo: [tx, tw, tb], seed: seed)
        }
        let fused = gradients { batchNormTraining($0, weight: $1, bias: $2, epsilon: 1e-5, fusedReLU: true).output }
        let composed = gradients { relu(batchNormTraining($0, weight: $1, bias: $2, epsilon: 1e-5).output) }
        for (a, b) in zip(fused, composed) { #expect(relativeError(a, b) < 1e-6) }
        #expect(fused[1].layout == layout)
    }

    @Test(arguments: [(3, 2, 1), (2, 2, 0), (3, 1, 1)])
    func poolingGradients(_ c: (Int, Int, Int)) {
        let (k, s, p) = c
        // distinct values: no ties for max pooling
        let x = Tensor(shape: [2, 17, 5, 4], scalars: (0..<680).map { Float(($0 * 271) % 680) * 0.05 })
        expectPass(checkGradients([cl(x)]) { maxPool2d($0[0], kernelSize: k, stride: s, padding: p) })
        expectPass(checkGradients([cl(testTensor([2, 17, 5, 4], seed: 32))]) { avgPool2d($0[0], kernelSize: k, stride: s, padding: p) })
    }

    @Test func globalPoolAndShortcutGradients() {
        let x = testTensor([2, 17, 3, 5], seed: 33)
        expectPass(checkGradients([cl(x)]) { globalAvgPool($0[0]) })
        expectPass(checkGradients([cl(x)]) { globalAvgPool($0[0]).flattened() * 3 })
        expectPass(checkGradients([cl(x)]) { subsampleAndPadChannels($0[0], stride: 2, before: 3, after: 4) })
        expectPass(checkGradients([x]) { subsampleAndPadChannels($0[0], stride: 2, before: 3, after: 4) })
        expectPass(checkGradients([cl(x)]) { subsampleAndPadChannels($0[0], stride: 3, before: 0, after: 2) })
        // the shortcut's input also feeds the other branch (the block input is used twice)
        expectPass(checkGradients([cl(x)]) { t in
            let branch = avgPool2d(t[0], kernelSize: 2, stride: 2, padding: 1)
            return branch * subsampleAndPadChannels(t[0], stride: 2, before: 0, after: 0)
        })
    }

    @Test(arguments: [(1, 1), (2, 1), (1, 2)])
    func convolutionGradients(_ c: (Int, Int)) {
        let (stride, groups) = c
        let x = testTensor([2, 4, 5, 5], seed: 34), w = testTensor([6, 4 / groups, 3, 3], seed: 35)
        let b = testTensor([6], seed: 36)
        expectPass(checkGradients([cl(x), w, b]) { conv2d($0[0], $0[1], bias: $0[2], stride: stride, padding: 1, groups: groups) })
        expectPass(checkGradients([x, w]) { tanh(conv2d($0[0], $0[1], stride: stride, padding: 1, groups: groups)) })
    }

    /// Channels-last convolution at the zoo's other kernels (1x1 stride 1 and 2, the 7x7/2 stem) and
    /// channel counts off the SIMD width (1, 17), where vector tails and edge pixels differ.
    @Test(arguments: [
        // (N, C, H, W, O, k, stride, padding)
        (2, 17, 3, 4, 5, 1, 1, 0), (1, 5, 5, 4, 17, 1, 2, 0), (1, 1, 7, 6, 3, 7, 2, 3), (1, 17, 4, 3, 1, 3, 2, 1),
    ])
    func convolutionGradientsChannelsLastShapes(_ c: (Int, Int, Int, Int, Int, Int, Int, Int)) {
        let (n, ch, h, wd, o, k, stride, padding) = c
        let x = testTensor([n, ch, h, wd], seed: 40), w = testTensor([o, ch, k, k], seed: 41)
        let b = testTensor([o], seed: 42)
        expectPass(checkGradients([cl(x), w, b]) { conv2d($0[0], $0[1], bias: $0[2], stride: stride, padding: padding) })
    }

    /// Ops that are not layout-aware, fed channels-last inputs: they convert inside, and their
    /// gradients reach the channels-last input correctly.
    @Test func nonLayoutAwareOpsOnChannelsLastInputs() {
        let x = testTensor([2, 3, 4, 5], seed: 37)
        let positive = testTensor([2, 3, 4, 5], seed: 38, lower: 0.5, upper: 2)
        let distinct = Tensor(shape: [2, 3, 4, 5], scalars: (0..<120).map { Float(($0 * 37) % 120) * 0.05 })
        expectPass(checkGradients([cl(x)]) { sum($0[0], axes: [1, 2]) })
        expectPass(checkGradients([cl(x)]) { mean($0[0], axes: [0, 3], keepingDimensions: true) * $0[0] })
        expectPass(checkGradients([cl(distinct)]) { max($0[0], axes: [1]) })
        expectPass(checkGradients([cl(x)]) { $0[0].reshaped([6, 20]) * testTensor([6, 20], seed: 39) })
        expectPass(checkGradients([cl(x)]) { permute($0[0], [0, 2, 3, 1]) })
        expectPass(checkGradients([cl(x)]) { slice($0[0], lower: [0, 1, 1, 0], upper: [2, 3, 4, 5], stride: [1, 1, 2, 2]) })
        expectPass(checkGradients([cl(x), x]) { concatenate([$0[0], $0[1]], axis: 1) })
        expectPass(checkGradients([cl(x)]) { pad($0[0], [(0, 0), (1, 2), (1, 0), (0, 0)]) })
        expectPass(checkGradients([cl(x)]) { logSoftmax($0[0], axis: 1) })
        expectPass(checkGradients([cl(x)]) { -$0[0] * 2 })
        expectPass(checkGradients([cl(positive)]) { log($0[0]) + sqrt($0[0]) + pow($0[0], 3) })
        expectPass(checkGradients([cl(x)]) { sigmoid($0[0] * 3) })
        expectPass(checkGradients([cl(x), cl(positive)]) { pow($0[1], $0[0]) })
    }
}

