import ResidualKernels

/// Convolution: every convolution shape of the zoo's training and inference benchmarks, on the
/// engine's channels-last kernels (`conv2dForwardNHWC`, `conv2dBackwardDataNHWC`,
/// `conv2dBackwardWeightNHWC`) with the algorithm `ConvAlgorithm.choose` picks.
///
/// Names are stable: `conv <net>.<layer> b<batch> <pass>`, pass one of `fwd`, `bwd-data`,
/// `bwd-weight` and `fwd+bwd` (all three in one call, as torch's `autograd.grad` figures in
/// ANCHORS.md). Shapes: CIFAR ResNet-20/56 at batch 128 (training), ImageNet ResNet-18 and the extra
/// shapes of ResNet-50 (torchvision v1.5, stride on the 3x3) at batch 16 (training) and batch 1
/// (forward only: inference). `<layer>.down` is the strided 3x3 opening a stage, `.proj` the strided
/// 1x1 projection shortcut. The stems (first convolutions) have no input gradient, so their `fwd+bwd`
/// is forward + backward-weight. FLOP count: 2 x N x O x OH x OW x C x kh x kw per pass, also for
/// passes computed with Winograd (fewer multiplications): their GFLOP/s is *effective* and can
/// exceed the peak; such records carry `"winograd": 1` and the table marks them with `*`.
/// `--algorithms` adds `convalg <net>.<layer> b<batch> <fwd|bwd-data> <direct|winograd>` rows for
/// the 3x3 stride-1 layers, each algorithm forced, to compare them in one run.
///
/// Where ANCHORS.md has PyTorch's channels-last figure (oneDNN) for the same shape, pass and thread
/// count, the JSON record carries `onednn_gflops` and `vs_onednn` (ours / theirs).
enum ConvBench: BenchmarkFamily {
    struct Layer {
        var name: String, batch: Int
        var c: Int, hw: Int, o: Int, k: Int, stride: Int
        var training: Bool
        var stem = false

        var shape: Conv2dShape {
            Conv2dShape(batch: batch, inChannels: c, height: hw, width: hw, outChannels: o,
                        kernelH: k, kernelW: k, strideH: stride, strideW: stride, padH: k / 2, padW: k / 2)
        }
    }

    enum Pass: String, CaseIterable { case fwd, bwdData = "bwd-data", bwdWeight = "bwd-weight", fwdBwd = "fwd+bwd" }

    static var layers: [Layer] {
        var out: [Layer] = []
        // CIFAR ResNet-20/56 (He et al. 4.2): 16/32/64 filters on 32/16/8 maps, option A shortcuts.
        out.append(Layer(name: "resnet20.conv1", batch: 128, c: 3, hw: 32, o: 16, k: 3, stride: 1, training: true,
                         stem: true))
        for (i, (c, hw)) in [(16, 32), (32, 16), (64, 8)].enumerated() {
            if i > 0 {
                out.append(Layer(name: "resnet20.stage\(i + 1).down", batch: 128, c: c / 2, hw: 2 * hw, o: c,
                                 k: 3, stride: 2, training: true))
            }
            out.append(Layer(name: "resnet20.stage\(i + 1)", batch: 128, c: c, hw: hw, o: c, k: 3, stride: 1,
                             training: true))
        }
        for batch in [16, 1] {
            // ResNet-18 at both batches forward and forward+backward (issue 3); ResNet-50's extra
            // shapes forward only at batch 1 (inference).
            let training = batch > 1
            out.append(Layer(name: "resnet18.conv1", batch: batch, c: 3, hw: 224, o: 64, k: 7, stride: 2,
                             training: true, stem: true))
            // ResNet-18 basic blocks: 3x3 s1 per stage, 3x3 s2 + 1x1 s2 projection opening stages 3-5.
            for (i, (c, hw)) in [(64, 56), (128, 28), (256, 14), (512, 7)].enumerated() {
                let stage = "resnet18.conv\(i + 2)_x"
                if i > 0 {
                    out.append(Layer(name: "\(stage).down", batch: batch, c: c / 2, hw: 2 * hw, o: c, k: 3,
                                     stride: 2, training: true))
                    out.append(Layer(name: "\(stage).proj", batch: batch, c: c / 2, hw: 2 * hw, o: c, k: 1,
                                     stride: 2, training: true))
                }
                out.append(Layer(name: stage, batch: batch, c: c, hw: hw, o: c, k: 3, stride: 1,
                                 training: true))
            }
            // ResNet-50 bottlenecks (planes p, 4p out): the shapes ResNet-18 does not already have.
            for (i, (p, hw)) in [(64, 56), (128, 28), (256, 14), (512, 7)].enumerated() {
                let stage = "resnet50.conv\(i + 2)_x"
                let inFirst = i == 0 ? 64 : 2 * p, hwIn = i == 0 ? hw : 2 * hw
                out.append(Layer(name: "\(stage).reduce0", batch: batch, c: inFirst, hw: hwIn, o: p, k: 1,
                                 stride: 1, training: training))
                if i > 0 {
                    out.append(Layer(name: "\(stage).down", batch: batch, c: p, hw: 2 * hw, o: p, k: 3,
                                     stride: 2, training: training))
                    out.append(Layer(name: "\(stage).proj", batch: batch, c: 2 * p, hw: 2 * hw, o: 4 * p,
                                     k: 1, stride: 2, training: training))
                }
                out.append(Layer(name: "\(stage).reduce", batch: batch, c: 4 * p, hw: hw, o: p, k: 1, stride: 1,
                                 training: training))
                out.append(Layer(name: "\(stage).expand", batch: batch, c: p, hw: hw, o: 4 * p, k: 1, stride: 1,
                                 training: training))
            }
        }
        return out
    }

