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

@Suite struct ModuleTests {
    @Test func namesFollowTorchvisionScheme() {
        let net = TinyNet(classes: 3)
        let names = net.namedParameters().map(\.0)
        #expect(names == ["conv1.weight", "bn1.weight", "bn1.bias", "blocks.0.body.0.weight", "blocks.0.body.0.bias",
                          "blocks.0.body.1.weight", "blocks.0.body.1.bias", "head.2.weight", "head.2.bias"])
        let buffers = net.namedBuffers().map(\.0)
        #expect(buffers.contains("bn1.running_mean") && buffers.contains("blocks.0.body.1.num_batches_tracked"))
        #expect(net.parameterCount == 36 + 8 + 144 + 4 + 8 + 12 + 3)
    }

    @Test func trainEvalPropagates() {
        let net = TinyNet(classes: 3)
        #expect(net.isTrainingMode)
        net.eval()
        #expect(!net.bn1.isTraining && !net.dropout.isTraining && !net.isTrainingMode)
        net.train()
        #expect(net.bn1.isTraining && net.dropout.isTraining)
    }

    @Test func freezingStopsGradients() {
        let net = TinyNet(classes: 3)
        net.freeze("conv1")
        #expect(net.trainableParameterCount == net.parameterCount - 36)
        let tape = Tape()
        let loss = tape.record { softmaxCrossEntropy(logits: net(testTensor([2, 1, 6, 6], seed: 1)), labels: [0, 2]) }
        tape.backward(loss)
        #expect(net.conv1.weight.grad == nil)
        #expect(net.bn1.weight?.grad != nil)
    }

    @Test func seededConstructionReproduces() {
        let a = withSeed(5) { TinyNet(classes: 3) }, b = withSeed(5) { TinyNet(classes: 3) }, c = withSeed(6) { TinyNet(classes: 3) }
        #expect(a.conv1.weight.data.scalars == b.conv1.weight.data.scalars)
        #expect(a.conv1.weight.data.scalars != c.conv1.weight.data.scalars)
    }

    @Test func heInitialisationScale() {
        let conv = withSeed(1) { Conv2d(inputChannels: 64, outputChannels: 64, kernelSize: 3, bias: false, initializer: .heNormal(mode: .fanIn)) }
        let w = conv.weight.data.scalars
        let variance = w.reduce(0) { $0 + $1 * $1 } / Float(w.count)
        #expect(abs(variance - 2 / 576) / (2 / 576) < 0.05, "He: variance 2/fan_in, got \(variance)")
        let lin = withSeed(1) { Linear(inputFeatures: 100, outputFeatures: 50) }
        #expect(lin.weight.data.scalars.allSatisfy { abs($0) <= 0.1 }, "PyTorch default: U(±1/sqrt(fan_in))")
    }
}

@Suite struct LayerTests {
    @Test func layerGradients() {
        let conv = withSeed(2) { Conv2d(inputChannels: 3, outputChannels: 4, kernelSize: 3, stride: 2, padding: 1) }
        let x = testTensor([2, 3, 7, 7], seed: 3)
        var check = checkGradients([x], parameters: conv.parameters) { conv($0[0]) }
        #expect(check.passed, "\(check)")
        let bn = BatchNorm2d(channels: 3)
        bn.weight!.data = testTensor([3], seed: 4, lower: 0.5, upper: 1.5)
        check = checkGradients([x], parameters: bn.parameters) { bn($0[0]) }
        #expect(check.passed, "\(check)")
        let lin = withSeed(5) { Linear(inputFeatures: 7, outputFeatures: 3) }
        check = checkGradients([testTensor([4, 7], seed: 6)], parameters: lin.parameters) { lin($0[0]) }
        #expect(check.passed, "\(check)")
        let block = withSeed(7) { BasicBlock(3, 6, stride: 2, BlockConfig(shortcut: .a)) }
        block.eval()   // running statistics: the block is a fixed function of x and its weights
        check = checkGradients([testTensor([2, 3, 6, 6], seed: 8)], parameters: block.parameters) { block($0[0]) }
        #expect(check.passed, "\(check)")
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
        let trainAlone = bn(a).scalars, trainInBatch = slice(bn(concatenate([others, a], axis: 0)), lower: [5, 0, 0, 0], upper: [6, 3, 4, 4]).scalars
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
        bn.eval()
        bn.runningMean.value = c["bn_eval.running_mean"].reshaped([5]).detached
        let bn5 = BatchNorm2d(channels: 5)
        bn5.weight!.data = c["bn_eval.weight"]; bn5.bias!.data = c["bn_eval.bias"]
        bn5.runningMean.value = c["bn_eval.running_mean"]; bn5.runningVar.value = c["bn_eval.running_var"]
        bn5.eval()
        #expect(relativeError(bn5(c["bn_eval.input"]), c["bn_eval.output"]) < 1e-4)
    }

    @Test func dropoutScalesAndIsIdentityInEval() {
        let d = Dropout(probability: 0.5, seed: 3)
        let y = d(Tensor(ones: [10_000])).scalars
        #expect(y.allSatisfy { $0 == 0 || $0 == 2 })
        let kept = y.filter { $0 == 2 }.count
        #expect(abs(kept - 5000) < 300)
        d.eval()
        #expect(d(Tensor(ones: [10])).scalars == [Float](repeating: 1, count: 10))
    }

    @Test func summaryCountsMultiplyAdds() {
        let net = Sequential {
            Conv2d(inputChannels: 3, outputChannels: 8, kernelSize: 3, padding: 1, bias: false)
            ReLU()
            MaxPool2d(kernelSize: 2)
            Flatten()
            Linear(inputFeatures: 8 * 4 * 4, outputFeatures: 10)
        }
        let s = ModelSummary(net, inputShape: [3, 8, 8])
        #expect(s.rows.map(\.name) == ["0", "4"])
        #expect(s.rows[0].outputShape == [1, 8, 8, 8] && s.rows[0].macs == 8 * 8 * 8 * 27)
        #expect(s.rows[1].macs == 128 * 10 && s.totalMACs == 8 * 8 * 8 * 27 + 1280)
        #expect(s.totalParameters == 216 + 1290)
        #expect(s.description.contains("Total parameters: 1,506"))
    }
}

let parityCases: ReferenceCases = {
    try! ReferenceCases(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures/layers.safetensors"))
}()
