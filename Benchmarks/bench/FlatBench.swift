import ResidualKernels

/// The flat (memory-bound) kernels of a training step: reductions, element-wise ops, softmax
/// cross-entropy, optimizer updates. Their `percent_of_peak` is small by nature: what matters is
/// the extra JSON field `gb_per_s` (bytes read + written per call / median time), against the
/// machine's memory bandwidth (docs/Kernels.md, "Flat kernels").
///
/// Stable names: `flat <kernel> <size>`, sizes as element counts or the tensor they stand for
/// (`r18` = ResNet-18's 11,689,512 parameters, `r20` = CIFAR ResNet-20's 269,722,
/// `act` = a `[128, 16, 32, 32]` activation, 2,097,152 floats).
enum FlatBench: BenchmarkFamily {
    static let act = 128 * 16 * 32 * 32, r18 = 11_689_512, r20 = 269_722

    static var benchmarks: [Benchmark] {
        [
            flat("flat sum 1M", n: 1 << 20, flops: 1, bytes: 4) { n, b in _ = sum(n, b[0].pointer) },
            flat("flat max 1M", n: 1 << 20, flops: 1, bytes: 4) { n, b in _ = maximum(n, b[0].pointer) },
            flat("flat relu act", n: act, flops: 1, bytes: 8) { n, b in reluForward(n, b[0].pointer, b[1].pointer) },
            flat("flat addReLU act", n: act, flops: 2, bytes: 12) { n, b in
                addReLU(n, b[0].pointer, b[1].pointer, b[2].pointer)
            },
            softmax(rows: 128, cols: 10),
            softmax(rows: 256, cols: 1000),
            momentum("r20", r20),
            momentum("r18", r18),
            flat("flat adam r18", n: r18, flops: 16, bytes: 28, buffers: 4) { n, b in
                adamUpdate(n, parameter: b[0].pointer, gradient: b[1].pointer, m: b[2].pointer, v: b[3].pointer,
                           learningRate: 1e-9, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, weightDecay: 0,
                           decoupled: false, c1: 0.1, c2: 0.001)
            },
        ]
    }

    /// SGD with momentum and weight decay (6 FLOP per parameter; reads p, g, buf, writes p, buf).
    static func momentum(_ label: String, _ n: Int) -> Benchmark {
        flat("flat sgd-momentum \(label)", n: n, flops: 6, bytes: 20, buffers: 3) { n, b in
            sgdUpdate(n, parameter: b[0].pointer, gradient: b[1].pointer, buffer: b[2].pointer, learningRate: 1e-9,
                      momentum: 0.9, weightDecay: 1e-4, nesterov: false, firstStep: false)
        }
    }

    /// Forward + backward of the fused loss. FLOP counted as 20 per logit (max, exp ≈ 15, sum,
    /// scale, gradient); bytes as six passes of 4 bytes (max, exp, scale, gradient read + write).
    static func softmax(rows: Int, cols: Int) -> Benchmark {
        let n = rows * cols
        return Benchmark(name: "flat softmax-ce \(rows)x\(cols) fwd+bwd") { _ in
            let x = Buffer(count: n, seed: 1), p = Buffer(count: n, seed: 2), d = Buffer(count: n, seed: 3)
            let labels = (0..<rows).map { $0 * 7 % cols }
            return Prepared(flops: 20 * Double(n), run: {
                labels.withUnsafeBufferPointer { lp in
                    _ = softmaxCrossEntropyForward(rows: rows, cols: cols, logits: x.pointer, labels: lp.baseAddress!,
                                                   probabilities: p.pointer)
                    softmaxCrossEntropyBackward(rows: rows, cols: cols, probabilities: p.pointer, labels: lp.baseAddress!,
                                                scale: 1 / Float(rows), gradient: d.pointer)
                }
            }, extraFields: { [("gb_per_s", 24 * Double(n) / $0 / 1e9)] })
        }
    }

    /// A kernel over `buffers` seeded buffers of `n` floats; `flops` and `bytes` per element.
    static func flat(_ name: String, n: Int, flops: Double, bytes: Double, buffers: Int = 3,
                     _ body: @escaping (Int, [Buffer]) -> Void) -> Benchmark {
        Benchmark(name: name) { _ in
            let b = (0..<buffers).map { Buffer(count: n, seed: UInt64($0 + 1)) }
            return Prepared(flops: flops * Double(n), run: { body(n, b) },
                            extraFields: { [("gb_per_s", bytes * Double(n) / $0 / 1e9)] })
        }
    }
}
