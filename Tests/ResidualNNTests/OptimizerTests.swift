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

    /// Hand-computed: Nesterov p = 1, g = 0.5, lr 0.1, momentum 0.9, no decay: buf = 0.5,
    /// p ← 1 − 0.1·(0.5 + 0.9·0.5) = 0.905; then buf = 0.95, p ← 0.905 − 0.1·(0.5 + 0.855) = 0.7695.
    @Test func nesterovByHand() {
        let p = Parameter(Tensor(shape: [1], scalars: [1]))
        let sgd = SGD([p], learningRate: 0.1, momentum: 0.9, nesterov: true)
        p.grad = Tensor(shape: [1], scalars: [0.5]); sgd.step()
        #expect(abs(p.data.scalar - 0.905) < 1e-6)
        p.grad = Tensor(shape: [1], scalars: [0.5]); sgd.step()
        #expect(abs(p.data.scalar - 0.7695) < 1e-6)
    }

    /// Hand-computed Adam: after one step m̂ = g and v̂ = g², so p moves by lr·g/(|g| + eps) = lr·sign(g);
    /// after two steps with g then −g: m = 0.9·0.1·g·... computed below in Double.
    @Test func adamByHand() {
        let p = Parameter(Tensor(shape: [2], scalars: [1, -2]))
        let adam = Adam([p], learningRate: 0.01)
        p.grad = Tensor(shape: [2], scalars: [0.3, -4]); adam.step()
        #expect(abs(p.data.scalars[0] - 0.99) < 1e-6 && abs(p.data.scalars[1] - -1.99) < 1e-6)
        p.grad = Tensor(shape: [2], scalars: [-0.3, 4]); adam.step()
        // m = 0.9·0.1·g1 + 0.1·g2 = −0.01·g1... for g2 = −g1: m = (0.09 − 0.1)·g1 = −0.01·g1, m̂ = m/0.19;
        // v = 0.999·0.001·g1² + 0.001·g1² = 0.001999·g1², v̂ = v/0.001999 = g1²: step = lr·(−0.01/0.19)·sign(g1).
        let step = 0.01 * 0.01 / 0.19
        #expect(abs(Double(p.data.scalars[0]) - (0.99 + step)) < 1e-6)
        #expect(abs(Double(p.data.scalars[1]) - (-1.99 - step)) < 1e-6)
        // AdamW decays the weight first, outside the gradient: p ← p·(1 − lr·wd), then the Adam step.
        let q = Parameter(Tensor(shape: [1], scalars: [2]))
        let adamw = AdamW([q], learningRate: 0.1, weightDecay: 0.5)
        q.grad = Tensor(shape: [1], scalars: [1]); adamw.step()
        #expect(abs(q.data.scalar - (2 * 0.95 - 0.1)) < 1e-6)
        // Adam's L2 form adds wd·p to the gradient instead: g = 1 + 0.5·2 = 2, still a step of lr.
        let r = Parameter(Tensor(shape: [1], scalars: [2]))
        let adamL2 = Adam([r], learningRate: 0.1, weightDecay: 0.5)
        r.grad = Tensor(shape: [1], scalars: [-1.5]); adamL2.step()     // g = −1.5 + 1 = −0.5
        #expect(abs(r.data.scalar - 2.1) < 1e-6)
    }

    @Test func schedulesAtBoundaries() {
        // The paper: 0.1, divided by 10 at 32k and 48k iterations (steps are 0-based).
        let m = MultiStepSchedule(base: 0.1, milestones: [48_000, 32_000])
        #expect(m.milestones == [32_000, 48_000])
        #expect(m.learningRate(step: 0) == 0.1 && m.learningRate(step: 31_999) == 0.1)
        #expect(abs(m.learningRate(step: 32_000) - 0.01) < 1e-9 && abs(m.learningRate(step: 47_999) - 0.01) < 1e-9)
        #expect(abs(m.learningRate(step: 48_000) - 0.001) < 1e-10 && abs(m.learningRate(step: 64_000) - 0.001) < 1e-10)
        #expect(MultiStepSchedule.paper(totalSteps: 64_000).milestones == [32_000, 48_000])
        let s = StepSchedule(base: 1, stepSize: 10, factor: 0.5)
        #expect(s.learningRate(step: 0) == 1 && s.learningRate(step: 9) == 1 && s.learningRate(step: 10) == 0.5)
        #expect(s.learningRate(step: 19) == 0.5 && s.learningRate(step: 20) == 0.25 && s.learningRate(step: 25) == 0.25)
        let cos = CosineSchedule(base: 1, totalSteps: 100, minimum: 0.1)
        #expect(cos.learningRate(step: 0) == 1 && abs(cos.learningRate(step: 50) - 0.55) < 1e-6)
        #expect(abs(cos.learningRate(step: 25) - (0.1 + 0.9 * Float((1 + 0.5.squareRoot()) / 2))) < 1e-6)
        #expect(abs(cos.learningRate(step: 100) - 0.1) < 1e-6 && abs(cos.learningRate(step: 150) - 0.1) < 1e-6)
        let w = LinearWarmup(m, warmupSteps: 10)
        #expect(w.learningRate(step: 0) == 0 && abs(w.learningRate(step: 5) - 0.05) < 1e-7)
        #expect(abs(w.learningRate(step: 9) - 0.09) < 1e-7 && w.learningRate(step: 10) == 0.1)
        let w2 = LinearWarmup(StepSchedule(base: 1, stepSize: 1000), warmupSteps: 4, startFactor: 0.2)
        #expect(abs(w2.learningRate(step: 0) - 0.2) < 1e-7 && abs(w2.learningRate(step: 2) - 0.6) < 1e-7 && w2.learningRate(step: 4) == 1)
        // ResNet-110: 0.01 until the training error is below 80 %, then the paper's schedule.
        var jump = ConstantThenJumpWarmup(m, warmupRate: 0.01, threshold: 0.8)
        #expect(jump.learningRate(step: 0) == 0.01 && jump.learningRate(step: 40_000) == 0.01)
        jump.observe(trainingError: 0.85, step: 100)
        jump.observe(trainingError: 0.8, step: 200)
        #expect(jump.learningRate(step: 201) == 0.01 && jump.switchedAt == nil, "80 % is not below 80 %")
        jump.observe(trainingError: 0.79, step: 400)
        #expect(jump.learningRate(step: 399) == 0.01 && jump.learningRate(step: 400) == 0.1)
        #expect(abs(jump.learningRate(step: 32_000) - 0.01) < 1e-9, "then the wrapped schedule's divisions")
        jump.observe(trainingError: 0.9, step: 500)
        #expect(jump.learningRate(step: 500) == 0.1 && jump.switchedAt == 400, "the switch happens once")
    }

    /// Optimizer state round-trips through named tensors: a restored optimizer continues exactly.
    @Test(arguments: ["sgd", "adam"])
    func stateDictRoundTrip(_ kind: String) throws {
        func make(_ ps: [Parameter]) -> any Optimizer {
            kind == "sgd" ? SGD(ps, learningRate: 0.1, momentum: 0.9, weightDecay: 1e-2) : Adam(ps, learningRate: 0.01)
        }
        let shapes = [[3, 2], [4], [1]]
        let a = shapes.enumerated().map { Parameter(testTensor($0.element, seed: UInt64($0.offset))) }
        let b = shapes.enumerated().map { Parameter(testTensor($0.element, seed: UInt64($0.offset))) }
        let (oa, ob) = (make(a), make(b))
        func step(_ o: any Optimizer, _ ps: [Parameter], _ t: Int) {
            for (i, p) in ps.enumerated() where !(i == 2 && t == 0) {   // parameter 2 skips the first step
                p.grad = testTensor(p.shape, seed: UInt64(100 * t + i))
            }
            o.step(); o.zeroGrad()
        }
        for t in 0..<3 { step(oa, a, t); step(ob, b, t) }
        let saved = Dictionary(uniqueKeysWithValues: oa.stateDict())
        #expect(saved["optimizer.step_count"]!.scalars == [0, 3])
        let c = a.map { Parameter($0.data) }
        let oc = make(c)
        try oc.loadStateDict(saved)
        #expect(oc.stepCount == 3)
        for t in 3..<5 { step(ob, b, t); step(oc, c, t) }
        for (p, q) in zip(b, c) { #expect(p.data.scalars.map(\.bitPattern) == q.data.scalars.map(\.bitPattern)) }
    }

    @Test func stateDictErrorsNameTheTensor() throws {
        let p = Parameter(Tensor(zeros: [2, 3]))
        let sgd = SGD([p], learningRate: 0.1, momentum: 0.9)
        func expectError(_ tensors: [String: Tensor], _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
            do { try sgd.loadStateDict(tensors); Issue.record("expected an error", sourceLocation: sourceLocation) } catch {
                #expect(error.description.contains(fragment), "\(error)", sourceLocation: sourceLocation)
            }
        }
        expectError(["optimizer.state.0.momentum_buffer": Tensor(zeros: [3, 2])], "the checkpoint has [3, 2], parameter 0 needs [2, 3]")
        expectError(["optimizer.state.1.momentum_buffer": Tensor(zeros: [2, 3])], "parameter index 1")
        expectError(["optimizer.state.x": Tensor(zeros: [1])], "not optimizer state")
        expectError(["optimizer.state.0.exp_avg": Tensor(zeros: [2, 3])], "SGD keeps no such state")
        expectError(["optimizer.step_count": Tensor(shape: [2], scalars: [0, 0.5])], "step_count")
        // A failed load leaves the state as it was.
        p.grad = Tensor(ones: [2, 3]); sgd.step()
        let before = sgd.stateDict().map { $0.1.scalars }
        expectError(["optimizer.state.0.momentum_buffer": Tensor(ones: [2, 3]), "optimizer.state.0.exp_avg": Tensor(zeros: [2, 3])],
                    "keeps no such state")
        #expect(sgd.stateDict().map { $0.1.scalars } == before)
    }
}
