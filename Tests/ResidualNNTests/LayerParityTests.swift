import Testing
import Foundation
import Residual
import ResidualTestSupport

/// The NN layers (modules, not just the ops under them) against PyTorch's `nn` layers on the same
/// fixtures as the op tests: weights loaded by torchvision's names through `loadStateDict`, forward
/// within 1e-4, input and parameter gradients within 1e-3, and for BatchNorm2d in train mode the
/// running statistics (momentum 0.1, unbiased variance) and `num_batches_tracked` after the step.
@Suite struct LayerParityTests {
    static let cases = try! ReferenceCases(contentsOf: URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().appendingPathComponent("Fixtures/layers.safetensors"))

    /// Loads `state` (fixture tensor names → module names), runs the module on the case's input,
    /// seeds backward with its grad_output and compares the output and every gradient.
    func check(_ name: String, _ module: any Layer, state: [String: String] = [:],
               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let c = Self.cases
        if !state.isEmpty {
            try module.loadStateDict(Dictionary(uniqueKeysWithValues: state.map { ($1, c["\(name).\($0)"]) }), strict: false)
        }
        let tape = Tape()
        let x = tape.watch(c["\(name).input"])
        let y = tape.record { module(x) }
        let e = relativeError(y, c["\(name).output"])
        logParity("layer.\(name).output", e)
        #expect(e < 1e-4, "\(name) output: \(e)", sourceLocation: sourceLocation)
        let gx = tape.gradients(of: y, withRespectTo: [x], seed: c["\(name).grad_output"])[0]
        let ex = relativeError(gx, c["\(name).grad_input"])
        #expect(ex < 1e-3, "\(name) grad_input: \(ex)", sourceLocation: sourceLocation)
        var worst = ex
        for (pname, p) in module.namedParameters() {
            let ep = relativeError(p.grad ?? Tensor(zeros: p.shape), c["\(name).grad_\(pname)"])
            #expect(ep < 1e-3, "\(name) grad_\(pname): \(ep)", sourceLocation: sourceLocation)
            worst = max(worst, ep)
        }
        logParity("layer.\(name).gradients", worst)
    }

    @Test(arguments: ["conv_stem_k7s2p3", "conv_k3s1p1", "conv_k3s2p1", "conv_k1s1p0", "conv_k1s2p0", "conv_k3s1p1_groups4_bias",
                      "conv_awk_k3s1p1_c5o17", "conv_awk_k3s2p1_c17o19", "conv_awk_k1s2p0_c19o33", "conv_awk_k1s1p0_c33o1",
                      "conv_awk_k7s2p3_c1o17"])
    func conv2d(_ name: String) throws {
        let q = Self.cases.parameters(name)
        let (c, o, k) = (q["c"] as! Int, q["o"] as! Int, q["k"] as! Int)
        let bias = q["bias"] as! Bool
        let layer = Conv2d(inputChannels: c, outputChannels: o, kernelSize: k, stride: q["s"] as! Int, padding: q["p"] as! Int,
                           groups: q["g"] as! Int, bias: bias)
        try check(name, layer, state: bias ? ["weight": "weight", "bias": "bias"] : ["weight": "weight"])
    }

    @Test(arguments: ["bn_train", "bn_train_batch1", "bn_train_small_var"])
    func batchNormTraining(_ name: String) throws {
        let c = Self.cases
        let channels = c["\(name).weight"].count
        let bn = BatchNorm2d(channels: channels)
        try bn.loadStateDict(["weight": c["\(name).weight"], "bias": c["\(name).bias"], "running_mean": c["\(name).running_mean"],
                              "running_var": c["\(name).running_var"], "num_batches_tracked": Tensor(zeros: [])])
        bn.train()
        try check(name, bn)
        let em = relativeError(bn.runningMean.value, c["\(name).new_running_mean"])
        let ev = relativeError(bn.runningVar.value, c["\(name).new_running_var"])
        logParity("layer.\(name).running_stats", max(em, ev))
        #expect(em < 1e-5 && ev < 1e-5, "\(name) running statistics: mean \(em), var \(ev)")
        #expect(bn.numBatchesTracked.value.scalar == 1)
    }

    @Test(arguments: ["bn_eval", "bn_eval_small_var"])
    func batchNormEval(_ name: String) throws {
        let bn = BatchNorm2d(channels: Self.cases["\(name).weight"].count)
        bn.eval()
        try check(name, bn, state: ["weight": "weight", "bias": "bias", "running_mean": "running_mean", "running_var": "running_var"])
        #expect(bn.runningMean.value.scalars == Self.cases["\(name).running_mean"].scalars, "eval mode leaves the statistics alone")
    }

    @Test func poolingLinearRelu() throws {
        try check("maxpool_k3s2p1", MaxPool2d(kernelSize: 3, stride: 2, padding: 1))
        try check("maxpool_k2s2p0", MaxPool2d(kernelSize: 2))
        try check("avgpool_k2s2p0", AvgPool2d(kernelSize: 2))
        try check("avgpool_k3s2p1", AvgPool2d(kernelSize: 3, stride: 2, padding: 1))
        try check("global_avgpool", GlobalAvgPool())
        try check("linear", Linear(inputFeatures: 7, outputFeatures: 5), state: ["weight": "weight", "bias": "bias"])
        try check("relu", ReLU())
        try check("relu_zeros", ReLU())
    }
}