    static var benchmarks: [Benchmark] {
        var list: [Benchmark] = []
        for layer in layers {
            let passes: [Pass] = layer.training ? Pass.allCases : [.fwd]
            for pass in passes where !(layer.stem && pass == .bwdData) {
                list.append(benchmark(layer, pass))
            }
        }
        // `--algorithms`: every 3x3 stride-1 layer, forward and backward-data, with each algorithm
        // that supports it, so direct and Winograd compare in one run (ConvSelect.swift's rule).
        for layer in layers where !layer.stem && layer.k == 3 && layer.stride == 1 {
            for pass in [Pass.fwd, .bwdData] {
                for alg in [ConvAlgorithm.direct, .winograd] where alg.supports(layer.shape) {
                    list.append(benchmark(layer, pass, algorithm: alg))
                }
            }
        }
        return list
    }

    /// With `algorithm`, the row `convalg <net>.<layer> b<batch> <pass> <algorithm>` (suite
    /// `algorithms`) forces it; without, `ConvAlgorithm.choose` decides.
    static func benchmark(_ layer: Layer, _ pass: Pass, algorithm: ConvAlgorithm? = nil) -> Benchmark {
        let name = algorithm.map { "convalg \(layer.name) b\(layer.batch) \(pass.rawValue) \($0)" }
            ?? "conv \(layer.name) b\(layer.batch) \(pass.rawValue)"
        return Benchmark(name: name, suite: algorithm == nil ? .kernels : .algorithms) { threads in
            let s = layer.shape
            let x = Buffer(count: s.batch * s.height * s.width * s.inChannels, seed: 1)
            let w = Buffer(count: s.outChannels * s.inChannels * s.kernelH * s.kernelW, seed: 2)
            let y = Buffer(count: s.batch * s.outH * s.outW * s.outChannels, seed: 3)
            let dy = Buffer(count: y.count, seed: 4)
            let dx = Buffer(count: x.count, seed: 5)
            let dw = Buffer(count: w.count, seed: 6)
            let once = 2 * Double(s.batch * s.outH * s.outW * s.outChannels)
                * Double(s.inChannels * s.kernelH * s.kernelW)
            let fwd = { conv2dForwardNHWC(s, input: x.pointer, weight: w.pointer, bias: nil, output: y.pointer,
                                          algorithm: algorithm, threads: threads) }
            let data = { conv2dBackwardDataNHWC(s, gradOutput: dy.pointer, weight: w.pointer,
                                                gradInput: dx.pointer, algorithm: algorithm, threads: threads) }
            let weight = { conv2dBackwardWeightNHWC(s, input: x.pointer, gradOutput: dy.pointer,
                                                    gradWeight: dw.pointer, gradBias: nil, threads: threads) }
            let run: () -> Void, flops: Double
            switch pass {
            case .fwd: run = fwd; flops = once
            case .bwdData: run = data; flops = once
            case .bwdWeight: run = weight; flops = once
            case .fwdBwd:
                if layer.stem {
                    run = { fwd(); weight() }; flops = 2 * once
                } else {
                    run = { fwd(); data(); weight() }; flops = 3 * once
                }
            }
            let reference = onednn["\(layer.name) b\(layer.batch) \(pass.rawValue) t\(threads)"]
            // Winograd in any timed pass: GFLOP/s is effective (direct FLOP count), marked in the table.
            let passes: [ConvAlgorithm.Pass] = switch pass {
            case .fwd: [.forward]
            case .bwdData: [.backwardData]
            case .bwdWeight: [.backwardWeight]
            case .fwdBwd: layer.stem ? [.forward, .backwardWeight] : [.forward, .backwardData, .backwardWeight]
            }
            let winograd = algorithm.map { $0 == .winograd && pass != .bwdWeight }
                ?? passes.contains { ConvAlgorithm.choose(s, $0) == .winograd }
            return Prepared(flops: flops, run: run) { seconds in
                let mark: [(String, Double)] = winograd ? [("winograd", 1)] : []
                guard let reference, seconds > 0 else { return mark }
                let ours = flops / seconds / 1e9
                return mark + [("onednn_gflops", reference), ("vs_onednn", ours / reference)]
            }
        }
    }

