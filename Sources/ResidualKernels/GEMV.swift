/// A fully connected layer for a few rows: `y[i, o] = bias[o] + Σ_k x[i, k] · w[o, k]` for
/// `i < rows`, with `w` in PyTorch's `[out, in]` layout.
///
/// Why not SGEMM: with one to a few rows (a classifier head at inference batch 1-8) the GEMM's
/// packing of the whole weight (2 MB for ResNet's 512 -> 1000) costs more than the arithmetic, which
/// is one pass over the weight. Here each weight row is read once, from memory, and dotted with every
/// input row (which stay in L1). Output features are split across threads; every output is summed in
/// the same order (two 16-lane accumulators over `k`, then their lanes, then the scalar tail), so the
/// result does not depend on the thread count.
public func linearFewRows(rows: Int, inFeatures k: Int, outFeatures: Int, x: UnsafePointer<Float>,
                          weight w: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          y: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    if rows == 0 || outFeatures == 0 { return }
    let out = UncheckedSendable(y)
    // About 64K multiply-adds per thread before a second thread is worth waking.
    let minimum = max(1, 65_536 / max(1, rows * k))
    parallelFor(outFeatures, minimumPerThread: minimum, threads: threads) { range in
        let y = out.value
        for o in range {
            let wr = w + o * k
            for i in 0..<rows {
                let xr = x + i * k
                var a0 = Vec(), a1 = Vec()
                var j = 0
                while j + 32 <= k {
                    a0 = a0.addingProduct(load(xr + j), load(wr + j))
                    a1 = a1.addingProduct(load(xr + j + 16), load(wr + j + 16))
                    j += 32
                }
                if j + 16 <= k {
                    a0 = a0.addingProduct(load(xr + j), load(wr + j))
                    j += 16
                }
                var s = (a0 + a1).sum()
                while j < k { s += xr[j] * wr[j]; j += 1 }
                y[i * outFeatures + o] = (bias?[o] ?? 0) + s
            }
        }
    }
}
