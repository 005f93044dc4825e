import Testing
import Foundation
import ResidualAutodiff
import ResidualTestSupport

/// The core ops against PyTorch (fixtures from scripts/make_fixtures.py, computed in float64):
/// forward within 1e-4 relative error (max-abs error over max-abs value), gradients within 1e-3.
@Suite struct PyTorchParityTests {
    static let cases: ReferenceCases = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../ResidualNNTests/Fixtures/layers.safetensors").standardized
        return try! ReferenceCases(contentsOf: url)
    }()

    /// Runs `f` on watched inputs, seeds backward with the stored grad_output, and compares. Runs
    /// twice: with the inputs as stored (standard layout) and with the 4-D activations (`input`,
    /// `other`) stored channels-last, the layout the zoo runs in, so both code paths of each op face
    /// PyTorch. (Weights stay standard: the layout decision covers activations.)
    func check(_ name: String, inputs: [String], gradients: [String], _ f: ([Tensor]) -> Tensor,
               sourceLocation: SourceLocation = #_sourceLocation) {
        let c = Self.cases
        for layout in [Tensor.Layout.standard, .channelsLast] {
            let tape = Tape()
            let xs = inputs.map { n -> Tensor in
                let t = c["\(name).\(n)"]
                return tape.watch(t.rank == 4 && (n == "input" || n == "other") ? t.converted(to: layout) : t)
            }
            let y = tape.record { f(xs) }
            let forward = relativeError(y, c["\(name).output"])
            logParity("\(name).\(layout).output", forward)
            #expect(forward < 1e-4, "\(name) (\(layout)) forward: relative error \(forward)", sourceLocation: sourceLocation)
            let seed = c.tensors["\(name).grad_output"]
            let grads = tape.gradients(of: y, withRespectTo: xs, seed: seed)
            for (g, gname) in zip(grads, gradients) {
                let e = relativeError(g, c["\(name).\(gname)"])
                logParity("\(name).\(layout).\(gname)", e)
                #expect(e < 1e-3, "\(name) (\(layout)) \(gname): relative error \(e)", sourceLocation: sourceLocation)
            }
        }
    }

    @Test(arguments: ["conv_stem_k7s2p3", "conv_k3s1p1", "conv_k3s2p1", "conv_k1s1p0", "conv_k1s2p0", "conv_k3s1p1_groups4_bias",
                      "conv_awk_k3s1p1_c5o17", "conv_awk_k3s2p1_c17o19", "conv_awk_k1s2p0_c19o33", "conv_awk_k1s1p0_c33o1",
                      "conv_awk_k7s2p3_c1o17"])
    func convolution(_ name: String) {
        let p = Self.cases.parameters(name)
        let (s, pad, g, bias) = (p["s"] as! Int, p["p"] as! Int, p["g"] as! Int, p["bias"] as! Bool)
        check(name, inputs: bias ? ["input", "weight", "bias"] : ["input", "weight"],
              gradients: bias ? ["grad_input", "grad_weight", "grad_bias"] : ["grad_input", "grad_weight"]) {
            conv2d($0[0], $0[1], bias: bias ? $0[2] : nil, stride: s, padding: pad, groups: g)
        }
    }

    /// `_small_var`: batch variance ~1e-6, comparable to eps, so eps must be where PyTorch puts it.
    @Test(arguments: ["bn_train", "bn_train_batch1", "bn_train_small_var"])
    func batchNormTrainingMode(_ name: String) {
        check(name, inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            batchNormTraining($0[0], weight: $0[1], bias: $0[2], epsilon: 1e-5).output
        }
        // Batch statistics: PyTorch's running update uses the unbiased variance.
        let c = Self.cases
        let x = c["\(name).input"]
        let (_, mean, variance) = batchNormTraining(x, weight: nil, bias: nil, epsilon: 1e-5)
        let m = Float(x.count / x.shape[1])
        let newMean = c["\(name).running_mean"] * 0.9 + mean * 0.1
        let newVar = c["\(name).running_var"] * 0.9 + variance * (m / (m - 1)) * 0.1
        let (em, ev) = (relativeError(newMean, c["\(name).new_running_mean"]), relativeError(newVar, c["\(name).new_running_var"]))
        logParity("\(name).new_running_mean", em)
        logParity("\(name).new_running_var", ev)
        #expect(em < 1e-5 && ev < 1e-5, "\(name) running statistics: \(em), \(ev)")
    }

    @Test(arguments: ["bn_eval", "bn_eval_small_var"])
    func batchNormEvalMode(_ name: String) {
        let c = Self.cases
        check(name, inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            batchNormInference($0[0], weight: $0[1], bias: $0[2], mean: c["\(name).running_mean"],
                               variance: c["\(name).running_var"], epsilon: 1e-5)
        }
    }

    /// `_ties`: inputs in {-1, 0, 1}, so most windows have several maxima; PyTorch routes the
    /// gradient to the first in row-major order.
    @Test(arguments: ["maxpool_k3s2p1", "maxpool_k2s2p0", "avgpool_k2s2p0", "avgpool_k3s2p1",
                      "maxpool_k3s2p1_ties", "maxpool_k2s2p0_ties"])
    func pooling(_ name: String) {
        let p = Self.cases.parameters(name)
        let (k, s, pad) = (p["k"] as! Int, p["s"] as! Int, p["p"] as! Int)
        check(name, inputs: ["input"], gradients: ["grad_input"]) {
            name.hasPrefix("max") ? maxPool2d($0[0], kernelSize: k, stride: s, padding: pad)
                : avgPool2d($0[0], kernelSize: k, stride: s, padding: pad)
        }
    }

    @Test func globalPooling() {
        check("global_avgpool", inputs: ["input"], gradients: ["grad_input"]) { globalAvgPool($0[0]) }
    }

    @Test func linearAndRelu() {
        check("linear", inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            linear($0[0], weight: $0[1], bias: $0[2])
        }
        check("relu", inputs: ["input"], gradients: ["grad_input"]) { relu($0[0]) }
        // Integer inputs, a third of them exactly 0, where PyTorch's ReLU gradient is 0.
        check("relu_zeros", inputs: ["input"], gradients: ["grad_input"]) { relu($0[0]) }
    }

    @Test(arguments: ["cross_entropy", "cross_entropy_smooth0.1"])
    func crossEntropy(_ name: String) {
        let p = Self.cases.parameters(name)
        let labels = p["labels"] as! [Int]
        let eps = Float(p["label_smoothing"] as! Double)
        check(name, inputs: ["input"], gradients: ["grad_input"]) {
            softmaxCrossEntropy(logits: $0[0], labels: labels, labelSmoothing: eps)
        }
    }

    /// The fused steps of the zoo's blocks: ReLU(batch norm) in both modes, ReLU(a + b) (also with
    /// exact zeros, where the gradient is 0), each against PyTorch's unfused composition.
    @Test func fusedBatchNormReLU() {
        check("bn_relu_train", inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            batchNormTraining($0[0], weight: $0[1], bias: $0[2], epsilon: 1e-5, fusedReLU: true).output
        }
        let c = Self.cases
        check("bn_relu_eval", inputs: ["input", "weight", "bias"], gradients: ["grad_input", "grad_weight", "grad_bias"]) {
            batchNormInference($0[0], weight: $0[1], bias: $0[2], mean: c["bn_relu_eval.running_mean"],
                               variance: c["bn_relu_eval.running_var"], epsilon: 1e-5, fusedReLU: true)
        }
    }

    @Test(arguments: ["add_relu", "add_relu_zeros"])
    func addThenReLU(_ name: String) {
        check(name, inputs: ["input", "other"], gradients: ["grad_input", "grad_other"]) { addReLU($0[0], $0[1]) }
        check(name, inputs: ["input", "other"], gradients: ["grad_input", "grad_other"]) { relu($0[0] + $0[1]) }
    }

    @Test func optionAShortcut() {
        check("shortcut_option_a", inputs: ["input"], gradients: ["grad_input"]) {
            subsampleAndPadChannels($0[0], stride: 2, before: 8, after: 8)
        }
        check("shortcut_option_a", inputs: ["input"], gradients: ["grad_input"]) { x in
            let s = x[0].shape
            let sub = slice(x[0], lower: [0, 0, 0, 0], upper: s, stride: [1, 1, 2, 2])
            return pad(sub, [(0, 0), (8, 8), (0, 0), (0, 0)])
        }
    }

    /// The comparison bites: each fixture's reference, perturbed by a plausible bug, fails the
    /// tolerance its test uses. A stride-1 instead of stride-2 convolution changes the shape (and the
    /// helper stops); here: a single flipped element, a 2e-4 relative drift, a NaN, a dropped
    /// backward term (the option-A gradient without its zero-padding offset) and a half-size
    /// gradient must all exceed the tolerances, and the unperturbed reference must pass.
    @Test func comparisonBites() {
        let c = Self.cases
        let y = c["conv_k3s2p1.output"]
        #expect(relativeError(y, y) == 0)
        var flipped = y.scalars
        let at = flipped.indices.max { abs(flipped[$0]) < abs(flipped[$1]) }!
        flipped[at] = -flipped[at]
        #expect(relativeError(Tensor(shape: y.shape, scalars: flipped), y) > 1e-4)
        #expect(relativeError(y * 1.0002, y) > 1e-4, "a 2e-4 relative error fails the forward tolerance")
        #expect(relativeError(y * 1.00005, y) < 1e-4, "a 5e-5 relative error passes it")
        var withNaN = y.scalars
        withNaN[3] = .nan
        #expect(relativeError(Tensor(shape: y.shape, scalars: withNaN), y) == .infinity, "NaN never passes")
        #expect(relativeError(y, Tensor(shape: y.shape, scalars: withNaN)) == .infinity)
        let g = c["conv_k3s2p1.grad_weight"]
        #expect(relativeError(g * 0.5, g) > 1e-3, "a missing factor in a backward rule fails the gradient tolerance")
        #expect(relativeError(g * 1.002, g) > 1e-3)
        // The option-A gradient: padding channels placed at the front instead of split 8/8.
        let ga = c["shortcut_option_a.grad_input"], r = c["shortcut_option_a.grad_output"]
        let tape = Tape()
        let x = tape.watch(c["shortcut_option_a.input"])
        let out = tape.record {
            pad(slice(x, lower: [0, 0, 0, 0], upper: x.shape, stride: [1, 1, 2, 2]), [(0, 0), (16, 0), (0, 0), (0, 0)])
        }
        let wrong = tape.gradients(of: out, withRespectTo: [x], seed: r)[0]
        #expect(relativeError(wrong, ga) > 1e-3)
    }
}
