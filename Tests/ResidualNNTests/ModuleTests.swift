import Testing
import Foundation
import Residual
import ResidualTestSupport

/// A user-defined module: layers as stored properties, names with no boilerplate.
final class TinyNet: Layer {
    let conv1 = Conv2d(inputChannels: 1, outputChannels: 4, kernelSize: 3, padding: 1, bias: false)
    let bn1 = BatchNorm2d(channels: 4)
    let blocks = [Residual { Conv2d(inputChannels: 4, outputChannels: 4, kernelSize: 3, padding: 1); BatchNorm2d(channels: 4) }]
    let head: Sequential
    let dropout = Dropout(probability: 0.25, seed: 1)
    init(classes: Int) {
        head = Sequential { GlobalAvgPool(); Flatten(); Linear(inputFeatures: 4, outputFeatures: classes) }
    }
    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = relu(bn1(conv1(x)))
        for b in blocks { h = b(h) }
        return head(dropout(h))
    }
}

/// The same kind of network as a struct: the layers are classes, so it works the same way.
struct TinyStruct: Layer {
    let conv = Conv2d(inputChannels: 1, outputChannels: 3, kernelSize: 3, padding: 1, bias: false)
    let bn = BatchNorm2d(channels: 3)
    var extra: Linear? = nil
    let fc = Linear(inputFeatures: 3, outputFeatures: 2)
    func callAsFunction(_ x: Tensor) -> Tensor { fc(globalAvgPool(relu(bn(conv(x)))).flattened()) }
}

/// A module whose input is not a tensor: generic over input and output.
final class PairSum: Module {
    let left = Linear(inputFeatures: 3, outputFeatures: 2)
    let right = Linear(inputFeatures: 4, outputFeatures: 2)
    func callAsFunction(_ input: (Tensor, Tensor)) -> Tensor { left(input.0) + right(input.1) }
}

