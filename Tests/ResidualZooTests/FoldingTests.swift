import Testing
import Foundation
import Residual
import ResidualTestSupport

/// Eval-mode batch norm folded into the convolutions (ResidualNN/Folding.swift): the folded
/// inference path (`withoutTape`) against the unfolded one (the same model on a recording tape,
/// which always runs conv, BN, add and ReLU as separate ops), on networks whose BN layers hold
/// random statistics, and the cache's invalidation when parameters or statistics change.
///
/// Tolerance: folding moves the rounding (`conv(x, W·s)` instead of `conv(x, W)·s`, one rounding of
/// each folded weight and of the bias), about 2⁻²⁴ relative to each layer's Σ|terms|; through 20-50
/// layers the logits then differ by ~1e-6 of their largest value (measured 3e-7 to 1.2e-6 on the
/// six networks below). 2e-5 leaves room for that and still catches folding mistakes: the
/// statistics are drawn with variances down to 1e-3, where dropping ε (1e-5) changes a layer by up
/// to 5e-3 relative (measured: folding without ε gives 6e-3 to 1.7e-2 here), and the scales
/// γ/√(var + ε) near 1 keep activations finite through ResNet-50.
@Suite struct FoldingTests {
    static let tolerance: Float = 2e-5

    /// Random BN state: γ = √var·u (so each scale is u ∈ [0.5, 1.5)), β and the mean in ±0.3.
    static func randomizeBatchNorms(_ model: any Layer, seed: UInt64) throws {
        var state: [String: Tensor] = [:]
        var g = SeededGenerator(seed: seed)
        for (name, t) in model.stateDict() where name.hasSuffix("running_var") {
            let prefix = String(name.dropLast("running_var".count))
            let c = t.count
            let variance = Tensor(randomUniform: [c], lower: -3, upper: 0.3, generator: &g).scalars.map { pow(10, $0) }
            let u = Tensor(randomUniform: [c], lower: 0.5, upper: 1.5, generator: &g).scalars
            state[name] = Tensor(shape: [c], scalars: variance)
            state[prefix + "weight"] = Tensor(shape: [c], scalars: zip(variance, u).map { $0.squareRoot() * $1 })
            state[prefix + "bias"] = Tensor(randomUniform: [c], lower: -0.3, upper: 0.3, generator: &g)
            state[prefix + "running_mean"] = Tensor(randomUniform: [c], lower: -0.3, upper: 0.3, generator: &g)
        }
        try model.loadStateDict(state, strict: false)
    }

    static func folded(_ model: any Layer, _ x: Tensor) -> Tensor { withoutTape { model(x) } }
    static func unfolded(_ model: any Layer, _ x: Tensor) -> Tensor { Tape().record { model(x) }.detached }

    @Test(arguments: [("resnet18", [2, 3, 33, 33]), ("resnet50", [1, 3, 35, 35]), ("resnet50v1.5", [1, 3, 32, 32]),
                      ("resnet20", [2, 3, 32, 32]), ("resnet20b", [3, 3, 17, 19]), ("plain20", [2, 3, 16, 16])])
    func foldedMatchesUnfolded(_ c: (String, [Int])) throws {
        let model: any Layer = switch c.0 {
        case "resnet18": ResNet(depth: .d18, shortcut: .b, classes: 10)
        case "resnet50": ResNet(depth: .d50, classes: 10)
        case "resnet50v1.5": ResNet(depth: .d50, classes: 10, stridePlacement: .middleConvolution)
        case "resnet20": CIFARResNet(n: 3)
        case "resnet20b": CIFARResNet(n: 3, shortcut: .b)
        default: CIFARResNet(n: 3, shortcut: .none)
        }
        try Self.randomizeBatchNorms(model, seed: 17)
        model.eval()
        let x = testTensor(c.1, seed: 3)
        let want = Self.unfolded(model, x), got = Self.folded(model, x)
        let worst = relativeError(got, want)
        #expect(worst < Self.tolerance, "\(c.0): folded vs unfolded \(worst)")
        // A second call uses the cached plan and gives the same bits.
        #expect(Self.folded(model, x).scalars == got.scalars, "\(c.0): cached plan")
        // A different batch size reuses the plan.
        let x1 = testTensor([1] + c.1.dropFirst(), seed: 4)
        #expect(relativeError(Self.folded(model, x1), Self.unfolded(model, x1)) < Self.tolerance, "\(c.0): batch 1")
    }

