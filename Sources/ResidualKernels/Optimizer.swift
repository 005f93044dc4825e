/// Optimizer updates as flat SIMD passes over a parameter, its gradient and its state, split over
/// threads in blocks (`forEachBlock`). Each lane evaluates exactly the scalar expression of the
/// reference below it (same operations, same order, no fused multiply-add contraction), so results
/// are bit-identical to the scalar loops and independent of the thread count.

/// SGD in PyTorch's form: `d = g + wd·p`; with momentum `buf = d` on the first step, else
/// `buf = μ·buf + d`, then `p -= lr·buf` (Nesterov: `p -= lr·(d + μ·buf)`); without momentum
/// (`buffer == nil`) `p -= lr·d`.
public func sgdUpdate(_ n: Int, parameter: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
                      buffer: UnsafeMutablePointer<Float>?, learningRate lr: Float, momentum mu: Float,
                      weightDecay wd: Float, nesterov: Bool, firstStep: Bool, threads: Int? = nil) {
    let (pp, bp) = (UncheckedSendable(parameter), UncheckedSendable(buffer))
    let (vlr, vmu, vwd) = (Vec(repeating: lr), Vec(repeating: mu), Vec(repeating: wd))
    forEachBlock(n, threads: threads) { s, k in
        let (v, g) = (pp.value + s, gradient + s)
        guard let b0 = bp.value else {
            var i = 0
            while i + 16 <= k { let x = load(v + i); store(x - vlr * (load(g + i) + vwd * x), v + i); i += 16 }
            while i < k { v[i] -= lr * (g[i] + wd * v[i]); i += 1 }
            return
        }
        let b = b0 + s
        // Four specialised loops: the branches stay out of the vector body.
        @inline(__always) func run(_ first: Bool, _ nest: Bool) {
            var i = 0
            while i + 16 <= k {
                let x = load(v + i)
                let d = load(g + i) + vwd * x
                let nb = first ? d : vmu * load(b + i) + d
                store(nb, b + i)
                store(x - vlr * (nest ? d + vmu * nb : nb), v + i)
                i += 16
            }
            while i < k {
                let d = g[i] + wd * v[i]
                b[i] = first ? d : mu * b[i] + d
                v[i] -= lr * (nest ? d + mu * b[i] : b[i])
                i += 1
            }
        }
        switch (firstStep, nesterov) {
        case (true, true): run(true, true)
        case (true, false): run(true, false)
        case (false, true): run(false, true)
        case (false, false): run(false, false)
        }
    }
}

/// Adam in PyTorch's form (bias corrections `c1 = 1 − β1ᵗ`, `c2 = 1 − β2ᵗ` given): with `decoupled`
/// `p *= 1 − lr·wd` first (AdamW), else `g += wd·p`; `m = β1·m + (1 − β1)·g`,
/// `v = β2·v + (1 − β2)·g²`, `p -= (lr/c1)·m / (√v/√c2 + eps)`.
public func adamUpdate(_ n: Int, parameter: UnsafeMutablePointer<Float>, gradient: UnsafePointer<Float>,
                       m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, learningRate lr: Float,
                       beta1 b1: Float, beta2 b2: Float, epsilon eps: Float, weightDecay wd: Float,
                       decoupled: Bool, c1: Float, c2: Float, threads: Int? = nil) {
    let (pp, mp, vp) = (UncheckedSendable(parameter), UncheckedSendable(m), UncheckedSendable(v))
    let stepSize = lr / c1, c2root = c2.squareRoot(), decay = 1 - lr * wd
    let (vb1, vb2, va1, va2) = (Vec(repeating: b1), Vec(repeating: b2), Vec(repeating: 1 - b1), Vec(repeating: 1 - b2))
    let (vstep, vroot, veps, vwd, vdecay) = (Vec(repeating: stepSize), Vec(repeating: c2root), Vec(repeating: eps),
                                             Vec(repeating: wd), Vec(repeating: decay))
    forEachBlock(n, threads: threads) { s, k in
        let (x, g, mb, vb) = (pp.value + s, gradient + s, mp.value + s, vp.value + s)
        var i = 0
        while i + 16 <= k {
            var grad = load(g + i), xv = load(x + i)
            if decoupled { xv = xv * vdecay } else { grad = grad + vwd * xv }
            let nm = vb1 * load(mb + i) + va1 * grad
            let nv = vb2 * load(vb + i) + va2 * grad * grad
            store(nm, mb + i); store(nv, vb + i)
            store(xv - vstep * nm / (nv.squareRoot() / vroot + veps), x + i)
            i += 16
        }
        while i < k {
            var grad = g[i]
            if decoupled { x[i] *= decay } else { grad += wd * x[i] }
            mb[i] = b1 * mb[i] + (1 - b1) * grad
            vb[i] = b2 * vb[i] + (1 - b2) * grad * grad
            x[i] -= stepSize * mb[i] / (vb[i].squareRoot() / c2root + eps)
            i += 1
        }
    }
}
