import ResidualKernels

// Batch normalization over axis 1 (channels) of [N, C, ...]: training mode (batch statistics,
// hand-written fused backward) and inference mode (running statistics, a per-channel affine map).
// `1 / sqrt(var + eps)`, so batch size 1 and constant channels stay finite.

private func checkBN(_ op: String, _ x: Tensor, _ tensors: [(String, Tensor?)]) -> (n: Int, c: Int, spatial: Int) {
    shapeCheck(x.rank >= 2, "\(op): input \(describe(x.shape)) has no channel axis")
    let c = x.shape[1]
    for (name, t) in tensors {
        if let t { shapeCheck(t.shape == [c], "\(op): \(name) \(describe(t.shape)) for input \(describe(x.shape))") }
    }
    return (x.shape[0], c, x.shape[2...].reduce(1, *))
}

/// Normalises each channel with the statistics of this batch, then applies `weight`/`bias`.
/// Returns the output (recorded on the tape) and the batch mean and *biased* variance per channel
/// (constants; the caller updates its running statistics from them).
public func batchNormTraining(_ x: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float)
    -> (output: Tensor, mean: Tensor, variance: Tensor) {
    let (n, c, spatial) = checkBN("batchNormTraining", x, [("weight", weight), ("bias", bias)])
    let m = n * spatial
    shapeCheck(m > 0, "batchNormTraining: input \(describe(x.shape)) has no elements per channel")
    var meanT = Tensor(zeros: [c]), varT = Tensor(zeros: [c]), invStd = Tensor(zeros: [c])
    let px = UncheckedSendable(x.storage.pointer)
    let pw = weight.map { UncheckedSendable(UnsafePointer($0.storage.pointer)) }
    let pb = bias.map { UncheckedSendable(UnsafePointer($0.storage.pointer)) }
    let y = Tensor(shape: x.shape) { out in
        let po = UncheckedSendable(out.baseAddress!)
        meanT.withUnsafeMutableBufferPointer { mp in
        varT.withUnsafeMutableBufferPointer { vp in
        invStd.withUnsafeMutableBufferPointer { ip in
            let (pm, pv, pi) = (UncheckedSendable(mp.baseAddress!), UncheckedSendable(vp.baseAddress!), UncheckedSendable(ip.baseAddress!))
            parallelFor(c) { channels in
                for ch in channels {
                    var s: Float = 0
                    for i in 0..<n { s += sum(spatial, px.value + (i * c + ch) * spatial) }
                    let mu = s / Float(m)
                    var ss: Float = 0
                    for i in 0..<n {
                        let p = px.value + (i * c + ch) * spatial
                        var acc = Vec()
                        var j = 0
                        let vmu = Vec(repeating: mu)
                        while j + 16 <= spatial {
                            let d = UnsafeRawPointer(p + j).loadUnaligned(as: Vec.self) - vmu
                            acc = acc.addingProduct(d, d); j += 16
                        }
                        var t = acc.sum()
                        while j < spatial { let d = p[j] - mu; t += d * d; j += 1 }
                        ss += t
                    }
                    let variance = ss / Float(m)
                    let inv = 1 / (variance + epsilon).squareRoot()
                    pm.value[ch] = mu; pv.value[ch] = variance; pi.value[ch] = inv
                    let scale = inv * (pw?.value[ch] ?? 1)
                    let shift = (pb?.value[ch] ?? 0) - mu * scale
                    let vs = Vec(repeating: scale), vb = Vec(repeating: shift)
                    for i in 0..<n {
                        let off = (i * c + ch) * spatial
                        map(spatial, px.value + off, po.value + off, { vb.addingProduct($0, vs) }, { $0 * scale + shift })
                    }
                }
            }
        }}}
    }
    let (cx, cmean, cinv, cw) = (x.detached, meanT, invStd, weight?.detached)
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    let hasW = weight != nil, hasB = bias != nil
    let out = Tape.recordOp(y, inputs: inputs) { g, needs in
        var gw = Tensor(zeros: [c]), gb = Tensor(zeros: [c])
        let pg = UncheckedSendable(g.storage.pointer), px = UncheckedSendable(cx.storage.pointer)
        let pm = UncheckedSendable(cmean.storage.pointer), pi = UncheckedSendable(cinv.storage.pointer)
        let pwc = cw.map { UncheckedSendable(UnsafePointer($0.storage.pointer)) }
        let gx = Tensor(shape: cx.shape) { gxp in
            let pgx = UncheckedSendable(gxp.baseAddress!)
            gw.withUnsafeMutableBufferPointer { gwp in
            gb.withUnsafeMutableBufferPointer { gbp in
                let (pgw, pgb) = (UncheckedSendable(gwp.baseAddress!), UncheckedSendable(gbp.baseAddress!))
                parallelFor(c) { channels in
                    for ch in channels {
                        let mu = pm.value[ch], inv = pi.value[ch]
                        // Σ dy and Σ dy·(x − μ). Centring before the product matters: the shortcut
                        // Σ dy·x − μ Σ dy cancels catastrophically when |μ| ≫ σ (deep train-mode nets
                        // then lose three digits of their gradients).
                        var sdy: Float = 0, sdyx: Float = 0
                        let vmu = Vec(repeating: mu)
                        for i in 0..<n {
                            let off = (i * c + ch) * spatial
                            let gp = pg.value + off, xp = px.value + off
                            var a0 = Vec(), a1 = Vec()
                            var j = 0
                            while j + 16 <= spatial {
                                let dy = UnsafeRawPointer(gp + j).loadUnaligned(as: Vec.self)
                                let xc = UnsafeRawPointer(xp + j).loadUnaligned(as: Vec.self) - vmu
                                a0 += dy; a1 = a1.addingProduct(dy, xc); j += 16
                            }
                            var s0 = a0.sum(), s1 = a1.sum()
                            while j < spatial { s0 += gp[j]; s1 += gp[j] * (xp[j] - mu); j += 1 }
                            sdy += s0; sdyx += s1
                        }
                        // Σ dy·x̂ = inv · Σ dy·(x − μ)
                        let dgamma = inv * sdyx, dbeta = sdy
                        pgw.value[ch] = dgamma; pgb.value[ch] = dbeta
                        let gamma = pwc?.value[ch] ?? 1
                        // dx = γ·inv·(dy − dβ/M − x̂·dγ/M), with x̂ = (x − μ)·inv
                        let k = gamma * inv, a = dbeta / Float(m), b = dgamma * inv / Float(m)
                        for i in 0..<n {
                            let off = (i * c + ch) * spatial
                            let gp = pg.value + off, xp = px.value + off, dp = pgx.value + off
                            for j in 0..<spatial { dp[j] = k * (gp[j] - a - (xp[j] - mu) * b) }
                        }
                    }
                }
            }}
        }
        var grads: [Tensor?] = [needs[0] ? gx : nil]
        var idx = 1
        if hasW { grads.append(needs[idx] ? gw : nil); idx += 1 }
        if hasB { grads.append(needs[idx] ? gb : nil) }
        return grads
    }
    return (out, meanT, varT)
}

/// Normalises with given (running) statistics: `(x − mean) / sqrt(variance + eps) · weight + bias`.
public func batchNormInference(_ x: Tensor, weight: Tensor?, bias: Tensor?, mean: Tensor, variance: Tensor,
                               epsilon: Float) -> Tensor {
    _ = checkBN("batchNormInference", x, [("weight", weight), ("bias", bias), ("mean", mean), ("variance", variance)])
    let c = x.shape[1]
    let inv = withoutTape { 1 / sqrt(variance.detached + epsilon) }
    let shape = [1, c] + [Int](repeating: 1, count: x.rank - 2)
    // Composed from broadcast ops: the gradient path is then automatic and checked like any other.
    var y = (x - mean.detached.reshaped(shape)) * inv.reshaped(shape)
    if let weight { y = y * weight.reshaped(shape) }
    if let bias { y = y + bias.reshaped(shape) }
    return y
}