    /// PyTorch 2.15 channels-last (oneDNN v3.13.3) GFLOP/s from /work/shared/perf/ANCHORS.md,
    /// section 3 (`torch nhwc`), for the shapes it measured. Its `fwd+bwd` of the stem includes an
    /// input gradient ours skips (the image needs none), so that ratio flatters us slightly.
    static let onednn: [String: Double] = [
        "resnet18.conv1 b1 fwd t2": 347, "resnet18.conv1 b1 fwd t1": 167,
        "resnet18.conv1 b1 fwd+bwd t2": 184, "resnet18.conv1 b1 fwd+bwd t1": 99.4,
        "resnet18.conv2_x b1 fwd+bwd t2": 442, "resnet18.conv2_x b1 fwd+bwd t1": 252,
        "resnet18.conv3_x b1 fwd+bwd t2": 451, "resnet18.conv3_x b1 fwd+bwd t1": 251,
        "resnet18.conv4_x b1 fwd+bwd t2": 388, "resnet18.conv4_x b1 fwd+bwd t1": 216,
        "resnet18.conv5_x b1 fwd+bwd t2": 77.2, "resnet18.conv5_x b1 fwd+bwd t1": 40.2,
        "resnet18.conv2_x b1 fwd t2": 461, "resnet18.conv2_x b1 fwd t1": 259,
        "resnet18.conv3_x b1 fwd t2": 484, "resnet18.conv3_x b1 fwd t1": 260,
        "resnet18.conv4_x b1 fwd t2": 449, "resnet18.conv4_x b1 fwd t1": 241,
        "resnet18.conv5_x b1 fwd t2": 326, "resnet18.conv5_x b1 fwd t1": 165,
        "resnet18.conv2_x b16 fwd t2": 501, "resnet18.conv2_x b16 fwd t1": 259,
        "resnet18.conv2_x b16 fwd+bwd t2": 454, "resnet18.conv2_x b16 fwd+bwd t1": 193,
        "resnet18.conv3_x b16 fwd t2": 547, "resnet18.conv3_x b16 fwd t1": 272,
        "resnet18.conv3_x b16 fwd+bwd t2": 507, "resnet18.conv3_x b16 fwd+bwd t1": 251,
        "resnet18.conv4_x b16 fwd t2": 546, "resnet18.conv4_x b16 fwd t1": 285,
        "resnet18.conv4_x b16 fwd+bwd t2": 493, "resnet18.conv4_x b16 fwd+bwd t1": 267,
        "resnet18.conv5_x b16 fwd t2": 523, "resnet18.conv5_x b16 fwd t1": 287,
        "resnet18.conv5_x b16 fwd+bwd t2": 352, "resnet18.conv5_x b16 fwd+bwd t1": 259,
        "resnet20.stage1 b128 fwd t2": 425, "resnet20.stage1 b128 fwd t1": 190,
        "resnet20.stage1 b128 fwd+bwd t2": 399, "resnet20.stage1 b128 fwd+bwd t1": 180,
        "resnet20.stage2 b128 fwd t2": 524, "resnet20.stage2 b128 fwd t1": 264,
        "resnet20.stage2 b128 fwd+bwd t2": 488, "resnet20.stage2 b128 fwd+bwd t1": 223,
        "resnet20.stage3 b128 fwd t2": 558, "resnet20.stage3 b128 fwd t1": 296,
        "resnet20.stage3 b128 fwd+bwd t2": 535, "resnet20.stage3 b128 fwd+bwd t1": 277,
        "resnet20.stage2.down b128 fwd t2": 446, "resnet20.stage2.down b128 fwd t1": 225,
        "resnet20.stage2.down b128 fwd+bwd t2": 304, "resnet20.stage2.down b128 fwd+bwd t1": 120,
    ]
}
