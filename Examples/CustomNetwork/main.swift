// A network of your own: a small residual CNN written as a Module, trained on the bundled
// Fashion-MNIST with SGD and the paper's learning-rate schedule, evaluated, saved as safetensors,
// and loaded back.
//
//   swift run -c release CustomNetwork [--steps 400] [--test 2000] [--out out/CustomNetwork]
//
// This is the code to copy when you want a model the zoo does not have: layers are stored
// properties (their names become the parameter names in the checkpoint: `stage1.0.conv1.weight`),
// `callAsFunction` is the forward pass, and the tape records it for the backward pass.
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

// MARK: - Options (kept minimal: see Examples/resnet for a full command-line interface)

var steps = 400, testCount = 2000, outDirectory = "out/CustomNetwork"
var args = CommandLine.arguments.dropFirst()
while let a = args.popFirst() {
    switch (a, args.first) {
    case ("--steps", let v?) where Int(v).map({ $0 > 0 }) == true: steps = Int(v)!; args.removeFirst()
    case ("--test", let v?) where Int(v).map({ $0 > 0 }) == true: testCount = Int(v)!; args.removeFirst()
    case ("--out", let v?): outDirectory = v; args.removeFirst()
    default:
        FileHandle.standardError.write(Data("usage: CustomNetwork [--steps N] [--test N] [--out DIR]\n".utf8))
        exit(2)
    }
}

// MARK: - Data: the bundled Fashion-MNIST, normalised and augmented as in the paper

let train = try Dataset.fashionMNIST(train: true)
let test = try Dataset.fashionMNIST(train: false).prefix(testCount)
let prep = Preprocessing(fitting: train)          // per-pixel mean, 28x28 centred on 32x32
let loader = BatchLoader(train, batchSize: 128, shuffle: true, augment: true, preprocessing: prep, seed: 42)

let model = withSeed(42) { SmallResNet() }
print("SmallResNet: \(model.parameterCount) parameters")
print(ModelSummary(model, inputShape: [1, 32, 32]))

// MARK: - Training: SGD with momentum, weight decay, the paper's schedule scaled to `steps`

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
        if step % 50 == 0 || step == steps { print("step \(step)/\(steps)  loss \(String(format: "%.4f", loss.scalar))") }
        if step == steps { break training }
    }
}

// MARK: - Evaluation (eval mode: batch norm uses its running statistics)

func predict(_ model: SmallResNet, _ images: Tensor) -> [Int] {
    let logits = withoutTape { model(images) }
    return (0..<logits.shape[0]).map { i in
        let row = (0..<logits.shape[1]).map { logits[i, $0] }
        return row.firstIndex(of: row.max()!)!
    }
}

model.eval()
var predictions: [Int] = [], correct = 0
let testLoader = BatchLoader(test, batchSize: 500, shuffle: false, augment: false, preprocessing: prep)
for batch in testLoader.batches(epoch: 0) {
    let p = predict(model, batch.images)
    predictions += p
    correct += zip(p, batch.labels).filter { $0 == $1 }.count
}
print("test accuracy on \(test.count) images: \(String(format: "%.2f", 100 * Double(correct) / Double(test.count)))%")

// MARK: - Save, and load into a fresh model (parameters and batch-norm statistics by name)

let url = URL(fileURLWithPath: outDirectory).appendingPathComponent("small-resnet.safetensors")
try model.save(to: url)
let restored = SmallResNet()
try restored.load(from: url)
restored.eval()
var restoredPredictions: [Int] = []
for batch in testLoader.batches(epoch: 0) { restoredPredictions += predict(restored, batch.images) }
guard restoredPredictions == predictions else {
    FileHandle.standardError.write(Data("the reloaded model predicts differently\n".utf8))
    exit(1)
}
print("saved \(url.path); reloaded, same predictions on all \(test.count) test images")
