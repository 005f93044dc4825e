import ResidualKernels
#if canImport(Glibc)
import Glibc
#endif

// Log-softmax and the fused, numerically stable softmax cross-entropy with integer labels.

/// `x − logΣexp(x)` along `axis`, computed with the maximum subtracted first.
public func logSoftmax(_ x: Tensor, axis: Int = -1) -> Tensor {
    let ax = normalizeAxes([axis], rank: x.rank, op: "logSoftmax")[0]
    if ax != x.rank - 1 {
        var perm = Array(0..<x.rank)
        perm.swapAt(ax, x.rank - 1)
        return permute(logSoftmax(permute(x, perm), axis: -1), perm)
    }
    let cols = x.shape[x.rank - 1], rows = x.count / max(cols, 1)
    let xs = x.standard(for: "logSoftmax")
    let y = Tensor(shape: x.shape) { out in
        for r in 0..<rows {
            let src = xs.storage.pointer + r * cols, dst = out.baseAddress! + r * cols
            var m = -Float.infinity
            for j in 0..<cols { m = max(m, src[j]) }
            var s: Float = 0
            for j in 0..<cols { s += expf(src[j] - m) }
            let lse = m + logf(s)
            for j in 0..<cols { dst[j] = src[j] - lse }
        }
    }
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        // dx = dy − softmax · Σ dy
        [Tensor(shape: cy.shape) { gx in
            for r in 0..<rows {
                let gp = g.storage.pointer + r * cols, yp = cy.storage.pointer + r * cols, dp = gx.baseAddress! + r * cols
                let s = sum(cols, gp)
                for j in 0..<cols { dp[j] = gp[j] - expf(yp[j]) * s }
            }
        }]
    }
}

/// Mean softmax cross-entropy of `logits[N, C]` against integer `labels` (each in `0..<C`).
/// With `labelSmoothing` ε the target is `(1 − ε)·onehot + ε/C`. Fused: the gradient is
/// `(softmax − target) / N`, with no log of a probability ever taken.
public func softmaxCrossEntropy(logits: Tensor, labels: [Int], labelSmoothing: Float = 0) -> Tensor {
    shapeCheck(logits.rank == 2 && logits.shape[0] == labels.count,
               "softmaxCrossEntropy: logits \(describe(logits.shape)), \(labels.count) labels")
    shapeCheck(labelSmoothing >= 0 && labelSmoothing <= 1, "softmaxCrossEntropy: label smoothing \(labelSmoothing) not in [0, 1]")
    let n = logits.shape[0], c = logits.shape[1]
    for (i, l) in labels.enumerated() {
        shapeCheck(l >= 0 && l < c, "softmaxCrossEntropy: label \(l) at index \(i) is not in 0..<\(c)")
    }
    let eps = labelSmoothing
    var probabilities = Tensor(zeros: [n, c])
    let xs = logits.standard(for: "softmaxCrossEntropy")
    let total = probabilities.withUnsafeMutableBufferPointer { pp in
        labels.withUnsafeBufferPointer { lp in
            softmaxCrossEntropyForward(rows: n, cols: c, logits: xs.storage.pointer, labels: lp.baseAddress!,
                                       labelSmoothing: eps, probabilities: pp.baseAddress!)
        }
    }
    let loss = Tensor(Float(total / Double(max(n, 1))))
    let probs = probabilities
    return Tape.recordOp(loss, inputs: [logits]) { g, _ in
        let scale = g.scalar / Float(max(n, 1))
        return [Tensor(shape: [n, c]) { gx in
            labels.withUnsafeBufferPointer { lp in
                softmaxCrossEntropyBackward(rows: n, cols: c, probabilities: probs.storage.pointer,
                                            labels: lp.baseAddress!, labelSmoothing: eps, scale: scale,
                                            gradient: gx.baseAddress!)
            }
        }]
    }
}
