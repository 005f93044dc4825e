import ResidualKernels

/// SGEMM: square sizes, and the GEMMs of ResNet convolutions in the channels-last (NHWC) form the
/// convolution kernels use: a convolution is `out[M = N·OH·OW, O] = col[M, K = C·kh·kw] × Wᵀ`, with the
/// weights in PyTorch's `[O, C, kh, kw]` layout read as `[O, K]` row-major (`transB`). Backward-data
/// (`dgrad`) is `dcol[M, K] = dout[M, O] × W[O, K]`; backward-weight (`wgrad`) is
/// `dW[O, K] = doutᵀ × col` (`transA`, with the long `M` as the reduction).
///
/// Names are stable: `sgemm MxNxK` for square sizes and
/// `sgemm <net>.<layer>.<form> b<batch> MxNxK` for layer shapes (form `im2col`, `im2col.dgrad`,
/// `im2col.wgrad`, or `1x1` where the pixels themselves are the GEMM operand).
enum GEMMBench: BenchmarkFamily {
    static var benchmarks: [Benchmark] {
        var list = [256, 512, 1024, 2048].map { s in
            gemm("sgemm \(s)x\(s)x\(s)", m: s, n: s, k: s)
        }
        for layer in layers {
            let (m, n, k) = (layer.batch * layer.pixels, layer.outChannels, layer.patch)
            let stem = "sgemm \(layer.name).\(layer.form)"
            list.append(gemm("\(stem) b\(layer.batch) \(m)x\(n)x\(k)", m: m, n: n, k: k, transB: true))
            if layer.backward {
                if layer.dgrad {
                    list.append(gemm("\(stem).dgrad b\(layer.batch) \(m)x\(k)x\(n)", m: m, n: k, k: n))
                }
                list.append(gemm("\(stem).wgrad b\(layer.batch) \(n)x\(k)x\(m)", m: n, n: k, k: m, transA: true))
            }
        }
        return list
    }

    struct Layer {
        var name: String, form = "im2col", batch: Int
        var pixels: Int, outChannels: Int, patch: Int
        /// Also time the backward GEMMs (training shapes).
        var backward = false
        /// The stem has no input gradient to compute.
        var dgrad = true
    }

    /// ResNet-18 at batch 1 (inference) and 16 (training), CIFAR ResNet-20 at batch 128 (training),
    /// and the 1x1 convolutions of ResNet-50's bottlenecks at batch 1.
    static var layers: [Layer] {
        var out: [Layer] = []
        for batch in [1, 16] {
            let training = batch == 16
            out.append(Layer(name: "resnet18.conv1", batch: batch, pixels: 112 * 112, outChannels: 64,
                             patch: 3 * 49, backward: training, dgrad: false))
            for (stage, (c, hw)) in [(64, 56), (128, 28), (256, 14), (512, 7)].enumerated() {
                out.append(Layer(name: "resnet18.conv\(stage + 2)_x", batch: batch, pixels: hw * hw,
                                 outChannels: c, patch: 9 * c, backward: training))
            }
        }
        for (stage, (c, hw)) in [(16, 32), (32, 16), (64, 8)].enumerated() {
            out.append(Layer(name: "resnet20.stage\(stage + 1)", batch: 128, pixels: hw * hw,
                             outChannels: c, patch: 9 * c, backward: true))
        }
        out.append(Layer(name: "resnet50.conv2_x.reduce", form: "1x1", batch: 1, pixels: 56 * 56,
                         outChannels: 64, patch: 256))
        out.append(Layer(name: "resnet50.conv2_x.expand", form: "1x1", batch: 1, pixels: 56 * 56,
                         outChannels: 256, patch: 64))
        out.append(Layer(name: "resnet50.conv5_x.reduce", form: "1x1", batch: 1, pixels: 7 * 7,
                         outChannels: 512, patch: 2048))
        return out
    }

    /// `C[m, n] = op(A) op(B)` with row-major operands and tight leading dimensions.
    static func gemm(_ name: String, m: Int, n: Int, k: Int, transA: Bool = false,
                     transB: Bool = false) -> Benchmark {
        Benchmark(name: name) { threads in
            let a = Buffer(count: m * k, seed: 1), b = Buffer(count: k * n, seed: 2)
            let c = Buffer(count: m * n, seed: 3)
            return Prepared(flops: 2 * Double(m) * Double(n) * Double(k)) {
                sgemm(transA: transA, transB: transB, m: m, n: n, k: k,
                      a: a.pointer, lda: transA ? m : k, b: b.pointer, ldb: transB ? k : n,
                      c: c.pointer, ldc: n, threads: threads)
            }
        }
    }
}
