/// Single-precision general matrix multiply, row-major:
/// `C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C`.
///
/// `op(A)` is `A` (stored `m x k`, leading dimension `lda`) or, with `transA`, `Aᵀ` where `A` is stored
/// `k x m`. Likewise for `B`. With `beta == 0`, `C` is overwritten without being read (it may hold NaN).
public func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int? = nil
) {
    if m == 0 || n == 0 { return }
    let cBox = UncheckedSendable(c)
    parallelFor(m, minimumPerThread: max(1, 4096 / max(1, n * max(1, k) / 64 + 1)), threads: threads) { rows in
        let c = cBox.value
        for i in rows {
            let ci = c + i * ldc
            if beta == 0 {
                ci.update(repeating: 0, count: n)
            } else if beta != 1 {
                for j in 0..<n { ci[j] *= beta }
            }
            if k == 0 || alpha == 0 { continue }
            if !transB {
                for p in 0..<k {
                    let aip = alpha * (transA ? a[p * lda + i] : a[i * lda + p])
                    if aip == 0 { continue }
                    axpy(n, aip, b + p * ldb, ci)
                }
            } else {
                let ai = UnsafeMutablePointer<Float>.allocate(capacity: k)
                defer { ai.deallocate() }
                for p in 0..<k { ai[p] = transA ? a[p * lda + i] : a[i * lda + p] }
                for j in 0..<n { ci[j] += alpha * dot(k, ai, b + j * ldb) }
            }
        }
    }
}

/// Plain triple loop, the oracle for `sgemm` in tests. Accumulates in Double.
public func referenceSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0
            for p in 0..<k {
                let x = transA ? a[p * lda + i] : a[i * lda + p]
                let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                s += Double(x) * Double(y)
            }
            let prior: Float = beta == 0 ? 0 : beta * c[i * ldc + j]
            c[i * ldc + j] = Float(Double(alpha) * s) + prior
        }
    }
}
