// A network of your own: a small residual CNN written as a Module, trained on the bundled
// Fashion-MNIST with SGD and the paper's learning-rate schedule, evaluated, and saved as safetensors.
//
//   swift run -c release CustomNetwork [steps]
import Foundation
import Residual

/// Two 3x3 convolutions with batch norm and an identity shortcut: relu(bn2(conv2(relu(bn1(conv1 x)))) + x).
final class Block: Layer {
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d

    init(channels c: Int) {
        conv1 = Conv2d(inputChannels: c, outputChannels: c, kernelSize: 3, padding: 1, bias: false, initializer: .heNormal())
        bn1 = BatchNorm2d(channels: c)
        conv2 = Conv2d(inputChannels: c, outputChannels: c, kernelSize: 3, padding: 1, bias: false, initializer: .heNormal())
        bn2 = BatchNorm2d(channels: c)
    }

    func callAsFunction(_ x: Tensor) -> Tensor {
        relu(bn2(conv2(relu(bn1(conv1(x))))) + x)
    }
}

/// Stem, two stages of residual blocks with a strided convolution between them, global pooling, classifier.
final class SmallResNet: Layer {
    let stem = Sequential {
        Conv2d(inputChannels: 1, outputChannels: 16, kernelSize: 3, padding: 1, bias: false, initializer: .heNormal())
        BatchNorm2d(channels: 16)
        ReLU()
    }
    let stage1 = [Block(channels: 16), Block(channels: 16)]
    let down = Sequential {
        Conv2d(inputChannels: 16, outputChannels: 32, kernelSize: 3, stride: 2, padding: 1, bias: false, initializer: .heNormal())
        BatchNorm2d(channels: 32)
        ReLU()
    }
    let stage2 = [Block(channels: 32), Block(channels: 32)]
    let fc = Linear(inputFeatures: 32, outputFeatures: 10)

    func callAsFunction(_ x: Tensor) -> Tensor {
        var h = stem(x)
        for b in stage1 { h = b(h) }
        h = down(h)
        for b in stage2 { h = b(h) }
        return fc(globalAvgPool(h).flattened())
    }
}

let steps = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 400 : 400
let train = try Dataset.fashionMNIST(train: true)
let test = try Dataset.fashionMNIST(train: false).prefix(2000)
let prep = Preprocessing(fitting: train)
let loader = BatchLoader(train, batchSize: 128, shuffle: true, augment: true, preprocessing: prep, seed: 42)

let model = withSeed(42) { SmallResNet() }
print("SmallResNet: \(model.parameterCount) parameters")
print(ModelSummary(model, inputShape: [1, 32, 32]))

let optimizer = SGD(model.parameters, learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
let schedule = MultiStepSchedule.paper(base: 0.1, totalSteps: steps)
var step = 0
training: for epoch in 0... {
    for batch in loader.batches(epoch: epoch) {
        optimizer.learningRate = schedule.learningRate(step: step)
        let tape = Tape()
        let loss = tape.record { softmaxCrossEntropy(logits: model(batch.images), labels: batch.labels) }
        tape.backward(loss)
        optimizer.step()
        optimizer.zeroGrad()
        step += 1
        if step % 50 == 0 { print("step \(step)  loss \(String(format: "%.4f", loss.scalar))") }
        if step == steps { break training }
    }
}

model.eval()
var correct = 0
for batch in BatchLoader(test, batchSize: 500, shuffle: false, augment: false, preprocessing: prep).batches(epoch: 0) {
    let logits = withoutTape { model(batch.images) }
    for (i, label) in batch.labels.enumerated() {
        let row = (0..<10).map { logits[i, $0] }
        if row.firstIndex(of: row.max()!) == label { correct += 1 }
    }
}
print("test accuracy on \(test.count) images: \(String(format: "%.2f", 100 * Double(correct) / Double(test.count)))%")

let url = URL(fileURLWithPath: "small-resnet.safetensors")
try model.save(to: url)
print("saved \(url.path)")