@Suite struct ModuleTests {
    @Test func namesFollowTorchvisionScheme() {
        let net = TinyNet(classes: 3)
        let names = net.namedParameters().map(\.0)
        #expect(names == ["conv1.weight", "bn1.weight", "bn1.bias", "blocks.0.body.0.weight", "blocks.0.body.0.bias",
                          "blocks.0.body.1.weight", "blocks.0.body.1.bias", "head.2.weight", "head.2.bias"])
        #expect(net.namedBuffers().map(\.0) == [
            "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked",
            "blocks.0.body.1.running_mean", "blocks.0.body.1.running_var", "blocks.0.body.1.num_batches_tracked"])
        #expect(net.parameterCount == 36 + 8 + 144 + 4 + 8 + 12 + 3)
        // A state dict lists each module's parameters, then its buffers (PyTorch's order).
        #expect(net.stateDict().map(\.0).prefix(7) == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                      "bn1.running_var", "bn1.num_batches_tracked", "blocks.0.body.0.weight"])
        #expect(net.namedModules().map(\.0) == ["", "conv1", "bn1", "blocks.0", "blocks.0.body", "blocks.0.body.0",
                                                "blocks.0.body.1", "head", "head.0", "head.1", "head.2", "dropout"])
    }

    @Test func structModulesWork() {
        var net = withSeed(3) { TinyStruct() }
        #expect(net.namedParameters().map(\.0) == ["conv.weight", "bn.weight", "bn.bias", "fc.weight", "fc.bias"])
        net.extra = Linear(inputFeatures: 1, outputFeatures: 1)          // optionals are followed when set
        #expect(net.namedParameters().map(\.0).contains("extra.weight"))
        net.extra = nil
        net.eval()
        #expect(!net.bn.isTraining)
        net.train()
        #expect(net.bn.isTraining)
        // Training through a struct updates the shared parameters.
        let optimizer = SGD(net.parameters, learningRate: 0.1)
        let before = net.fc.weight.data.scalars
        let tape = Tape()
        let loss = tape.record { softmaxCrossEntropy(logits: net(testTensor([2, 1, 5, 5], seed: 1)), labels: [0, 1]) }
        tape.backward(loss)
        optimizer.step()
        #expect(net.fc.weight.data.scalars != before)
    }

    @Test func genericInputAndOutput() {
        let m = withSeed(1) { PairSum() }
        #expect(m.namedParameters().map(\.0) == ["left.weight", "left.bias", "right.weight", "right.bias"])
        let y = m((testTensor([5, 3], seed: 1), testTensor([5, 4], seed: 2)))
        #expect(y.shape == [5, 2])
        #expect(m.parameterCount == 8 + 10)
    }

    /// Parameters are found by reflection only when the tree is enumerated: a whole training step
    /// (forward, backward, optimizer step) walks no mirror.
    @Test func noReflectionPerStep() {
        let net = withSeed(2) { TinyNet(classes: 3) }
        let (optimizer, setup) = ModuleReflection.count { SGD(net.parameters, learningRate: 0.1, momentum: 0.9) }
        #expect(setup > 0, "the counter sees the walks made when the optimizer is built")
        let x = testTensor([2, 1, 6, 6], seed: 1)
        let (_, perStep) = ModuleReflection.count {
            for _ in 0..<3 {
                let tape = Tape()
                let loss = tape.record { softmaxCrossEntropy(logits: net(x), labels: [0, 2]) }
                tape.backward(loss)
                optimizer.step()
                optimizer.zeroGrad()
            }
        }
        #expect(perStep == 0)
    }

    @Test func trainEvalPropagates() {
        let net = TinyNet(classes: 3)
        #expect(net.isTrainingMode)
        net.eval()
        #expect(!net.bn1.isTraining && !net.dropout.isTraining && !net.isTrainingMode)
        let nestedBN = net.blocks[0].namedModules().compactMap { $0.1 as? BatchNorm2d }
        #expect(nestedBN.count == 1 && !nestedBN[0].isTraining)
        net.train()
        #expect(net.bn1.isTraining && net.dropout.isTraining && nestedBN[0].isTraining)
    }

    @Test func freezingStopsGradients() {
        let net = TinyNet(classes: 3)
        net.freeze("conv1")
        #expect(net.trainableParameterCount == net.parameterCount - 36)
        let optimizer = SGD(net.parameters, learningRate: 1)
        let frozen = net.conv1.weight.data.scalars
        let tape = Tape()
        let loss = tape.record { softmaxCrossEntropy(logits: net(testTensor([2, 1, 6, 6], seed: 1)), labels: [0, 2]) }
        tape.backward(loss)
        #expect(net.conv1.weight.grad == nil)
        #expect(net.bn1.weight?.grad != nil)
        optimizer.step()
        #expect(net.conv1.weight.data.scalars == frozen)
        net.unfreeze()
        #expect(net.trainableParameterCount == net.parameterCount)
        // A path selects whole segments: "blocks.0.body.1" is not a prefix match for "blocks.0.body.10".
        let wide = Sequential((0..<12).map { _ in Linear(inputFeatures: 1, outputFeatures: 1) })
        wide.freeze("1")
        #expect(wide.namedParameters().filter { !$0.1.requiresGrad }.map(\.0) == ["1.weight", "1.bias"])
    }

    @Test func seededConstructionReproduces() async {
        let a = withSeed(5) { TinyNet(classes: 3) }, b = withSeed(5) { TinyNet(classes: 3) }, c = withSeed(6) { TinyNet(classes: 3) }
        #expect(a.stateDict().map { $0.1.scalars } == b.stateDict().map { $0.1.scalars })
        #expect(a.conv1.weight.data.scalars != c.conv1.weight.data.scalars)
        // The seed is task-local and initialisers draw sequentially: concurrent builds agree.
        let reference = a.stateDict().map { $0.1.scalars }
        let builds = await withTaskGroup(of: [[Float]].self) { group in
            for _ in 0..<4 { group.addTask { withSeed(5) { TinyNet(classes: 3) }.stateDict().map { $0.1.scalars } } }
            var out: [[[Float]]] = []
            for await r in group { out.append(r) }
            return out
        }
        #expect(builds.count == 4 && builds.allSatisfy { $0 == reference })
    }

    /// He normal: variance 2/fan_in (or 2/fan_out); PyTorch's default: U(±1/√fan_in) for weights
    /// and biases, whose variance is bound²/3.
    @Test func initialisers() {
        func moments(_ t: Tensor) -> (mean: Float, variance: Float, maxAbs: Float) {
            let s = t.scalars, n = Float(s.count)
            let mean = s.reduce(0, +) / n
            return (mean, s.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / n, s.map(abs).max()!)
        }
        let fanIn = withSeed(1) { Conv2d(inputChannels: 64, outputChannels: 32, kernelSize: 3, bias: false,
                                         initializer: .heNormal(mode: .fanIn)) }
        var m = moments(fanIn.weight.data)
        #expect(abs(m.variance - 2 / 576) / (2 / 576) < 0.05 && abs(m.mean) < 0.003, "He fan-in: \(m)")
        let fanOut = withSeed(1) { Conv2d(inputChannels: 64, outputChannels: 32, kernelSize: 3, bias: false,
                                          initializer: .heNormal(mode: .fanOut)) }
        m = moments(fanOut.weight.data)
        #expect(abs(m.variance - 2 / 288) / (2 / 288) < 0.05, "He fan-out: \(m)")
        #expect(Initializer.heNormal() == .heNormal(mode: .fanIn), "PyTorch's kaiming_normal_ default mode")

        let conv = withSeed(2) { Conv2d(inputChannels: 16, outputChannels: 64, kernelSize: 5) }   // fan_in 400
        let bound: Float = 1 / 20
        m = moments(conv.weight.data)
        #expect(m.maxAbs <= bound && m.maxAbs > 0.95 * bound && abs(m.variance - bound * bound / 3) / (bound * bound / 3) < 0.05)
        #expect(conv.bias!.data.scalars.allSatisfy { abs($0) <= bound })
        let lin = withSeed(1) { Linear(inputFeatures: 100, outputFeatures: 50) }
        #expect(moments(lin.weight.data).maxAbs <= 0.1 && lin.bias!.data.scalars.allSatisfy { abs($0) <= 0.1 })
        let grouped = withSeed(1) { Conv2d(inputChannels: 8, outputChannels: 8, kernelSize: 3, groups: 4) }
        #expect(grouped.weight.shape == [8, 2, 3, 3] && moments(grouped.weight.data).maxAbs <= 1 / Float(18).squareRoot())
        let bn = BatchNorm2d(channels: 3)
        #expect(bn.weight!.data.scalars == [1, 1, 1] && bn.bias!.data.scalars == [0, 0, 0])
        #expect(bn.runningMean.value.scalars == [0, 0, 0] && bn.runningVar.value.scalars == [1, 1, 1])
    }

    @Test func randomStatesRoundTrip() {
        let net = TinyNet(classes: 3)
        let states = net.randomStates()
        #expect(Array(states.keys) == ["dropout"])
        let first = net.dropout(Tensor(ones: [64])).scalars
        net.setRandomStates(states)
        #expect(net.dropout(Tensor(ones: [64])).scalars == first)
    }
}
