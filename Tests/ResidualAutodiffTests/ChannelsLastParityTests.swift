import Testing
import Foundation
import ResidualAutodiff
import ResidualTestSupport

/// The PyTorch layer fixtures (the same as PyTorchParityTests) run on channels-last inputs: the
/// channels-last kernels match PyTorch within the same tolerances (forward 1e-4, gradients 1e-3),
/// and their outputs and input gradients are channels-last.
@Suite struct ChannelsLastParityTests {
    static let cases: ReferenceCases = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../ResidualNNTests/Fixtures/layers.safetensors").standardized
        return try! ReferenceCases(contentsOf: url)
    }()

    /// Like PyTorchParityTests.check, with the rank-4 inputs converted to channels-last first.
    func check(_ name: String, inputs: [String], gradients: [String], outputLayout: Tensor.Layout = .channelsLast,
               _ f: ([Tensor]) -> Tensor, sourceLocation: SourceLocation = #_sourceLocation) {
        let c = Self.cases
        let tape = Tape()
        let xs = inputs.map { n -> Tensor in
            let t = c["\(name).\(n)"]
            return tape.watch(t.rank == 4 ? t.converted(to: .channelsLast) : t)
        }
        let y = tape.record { f(xs) }
        #expect(y.layout == outputLayout, "\(name): output layout \(y.layout)", sourceLocation: sourceLocation)
        let forward = relativeError(y, c["\(name).output"])
        #expect(forward < 1e-4, "\(name) forward: relative error \(forward)", sourceLocation: sourceLocation)
        let grads = tape.gradients(of: y, withRespectTo: xs, seed: c.tensors["\(name).grad_output"])
        for (g, gname) in zip(grads, gradients) {
            if g.rank == 4 { #expect(g.layout == .channelsLast, "\(name) \(gname) layout", sourceLocation: sourceLocation) }
            let e = relativeError(g, c["\(name).\(gname)"])
            #expect(e < 1e-3, "\(name) \(gname): relative error \(e)", sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: ["bn_train", "bn_train_batch1"])
    func batchNormTrainingMode(_ name: String) {
        check(name, inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            batchNormTraining($0[0], weight: $0[1], bias: $0[2], epsilon: 1e-5).output
        }
        let x = Self.cases["\(name).input"]
        let (_, mean, variance) = batchNormTraining(x.converted(to: .channelsLast), weight: nil, bias: nil, epsilon: 1e-5)
        let m = Float(x.count / x.shape[1])
        let newMean = Self.cases["\(name).running_mean"] * 0.9 + mean * 0.1
        let newVar = Self.cases["\(name).running_var"] * 0.9 + variance * (m / (m - 1)) * 0.1
        #expect(relativeError(newMean, Self.cases["\(name).new_running_mean"]) < 1e-5)
        #expect(relativeError(newVar, Self.cases["\(name).new_running_var"]) < 1e-5)
    }

    @Test func batchNormEvalMode() {
        let c = Self.cases
        check("bn_eval", inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            batchNormInference($0[0], weight: $0[1], bias: $0[2], mean: c["bn_eval.running_mean"],
                               variance: c["bn_eval.running_var"], epsilon: 1e-5)
        }
    }

    @Test(arguments: ["maxpool_k3s2p1", "maxpool_k2s2p0", "avgpool_k2s2p0", "avgpool_k3s2p1"])
    func pooling(_ name: String) {
        let p = Self.cases.parameters(name)
        let (k, s, pad) = (p["k"] as! Int, p["s"] as! Int, p["p"] as! Int)
        check(name, inputs: ["input"], gradients: ["grad_input"]) {
            name.hasPrefix("max") ? maxPool2d($0[0], kernelSize: k, stride: s, padding: pad)
                : avgPool2d($0[0], kernelSize: k, stride: s, padding: pad)
        }
    }

    @Test func globalPooling() {
        check("global_avgpool", inputs: ["input"], gradients: ["grad_input"], outputLayout: .standard) { globalAvgPool($0[0]) }
    }

    /// ReLU on a rank-4 input with exact zeros (the gradient at 0 is 0, as in PyTorch).
    @Test func relu() {
        check("relu_zeros", inputs: ["input"], gradients: ["grad_input"]) { ResidualAutodiff.relu($0[0]) }
    }

    @Test func optionAShortcut() {
        check("shortcut_option_a", inputs: ["input"], gradients: ["grad_input"]) {
            subsampleAndPadChannels($0[0], stride: 2, before: 8, after: 8)
        }
    }

    @Test(arguments: ["conv_stem_k7s2p3", "conv_k3s1p1", "conv_k3s2p1", "conv_k1s1p0", "conv_k1s2p0", "conv_k3s1p1_groups4_bias"])
    func convolution(_ name: String) {
        let p = Self.cases.parameters(name)
        let (s, pad, g, bias) = (p["s"] as! Int, p["p"] as! Int, p["g"] as! Int, p["bias"] as! Bool)
        // the weight is rank 4 too; only the activation goes channels-last
        let c = Self.cases
        let tape = Tape()
        let x = tape.watch(c["\(name).input"].converted(to: .channelsLast))
        let w = tape.watch(c["\(name).weight"])
        let b = bias ? tape.watch(c["\(name).bias"]) : nil
        let y = tape.record { conv2d(x, w, bias: b, stride: s, padding: pad, groups: g) }
        #expect(y.layout == .channelsLast)
        #expect(relativeError(y, c["\(name).output"]) < 1e-4)
        let grads = tape.gradients(of: y, withRespectTo: [x, w] + (b.map { [$0] } ?? []), seed: c["\(name).grad_output"])
        #expect(grads[0].layout == .channelsLast)
        #expect(relativeError(grads[0], c["\(name).grad_input"]) < 1e-3)
        #expect(relativeError(grads[1], c["\(name).grad_weight"]) < 1e-3)
        if bias { #expect(relativeError(grads[2], c["\(name).grad_bias"]) < 1e-3) }
    }
}
