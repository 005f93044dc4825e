import Testing
import Foundation
import Residual
import ResidualTestSupport

@Suite struct OptimizerTests {
    static let cases: ReferenceCases = try! ReferenceCases(contentsOf: URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/optimizers.safetensors"))

    /// Three steps of each optimizer against torch.optim (float64 reference), within 1e-6. The
    /// `_schedule` cases change the learning rate between steps (only then does PyTorch's momentum
    /// form differ from the lr-inside-the-buffer form); `_betas_eps` use non-default betas and a
    /// large eps (where eps sits relative to the square root and the bias correction matter).
    @Test(arguments: ["sgd_momentum_wd", "sgd_nesterov_wd", "sgd_plain", "adam", "adamw",
                      "sgd_momentum_wd_schedule", "sgd_nesterov_wd_schedule", "sgd_plain_wd_schedule",
                      "adam_betas_eps", "adamw_betas_eps"])
    func matchesPyTorch(_ name: String) {
        let c = Self.cases, q = c.parameters(name)
        let p = Parameter(c["\(name).param"])
        let lr = Float(q["lr"] as! Double), wd = Float(q["weight_decay"] as? Double ?? 0)
        let betas = (q["betas"] as? [Double] ?? [0.9, 0.999]).map { Float($0) }
        let eps = Float(q["eps"] as? Double ?? 1e-8)
        let optimizer: any Optimizer
        switch q["optimizer"] as! String {
        case "SGD":
            optimizer = SGD([p], learningRate: lr, momentum: Float(q["momentum"] as? Double ?? 0), weightDecay: wd,
                            nesterov: q["nesterov"] as? Bool ?? false)
        case "Adam":
            optimizer = Adam([p], learningRate: lr, beta1: betas[0], beta2: betas[1], epsilon: eps, weightDecay: wd)
        default:
            optimizer = AdamW([p], learningRate: lr, beta1: betas[0], beta2: betas[1], epsilon: eps, weightDecay: wd)
        }
        let rates = (q["lrs"] as? [Double])?.map { Float($0) }
        for step in 1...3 {
            if let rates { optimizer.learningRate = rates[step - 1] }
            p.grad = c["\(name).grad_step\(step)"]
            optimizer.step()
            let e = relativeError(p.data, c["\(name).param_after_step\(step)"])
            logParity("\(name).step\(step)", e)
            #expect(e < 1e-6, "\(name) step \(step): relative error \(e)")
        }
    }

    /// Hand-computed: p = 1, g = 0.5, lr 0.1, momentum 0.9, wd 0.1.
    @Test func sgdByHand() {
        let p = Parameter(Tensor(shape: [1], scalars: [1]))
        let sgd = SGD([p], learningRate: 0.1, momentum: 0.9, weightDecay: 0.1)
        p.grad = Tensor(shape: [1], scalars: [0.5])
        sgd.step()     // d = 0.5 + 0.1 = 0.6; buf = 0.6; p = 1 - 0.06 = 0.94
        #expect(abs(p.data.scalar - 0.94) < 1e-7)
        p.grad = Tensor(shape: [1], scalars: [0.5])
        sgd.step()     // d = 0.5 + 0.094 = 0.594; buf = 0.54 + 0.594 = 1.134; p = 0.94 - 0.1134 = 0.8266
        #expect(abs(p.data.scalar - 0.8266) < 1e-6)
        // A parameter without a gradient, or frozen, is left alone.
        let q = Parameter(Tensor(ones: [2]), requiresGrad: false)
        q.grad = Tensor(ones: [2])
        SGD([q], learningRate: 1).step()
        #expect(q.data.scalars == [1, 1])
    }

    @Test func schedulesAtBoundaries() {
        let m = MultiStepSchedule(base: 0.1, milestones: [32_000, 48_000])
        #expect(m.learningRate(step: 0) == 0.1 && m.learningRate(step: 31_999) == 0.1)
        #expect(abs(m.learningRate(step: 32_000) - 0.01) < 1e-9 && abs(m.learningRate(step: 47_999) - 0.01) < 1e-9)
        #expect(abs(m.learningRate(step: 48_000) - 0.001) < 1e-10)
        #expect(MultiStepSchedule.paper(totalSteps: 64_000).milestones == [32_000, 48_000])
        let s = StepSchedule(base: 1, stepSize: 10, factor: 0.5)
        #expect(s.learningRate(step: 9) == 1 && s.learningRate(step: 10) == 0.5 && s.learningRate(step: 25) == 0.25)
        let cos = CosineSchedule(base: 1, totalSteps: 100, minimum: 0.1)
        #expect(cos.learningRate(step: 0) == 1 && abs(cos.learningRate(step: 50) - 0.55) < 1e-6 && abs(cos.learningRate(step: 100) - 0.1) < 1e-6)
        let w = LinearWarmup(m, warmupSteps: 10)
        #expect(w.learningRate(step: 0) == 0 && abs(w.learningRate(step: 5) - 0.05) < 1e-7 && w.learningRate(step: 10) == 0.1)
        var jump = ConstantThenJumpWarmup(m, warmupRate: 0.01, threshold: 0.8)
        #expect(jump.learningRate(step: 100) == 0.01)
        jump.observe(trainingError: 0.85, step: 100)
        #expect(jump.learningRate(step: 101) == 0.01)
        jump.observe(trainingError: 0.79, step: 400)
        #expect(jump.learningRate(step: 399) == 0.01 && jump.learningRate(step: 400) == 0.1)
        jump.observe(trainingError: 0.9, step: 500)
        #expect(jump.learningRate(step: 500) == 0.1, "the switch happens once")
    }
}