    /// A user-built `Sequential` (conv, BN, ReLU, pooling, conv with bias, BN, flatten, linear) folds
    /// its conv + BN (+ ReLU) runs in evaluation and matches the unfolded path.
    @Test func sequentialFolds() throws {
        let net = Sequential {
            Conv2d(inputChannels: 3, outputChannels: 20, kernelSize: 3, padding: 1, bias: false)
            BatchNorm2d(channels: 20)
            ReLU()
            MaxPool2d(kernelSize: 2)
            Conv2d(inputChannels: 20, outputChannels: 33, kernelSize: 3, stride: 2, padding: 1)
            BatchNorm2d(channels: 33)
            GlobalAvgPool()
            Flatten()
            Linear(inputFeatures: 33, outputFeatures: 10)
        }
        try Self.randomizeBatchNorms(net, seed: 12)
        net.eval()
        let x = testTensor([3, 3, 15, 13], seed: 8)
        let worst = relativeError(Self.folded(net, x), Self.unfolded(net, x))
        #expect(worst < Self.tolerance, "sequential: \(worst)")
    }

    /// A conv with its own bias, folded with a non-affine and an affine BN, with and without a
    /// residual and ReLU, at odd sizes and channel counts.
    @Test func convWithBiasAllEpilogues() throws {
        for affine in [false, true] {
            let conv = Conv2d(inputChannels: 5, outputChannels: 17, kernelSize: 3, stride: 2, padding: 1)
            let bn = BatchNorm2d(channels: 17, affine: affine)
            let holder = Sequential { conv; bn }
            try Self.randomizeBatchNorms(holder, seed: 5)
            bn.isTraining = false
            let x = testTensor([2, 5, 9, 7], seed: 1), r = testTensor([2, 17, 5, 4], seed: 2)
            for (residual, useReLU) in [(nil, false), (nil, true), (r, false), (r, true)] as [(Tensor?, Bool)] {
                let got = withoutTape { conv(x, batchNorm: bn, residual: residual, relu: useReLU) }
                var want = bn(conv(x))
                if let residual { want = want + residual }
                if useReLU { want = relu(want) }
                #expect(relativeError(got, want) < 1e-5, "affine \(affine) residual \(residual != nil) relu \(useReLU)")
            }
        }
    }

    /// Every way the folded values can go stale rebuilds them: a running statistic assigned, a
    /// weight updated in place by an optimizer, a state dict loaded, a training step (which moves
    /// the running statistics), and the input size changing.
    @Test func cacheFollowsEveryChange() throws {
        let model = CIFARResNet(n: 1, shortcut: .b)
        try Self.randomizeBatchNorms(model, seed: 8)
        model.eval()
        let x = testTensor([2, 3, 12, 12], seed: 5)
        var previous = Self.folded(model, x)
        func expectFresh(_ what: String) {
            let got = Self.folded(model, x)
            #expect(relativeError(got, Self.unfolded(model, x)) < Self.tolerance, "\(what): stale fold")
            #expect(relativeError(got, previous) > 1e-3, "\(what): output did not change")
            previous = got
        }
        let buffers = Dictionary(uniqueKeysWithValues: model.namedBuffers())
        let parameters = Dictionary(uniqueKeysWithValues: model.namedParameters())

        buffers["layer2.0.bn1.running_var"]!.value = buffers["layer2.0.bn1.running_var"]!.value * 0.25
        expectFresh("running_var assigned")
        buffers["bn1.running_mean"]!.value = buffers["bn1.running_mean"]!.value + 0.5
        expectFresh("running_mean assigned")
        parameters["layer1.0.conv2.weight"]!.update { $0 = $0 * 2 }
        expectFresh("conv weight updated in place")
        let sgd = SGD(model.parameters, learningRate: 0.05)
        for (i, p) in model.parameters.enumerated() { p.grad = testTensor(p.shape, seed: UInt64(100 + i)) }
        sgd.step()
        expectFresh("optimizer step")
        try model.loadStateDict(["layer2.0.downsample.1.bias": Tensor(ones: [32])], strict: false)
        expectFresh("state dict loaded")
        model.train()
        _ = Tape().record { model(x * 3) }
        model.eval()
        expectFresh("training forward moved the running statistics")

        let y = testTensor([1, 3, 9, 14], seed: 6)
        #expect(relativeError(Self.folded(model, y), Self.unfolded(model, y)) < Self.tolerance, "new input size")
    }

    /// Training mode never folds: its outputs are those of the separate ops, bit for bit, with or
    /// without a tape, and with the tape the gradients reach the BN parameters.
    @Test func trainingIsUnfolded() throws {
        let model = CIFARResNet(n: 1)
        try Self.randomizeBatchNorms(model, seed: 9)
        model.train()
        let x = testTensor([4, 3, 8, 8], seed: 7)
        let a = withoutTape { model(x) }, b = Tape().record { model(x) }.detached
        #expect(a.scalars == b.scalars)
        model.eval()
        let tape = Tape()
        let loss = tape.record { sum(model(x)) }
        tape.backward(loss)
        let bnGrad = Dictionary(uniqueKeysWithValues: model.namedParameters())["layer1.0.bn2.weight"]!.grad
        #expect(bnGrad != nil && bnGrad!.scalars.contains { $0 != 0 }, "eval mode on a tape differentiates BN")
    }
}
