import Testing
import Foundation
import Residual
import ResidualTestSupport

/// Training stopped, saved, and resumed in a fresh model and optimizer ends bit-identical to an
/// uninterrupted run: model, running statistics, optimizer state, dropout masks, the schedule's
/// state (a ConstantThenJumpWarmup that switched before the save) and the data stream.
@Suite struct TrainingCheckpointTests {
    final class Net: Layer {
        let conv = Conv2d(inputChannels: 2, outputChannels: 4, kernelSize: 3, padding: 1, bias: false,
                          initializer: .heNormal())
        let bn = BatchNorm2d(channels: 4)
        let dropout = Dropout(probability: 0.3)
        let fc = Linear(inputFeatures: 4, outputFeatures: 3)
        func callAsFunction(_ x: Tensor) -> Tensor {
            fc(dropout(globalAvgPool(relu(bn(conv(x)))).flattened()))
        }
    }

    struct Progress: Codable, Equatable {
        var step = 0
        var schedule = ConstantThenJumpWarmup(MultiStepSchedule(base: 0.1, milestones: [6]), warmupRate: 0.01,
                                              threshold: 0.8)
        var data = SeededGenerator(seed: 77)
    }

    /// `steps` training steps on batches drawn from `progress.data`; the "training error" fed to the
    /// warm-up falls below 80 % at step 1 only, so a run that forgot the switch would stay at 0.01.
    func train(_ model: Net, _ optimizer: any Optimizer, _ progress: inout Progress, steps: Int) {
        for _ in 0..<steps {
            let x = Tensor(randomNormal: [4, 2, 5, 5], generator: &progress.data)
            let labels = (0..<4).map { _ in Int(progress.data.next() % 3) }
            optimizer.learningRate = progress.schedule.learningRate(step: progress.step)
            let tape = Tape()
            let loss = tape.record { softmaxCrossEntropy(logits: model(x), labels: labels) }
            tape.backward(loss)
            optimizer.step()
            optimizer.zeroGrad()
            progress.schedule.observe(trainingError: progress.step == 1 ? 0.5 : 0.9, step: progress.step)
            progress.step += 1
        }
    }

    func bits(_ model: Net) -> [[UInt32]] { model.stateDict().map { $0.1.scalars.map(\.bitPattern) } }

    @Test(arguments: ["sgd", "adam"])
    func resumesExactly(_ kind: String) throws {
        func optimizer(_ m: Net) -> any Optimizer {
            kind == "sgd" ? SGD(m.parameters, learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov: true)
                          : AdamW(m.parameters, learningRate: 0.01)
        }
        let straight = withSeed(1) { Net() }
        var p1 = Progress()
        train(straight, optimizer(straight), &p1, steps: 8)

        let first = withSeed(1) { Net() }
        let o2 = optimizer(first)
        var p2 = Progress()
        train(first, o2, &p2, steps: 4)
        #expect(p2.schedule.switchedAt == 1)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("resume-\(kind)-\(getpid()).safetensors")
        try TrainingCheckpoint.save(to: url, model: first, optimizerState: o2.stateDict(), progress: p2,
                                    metadata: ["run": "test"])

        let resumed = withSeed(99) { Net() }                 // other weights, other dropout stream
        let o3 = optimizer(resumed)
        let checkpoint = try TrainingCheckpoint<Progress>.load(from: url, into: resumed)
        try o3.loadStateDict(checkpoint.optimizerState)
        var p3 = checkpoint.progress
        #expect(p3 == p2 && checkpoint.metadata == ["run": "test"] && o3.stepCount == 4)
        train(resumed, o3, &p3, steps: 4)

        let identical = bits(resumed) == bits(straight)
        #expect(identical, "resumed run differs from the uninterrupted one")
        #expect(p3 == p1)
        // The saved model part is an ordinary state dict.
        let names = try SafeTensors.read(url).names
        #expect(names.contains("conv.weight") && names.contains("bn.running_var") && names.contains("optimizer.step_count"))
        try? FileManager.default.removeItem(at: url)
    }

    @Test func rejectsFilesThatAreNotTrainingCheckpoints() throws {
        let model = withSeed(1) { Net() }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("plain-\(getpid()).safetensors")
        try model.save(to: url)
        #expect(throws: CheckpointError.self) { _ = try TrainingCheckpoint<Progress>.load(from: url, into: model) }
        // A corrupt generator state in the progress record is an error, not a crash later.
        try SafeTensors.write(model.stateDict(), metadata: ["residual.progress": #"{"step":1,"schedule":{"schedule":{"base":0.1,"milestones":[6],"factor":0.1},"warmupRate":0.01,"threshold":0.8},"data":{"state":[1,2]}}"#,
                                                            "residual.random": "{}"], to: url)
        do { _ = try TrainingCheckpoint<Progress>.load(from: url, into: model); Issue.record("expected an error") } catch {
            #expect(error.kind == .corruptHeader)
        }
        try? FileManager.default.removeItem(at: url)
    }
}
