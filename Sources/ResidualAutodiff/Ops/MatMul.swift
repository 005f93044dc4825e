import ResidualKernels

// Matrix products: matmul (2-D and batched) and linear (PyTorch's x·Wᵀ + b), on the SGEMM kernel.

/// `C = op(A)·op(B)` for row-major tensors; a thin wrapper over the kernel.
func gemm(_ a: Tensor, transA: Bool, _ b: Tensor, transB: Bool, m: Int, n: Int, k: Int,
          aOffset: Int = 0, bOffset: Int = 0, into c: UnsafeMutablePointer<Float>, beta: Float = 0) {
    sgemm(transA: transA, transB: transB, m: m, n: n, k: k,
          a: a.storage.pointer + aOffset, lda: transA ? m : k,
          b: b.storage.pointer + bOffset, ldb: transB ? k : n,
          beta: beta, c: c, ldc: n)
}

/// Matrix product. `[m, k] x [k, n] -> [m, n]`; batched `[b, m, k] x [b, k, n] -> [b, m, n]`;
/// `[b, m, k] x [k, n]` shares the right-hand matrix across the batch.
public func matmul(_ a: Tensor, _ b: Tensor) -> Tensor {
    let message = "matmul: \(describe(a.shape)) x \(describe(b.shape))"
    shapeCheck((a.rank == 2 || a.rank == 3) && (b.rank == 2 || b.rank == 3) && !(a.rank == 2 && b.rank == 3), message)
    let batch = a.rank == 3 ? a.shape[0] : 1
    let m = a.shape[a.rank - 2], k = a.shape[a.rank - 1]
    let n = b.shape[b.rank - 1]
    shapeCheck(b.shape[b.rank - 2] == k, message)
    shapeCheck(b.rank == 2 || b.shape[0] == batch, message)
    let sharedB = b.rank == 2
    if sharedB {
        // One GEMM over all rows of the batch: [b*m, k] x [k, n].
        let y = Tensor(shape: a.shape.dropLast() + [n]) { c in
            gemm(a, transA: false, b, transB: false, m: batch * m, n: n, k: k, into: c.baseAddress!)
        }
        let (ca, cb) = (a.detached, b.detached)
        return Tape.recordOp(y, inputs: [a, b]) { g, needs in
            [needs[0] ? Tensor(shape: ca.shape) { gx in
                gemm(g, transA: false, cb, transB: true, m: batch * m, n: k, k: n, into: gx.baseAddress!) } : nil,
             needs[1] ? Tensor(shape: cb.shape) { gw in
                gemm(ca, transA: true, g, transB: false, m: k, n: n, k: batch * m, into: gw.baseAddress!) } : nil]
        }
    }
    let y = Tensor(shape: [batch, m, n]) { c in
        for i in 0..<batch {
            gemm(a, transA: false, b, transB: false, m: m, n: n, k: k,
                 aOffset: i * m * k, bOffset: i * k * n, into: c.baseAddress! + i * m * n)
        }
    }
    let (ca, cb) = (a.detached, b.detached)
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        [needs[0] ? Tensor(shape: ca.shape) { gx in
            for i in 0..<batch {
                gemm(g, transA: false, cb, transB: true, m: m, n: k, k: n,
                     aOffset: i * m * n, bOffset: i * k * n, into: gx.baseAddress! + i * m * k)
            } } : nil,
         needs[1] ? Tensor(shape: cb.shape) { gw in
            for i in 0..<batch {
                gemm(ca, transA: true, g, transB: false, m: k, n: n, k: m,
                     aOffset: i * m * k, bOffset: i * m * n, into: gw.baseAddress! + i * k * n)
            } } : nil]
    }
}

/// Up to this many rows, `linear` runs `linearFewRows` (one pass over the weight) instead of SGEMM
/// (which packs the whole weight first): a classifier head at inference batch 1-8.
let linearFewRowsLimit = 8

/// Fully connected layer: `x[N, in] · weight[out, in]ᵀ + bias[out]` (PyTorch's weight layout).
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    let message = "linear: input \(describe(x.shape)), weight \(describe(weight.shape))" +
        (bias.map { ", bias \(describe($0.shape))" } ?? "")
    shapeCheck(x.rank == 2 && weight.rank == 2 && x.shape[1] == weight.shape[1], message)
    let n = x.shape[0], inF = x.shape[1], outF = weight.shape[0]
    if let bias { shapeCheck(bias.shape == [outF], message) }
    let y = Tensor(shape: [n, outF]) { c in
        let p = c.baseAddress!
        if n <= linearFewRowsLimit {
            linearFewRows(rows: n, inFeatures: inF, outFeatures: outF, x: x.storage.pointer,
                          weight: weight.storage.pointer, bias: bias.map { UnsafePointer($0.storage.pointer) }, y: p)
            return
        }
        if let bias {
            for i in 0..<n { (p + i * outF).update(from: bias.storage.pointer, count: outF) }
        }
        gemm(x, transA: false, weight, transB: true, m: n, n: outF, k: inF, into: p, beta: bias == nil ? 0 : 1)
    }
    let (cx, cw) = (x.detached, weight.detached)
    var inputs = [x, weight]
    if let bias { inputs.append(bias) }
    return Tape.recordOp(y, inputs: inputs) { g, needs in
        var grads: [Tensor?] = [
            needs[0] ? Tensor(shape: [n, inF]) { gx in
                gemm(g, transA: false, cw, transB: false, m: n, n: inF, k: outF, into: gx.baseAddress!) } : nil,
            needs[1] ? Tensor(shape: [outF, inF]) { gw in
                gemm(g, transA: true, cx, transB: false, m: outF, n: inF, k: n, into: gw.baseAddress!) } : nil,
        ]
        if needs.count == 3 { grads.append(needs[2] ? reduceSum(g, axes: [0]).reshaped([outF]) : nil) }
        return grads
    }
}
