import Testing
import Foundation
import Residual

/// The code of docs/Modules.md, compiled and run. `docsCodeIsMirrored` fails if a line of one of the
/// page's Swift blocks is not in this file, so the page cannot drift from code that compiles.
enum Docs {
    final class Block: Layer {                  // Layer = Module<Tensor, Tensor>
        let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d

        init(channels c: Int) {
            conv1 = Conv2d(inputChannels: c, outputChannels: c, kernelSize: 3, padding: 1, bias: false,
                           initializer: .heNormal())
            bn1 = BatchNorm2d(channels: c)
            conv2 = Conv2d(inputChannels: c, outputChannels: c, kernelSize: 3, padding: 1, bias: false,
                           initializer: .heNormal())
            bn2 = BatchNorm2d(channels: c)
        }

        func callAsFunction(_ x: Tensor) -> Tensor {
            relu(bn2(conv2(relu(bn1(conv1(x))))) + x)
        }
    }

    final class PairSum: Module {
        let left = Linear(inputFeatures: 3, outputFeatures: 2)
        let right = Linear(inputFeatures: 4, outputFeatures: 2)
        func callAsFunction(_ input: (Tensor, Tensor)) -> Tensor { left(input.0) + right(input.1) }
    }

    /// The network of Examples/CustomNetwork.
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

    struct Progress: Codable {
        var step = 0
        var schedule = ConstantThenJumpWarmup(MultiStepSchedule(base: 0.1, milestones: [32_000, 48_000]))
        var data = SeededGenerator(seed: 1)
    }
}

@Suite struct DocsTests {
    @Test func moduleSection() {
        typealias Block = Docs.Block
        let block = Block(channels: 16)
        #expect(block.namedParameters().map(\.0).prefix(4) == ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight"])
        #expect(block.namedBuffers().map(\.0).prefix(3) == ["bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"])
        #expect(block.parameterCount == 4_672)
        #expect(Docs.PairSum()((Tensor(zeros: [1, 3]), Tensor(zeros: [1, 4]))).shape == [1, 2])
    }

    @Test func layersSection() {
        let unit = Residual {
            Conv2d(inputChannels: 16, outputChannels: 16, kernelSize: 3, padding: 1, bias: false)
            BatchNorm2d(channels: 16)
            ReLU()
            Conv2d(inputChannels: 16, outputChannels: 16, kernelSize: 3, padding: 1, bias: false)
            BatchNorm2d(channels: 16)
        }
        let down = Residual(shortcut: Conv2d(inputChannels: 16, outputChannels: 32, kernelSize: 1, stride: 2, bias: false)) {
            Conv2d(inputChannels: 16, outputChannels: 32, kernelSize: 3, stride: 2, padding: 1, bias: false)
            BatchNorm2d(channels: 32)
        }
        #expect(down(unit(Tensor(ones: [2, 16, 8, 8]))).shape == [2, 32, 4, 4])
    }

    @Test func trainingCheckpointAndSummarySections() throws {
        typealias SmallResNet = Docs.SmallResNet
        typealias Progress = Docs.Progress
        let steps = 3
        let testSet = try Dataset.fashionMNIST(train: false).prefix(100)

        let train = try Dataset.fashionMNIST(train: true)           // bundled, no download
        let prep = Preprocessing(fitting: train)                     // per-pixel mean, 28x28 centred on 32x32
        let loader = BatchLoader(train, batchSize: 128, shuffle: true, augment: true, preprocessing: prep, seed: 42)

        let model = withSeed(42) { SmallResNet() }
        let optimizer = SGD(model.parameters, learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4)
        let schedule = MultiStepSchedule.paper(base: 0.1, totalSteps: 400)

        var step = 0
        for batch in loader.batches(epoch: 0).prefix(steps) {
            optimizer.learningRate = schedule.learningRate(step: step)
            let tape = Tape()
            let loss = tape.record { softmaxCrossEntropy(logits: model(batch.images), labels: batch.labels) }
            tape.backward(loss)          // fills every parameter's .grad
            optimizer.step()
            optimizer.zeroGrad()
            step += 1
        }
        #expect(step == steps)

        let testBatch = BatchLoader(testSet, batchSize: 100, shuffle: false, augment: false, preprocessing: prep)
            .batches(epoch: 0).first { _ in true }!
        let (testImages, testLabels) = (testBatch.images, testBatch.labels)
        model.eval()
        let logits = withoutTape { model(testImages) }              // inference: nothing recorded
        let error = topKError(logits: logits, labels: testLabels)   // top-1; k: 5 for top-5
        #expect(error >= 0 && error <= 1 && logits.shape == [100, 10])

        let url = FileManager.default.temporaryDirectory.appendingPathComponent("docs-\(getpid()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try model.save(to: url)                                      // safetensors, written atomically
        try model.load(from: url)                                    // strict: every name must match
        let tensors = Dictionary(uniqueKeysWithValues: model.stateDict().filter { $0.0 != "fc.bias" })
        let report = try model.loadStateDict(tensors, strict: false) // report.missing, report.unexpected
        #expect(report.missing == ["fc.bias"] && report.unexpected.isEmpty)

        var progress = Progress()
        progress.step = step
        try TrainingCheckpoint.save(to: url, model: model, optimizerState: optimizer.stateDict(), progress: progress)

        let checkpoint = try TrainingCheckpoint<Progress>.load(from: url, into: model)
        try optimizer.loadStateDict(checkpoint.optimizerState)
        progress = checkpoint.progress
        #expect(progress.step == steps)

        print(ModelSummary(model, inputShape: [1, 32, 32]))
    }

    /// Every line of every ```swift block of docs/Modules.md (comments after `//` dropped, trimmed)
    /// occurs in this file.
    @Test func docsCodeIsMirrored() throws {
        let here = URL(fileURLWithPath: #filePath)
        let source = try String(contentsOf: here, encoding: .utf8)
        let page = try String(contentsOf: here.deletingLastPathComponent().appendingPathComponent("../../docs/Modules.md"),
                              encoding: .utf8)
        func code(_ line: Substring) -> String {
            let text = line.range(of: " //").map { line[..<$0.lowerBound] } ?? line
            return text.trimmingCharacters(in: .whitespaces)
        }
        let mirrored = Set(source.split(separator: "\n").map(code))
        var inBlock = false, checked = 0
        for line in page.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("```") { inBlock = line == "```swift"; continue }
            let c = code(line)
            guard inBlock, !c.isEmpty else { continue }
            checked += 1
            #expect(mirrored.contains(c) || source.contains(c), "docs/Modules.md line not in DocsTests.swift: \(c)")
        }
        #expect(checked > 40)
    }
}
