/// Batch normalization kernels for both memory layouts, with an optional fused ReLU.
///
/// A tensor is viewed as `[outer, channels, inner]` (`ChannelView`): NCHW is `(N, C, H·W)`,
/// channels-last NHWC is `(N·H·W, C, 1)`, a `[N, C]` matrix is `(N, C, 1)`. Statistics are per
/// channel over the `outer · inner` elements.
///
/// - `inner == 1` (channels-last): the channels of one row are adjacent, so every loop runs over
///   16 channels at a time (SIMD16) down a strip of rows, with a scalar loop for the last
///   `C % 16` channels. Rows are cut into chunks whose size depends only on `C` (about 32 KiB, L1
///   resident); each chunk yields per-channel partial results, and the partials are combined
///   sequentially in chunk order. The result is therefore the same for any thread count.
/// - `inner > 1` (NCHW): each channel is `outer` contiguous planes; threads take whole channels,
///   and loops run along the plane (the summation order does not depend on the thread count).
///
/// Numerics: the variance is never `E[x²] − E[x]²`. Each chunk computes its mean and its centred
/// sum of squares in two passes over L1-resident data, and chunks are merged with Chan et al.'s
/// pairwise update (`M2 = M2a + M2b + δ²·na·nb/n`), so the whole statistic reads memory once and
/// stays accurate when |mean| ≫ std. The backward pass likewise accumulates `Σ dy·(x − μ)`, never
/// `Σ dy·x − μ·Σ dy`, which cancels catastrophically when |μ| ≫ σ.

/// `[outer, channels, inner]`: element `(o, c, i)` is at `(o · channels + c) · inner + i`.
public struct ChannelView: Sendable, Equatable {
    public var outer, channels, inner: Int
    public init(outer: Int, channels: Int, inner: Int) {
        self.outer = outer; self.channels = channels; self.inner = inner
    }
    /// Elements per channel (the batch-norm reduction size).
    public var perChannel: Int { outer * inner }
    public var count: Int { outer * channels * inner }
}

/// Rows per chunk of the channels-last reductions: about 32 KiB of input, at least 16 rows.
/// A function of `C` only, which is what makes the sums independent of the thread count.
@inline(__always)
func chunkRows(_ channels: Int) -> Int { max(16, 8192 / max(1, channels)) }

// MARK: - Statistics

/// Per-channel batch mean and biased variance of `x`.
public func batchNormStatistics(_ v: ChannelView, _ x: UnsafePointer<Float>, mean: UnsafeMutablePointer<Float>,
                                variance: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let c = v.channels
    if c == 0 { return }
    if v.perChannel == 0 {
        mean.update(repeating: 0, count: c); variance.update(repeating: 0, count: c)
        return
    }
    if v.inner > 1 {
        let pm = UncheckedSendable(mean), pv = UncheckedSendable(variance)
        parallelFor(c, threads: threads) { channels in
            for ch in channels {
                var s: Float = 0
                for o in 0..<v.outer { s += sum(v.inner, x + (o * c + ch) * v.inner) }
                let mu = s / Float(v.perChannel)
                var ss: Float = 0
                let vmu = Vec(repeating: mu)
                for o in 0..<v.outer {
                    let p = x + (o * c + ch) * v.inner
                    var acc = Vec()
                    var j = 0
                    while j + 16 <= v.inner { let d = load(p + j) - vmu; acc = acc.addingProduct(d, d); j += 16 }
                    var t = acc.sum()
                    while j < v.inner { let d = p[j] - mu; t += d * d; j += 1 }
                    ss += t
                }
                pm.value[ch] = mu
                pv.value[ch] = ss / Float(v.perChannel)
            }
        }
        return
    }
    // Channels-last: per-chunk mean and centred sum of squares, then Chan's merge in chunk order.
    let rows = v.outer, chunk = chunkRows(c)
    let chunks = (rows + chunk - 1) / chunk
    let partialMean = UnsafeMutablePointer<Float>.allocate(capacity: chunks * c)
    let partialM2 = UnsafeMutablePointer<Float>.allocate(capacity: chunks * c)
    defer { partialMean.deallocate(); partialM2.deallocate() }
    let (pm, pq) = (UncheckedSendable(partialMean), UncheckedSendable(partialM2))
    parallelFor(chunks, threads: threads) { range in
        for k in range {
            let r0 = k * chunk, nr = min(chunk, rows - r0)
            let base = x + r0 * c
            let inv = 1 / Float(nr)
            var c0 = 0
            while c0 + 16 <= c {
                let p = base + c0
                var s0 = Vec(), s1 = Vec()
                var r = 0
                while r + 2 <= nr { s0 += load(p + r * c); s1 += load(p + (r + 1) * c); r += 2 }
                if r < nr { s0 += load(p + r * c) }
                let m = (s0 + s1) * inv
                var q0 = Vec(), q1 = Vec()
                r = 0
                while r + 2 <= nr {
                    let d0 = load(p + r * c) - m, d1 = load(p + (r + 1) * c) - m
                    q0 = q0.addingProduct(d0, d0); q1 = q1.addingProduct(d1, d1); r += 2
                }
                if r < nr { let d = load(p + r * c) - m; q0 = q0.addingProduct(d, d) }
                store(m, pm.value + k * c + c0)
                store(q0 + q1, pq.value + k * c + c0)
                c0 += 16
            }
            for ch in c0..<c {
                var s: Float = 0
                for r in 0..<nr { s += base[r * c + ch] }
                let m = s * inv
                var q: Float = 0
                for r in 0..<nr { let d = base[r * c + ch] - m; q += d * d }
                pm.value[k * c + ch] = m
                pq.value[k * c + ch] = q
            }
        }
    }
    // Merge: (n, mean, M2) ⊕ (nb, meanb, M2b), vectorised over channels, chunks in order.
    var c0 = 0
    while c0 + 16 <= c {
        var n = Float(min(chunk, rows)), m = load(partialMean + c0), q = load(partialM2 + c0)
        for k in 1..<max(1, chunks) {
            let nb = Float(min(chunk, rows - k * chunk)), total = n + nb
            let d = load(partialMean + k * c + c0) - m
            m = m.addingProduct(d, Vec(repeating: nb / total))
            q = q + load(partialM2 + k * c + c0) + d * d * Vec(repeating: n * nb / total)
            n = total
        }
        store(m, mean + c0)
        store(q * (1 / n), variance + c0)
        c0 += 16
    }
    for ch in c0..<c {
        var n = Float(min(chunk, rows)), m = partialMean[ch], q = partialM2[ch]
        for k in 1..<max(1, chunks) {
            let nb = Float(min(chunk, rows - k * chunk)), total = n + nb
            let d = partialMean[k * c + ch] - m
            m += d * (nb / total)
            q += partialM2[k * c + ch] + d * d * (n * nb / total)
            n = total
        }
        mean[ch] = m
        variance[ch] = q / n
    }
}

// MARK: - Apply (forward normalisation)

/// `y = x · scale[c] + shift[c]`, then `max(·, 0)` if `relu`. Training mode passes
/// `scale = γ/√(σ²+ε)`, `shift = β − μ·scale`; inference mode the same with running statistics.
/// Every lane (vector or scalar tail) computes `fma(x, scale, shift)`, which the fused backward
/// pass recomputes bit for bit to find the ReLU mask.
public func batchNormApply(_ v: ChannelView, _ x: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                           shift: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, relu: Bool,
                           threads: Int? = nil) {
    if relu {
        applyAffine(v, x, scale, shift, y, threads, ReLUEpilogue())
    } else {
        applyAffine(v, x, scale, shift, y, threads, IdentityEpilogue())
    }
}

/// What follows the affine map in `batchNormApply` (a type parameter, so each loop is specialised).
/// `offset` is the element's index in the tensor, for epilogues that read a second operand there.
protocol Epilogue {
    func vector(_ offset: Int, _ v: Vec) -> Vec
    func scalar(_ offset: Int, _ s: Float) -> Float
}

struct IdentityEpilogue: Epilogue {
    @inline(__always) func vector(_ o: Int, _ v: Vec) -> Vec { v }
    @inline(__always) func scalar(_ o: Int, _ s: Float) -> Float { s }
}

struct ReLUEpilogue: Epilogue {
    @inline(__always) func vector(_ o: Int, _ v: Vec) -> Vec { v.replacing(with: 0, where: v .< 0) }
    @inline(__always) func scalar(_ o: Int, _ s: Float) -> Float { max(s, 0) }
}

/// `max(· + residual, 0)`: the block end of a residual network (``batchNormApplyAddReLU``).
struct AddReLUEpilogue: Epilogue {
    let residual: UnsafePointer<Float>
    @inline(__always) func vector(_ o: Int, _ v: Vec) -> Vec {
        let u = v + load(residual + o)
        return u.replacing(with: 0, where: u .< 0)
    }
    @inline(__always) func scalar(_ o: Int, _ s: Float) -> Float { max(s + residual[o], 0) }
}

func applyAffine<E: Epilogue>(_ v: ChannelView, _ x: UnsafePointer<Float>, _ scale: UnsafePointer<Float>,
                              _ shift: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ threads: Int?,
                              _ e: E) {
    let c = v.channels
    let out = UncheckedSendable(y)
    if v.inner > 1 {
        parallelFor(v.outer * c, minimumPerThread: max(1, 8192 / v.inner), threads: threads) { planes in
            for plane in planes {
                let ch = plane % c, off = plane * v.inner
                let a = scale[ch], b = shift[ch]
                let va = Vec(repeating: a), vb = Vec(repeating: b)
                var j = off
                let end = off + v.inner
                while j + 16 <= end { store(e.vector(j, vb.addingProduct(load(x + j), va)), out.value + j); j += 16 }
                while j < end { out.value[j] = e.scalar(j, b.addingProduct(x[j], a)); j += 1 }
            }
        }
        return
    }
    // Channels-last: row chunks split across threads; within a chunk, one 16-channel block at a
    // time walks down the rows with its scale and shift in registers (each row's block is one
    // cache line when C % 16 == 0).
    forEachRowChunk(v.outer, c, threads) { r0, r1 in
        var c0 = 0
        while c0 + 16 <= c {
            let vs = load(scale + c0), vb = load(shift + c0)
            var o = r0 * c + c0
            var r = r0
            while r + 2 <= r1 {
                store(e.vector(o, vb.addingProduct(load(x + o), vs)), out.value + o)
                store(e.vector(o + c, vb.addingProduct(load(x + o + c), vs)), out.value + o + c)
                o += 2 * c; r += 2
            }
            if r < r1 { store(e.vector(o, vb.addingProduct(load(x + o), vs)), out.value + o) }
            c0 += 16
        }
        if c0 < c {
            for r in r0..<r1 {
                let row = r * c
                for ch in c0..<c {
                    out.value[row + ch] = e.scalar(row + ch, shift[ch].addingProduct(x[row + ch], scale[ch]))
                }
            }
        }
    }
}

/// `y = max(x · scale[c] + shift[c] + residual, 0)`: the last batch norm of a residual block fused
/// with the shortcut addition and the ReLU (one pass reading `x` and `residual`, instead of a
/// normalisation pass writing a temporary and an add + ReLU pass reading it back). Every lane
/// computes `max(fma(x, scale, shift) + residual, 0)`, the bits of `batchNormApply` followed by
/// `addReLU`.
public func batchNormApplyAddReLU(_ v: ChannelView, _ x: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                  shift: UnsafePointer<Float>, residual: UnsafePointer<Float>,
                                  _ y: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    applyAffine(v, x, scale, shift, y, threads, AddReLUEpilogue(residual: residual))
}

/// Splits `rows` into chunks of `chunkRows(c)` rows across threads and calls `body(start, end)` per chunk.
@inline(__always)
func forEachRowChunk(_ rows: Int, _ c: Int, _ threads: Int?, _ body: (_ start: Int, _ end: Int) -> Void) {
    let chunk = chunkRows(c)
    parallelFor((rows + chunk - 1) / chunk, threads: threads) { range in
        for k in range { body(k * chunk, min(rows, (k + 1) * chunk)) }
    }
}

// MARK: - Backward

/// Where the backward pass reads the gradient of the normalised value: `dy` itself, or, after a
/// fused ReLU, `dy` where the forward's pre-activation `fma(x, scale, shift)` was positive. The
/// mask is recomputed from `x` (which the backward loads anyway) with the forward's own `fma`, so
/// it is bitwise the forward's `y > 0` and the forward output is never read: one stream less.
protocol BNGradient {
    func vector(_ offset: Int, x: Vec, scale: Vec, shift: Vec) -> Vec
    func scalar(_ offset: Int, x: Float, scale: Float, shift: Float) -> Float
}

struct PlainGradient: BNGradient {
    let dy: UnsafePointer<Float>
    @inline(__always) func vector(_ o: Int, x: Vec, scale: Vec, shift: Vec) -> Vec { load(dy + o) }
    @inline(__always) func scalar(_ o: Int, x: Float, scale: Float, shift: Float) -> Float { dy[o] }
}

struct ReLUMaskedGradient: BNGradient {
    let dy: UnsafePointer<Float>
    @inline(__always) func vector(_ o: Int, x: Vec, scale: Vec, shift: Vec) -> Vec {
        load(dy + o).replacing(with: 0, where: shift.addingProduct(x, scale) .<= 0)
    }
    @inline(__always) func scalar(_ o: Int, x: Float, scale: Float, shift: Float) -> Float {
        shift.addingProduct(x, scale) > 0 ? dy[o] : 0
    }
}

/// After `batchNormApplyAddReLU`: `dz = dy` where the block output `y` is positive (the ReLU of the
/// sum), which is also the shortcut's gradient; it is stored to `gz` as it is computed, so the
/// statistics pass writes the shortcut's gradient while it sums (each element is visited once).
struct OutputMaskedGradient: BNGradient {
    let dy: UnsafePointer<Float>, y: UnsafePointer<Float>, gz: UnsafeMutablePointer<Float>
    @inline(__always) func vector(_ o: Int, x: Vec, scale: Vec, shift: Vec) -> Vec {
        let d = load(dy + o).replacing(with: 0, where: load(y + o) .<= 0)
        store(d, gz + o)
        return d
    }
    @inline(__always) func scalar(_ o: Int, x: Float, scale: Float, shift: Float) -> Float {
        let d = y[o] > 0 ? dy[o] : 0
        gz[o] = d
        return d
    }
}

/// Gradients of `batchNormApplyAddReLU`'s `y = relu(bn(x) + residual)`: `residualGradient` (the
/// shortcut's, `dy` where `y > 0`; always written) and the batch-norm gradients of
/// `batchNormBackward` (each optional) for that masked gradient. Two passes over memory: the
/// first sums and writes the shortcut's gradient, the second writes `dx`.
public func batchNormBackwardAddReLU(_ v: ChannelView, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                     output y: UnsafePointer<Float>, mean: UnsafePointer<Float>,
                                     invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>?, training: Bool,
                                     residualGradient gz: UnsafeMutablePointer<Float>,
                                     dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                                     dbeta: UnsafeMutablePointer<Float>?, threads: Int? = nil) {
    if v.channels == 0 { return }
    let needSums = training && dx != nil || dgamma != nil || dbeta != nil
    let plain = PlainGradient(dy: UnsafePointer(gz))
    if needSums && v.perChannel > 0 {
        bnBackward(v, x, OutputMaskedGradient(dy: dy, y: y, gz: gz), plain, (mean, mean), mean, invStd, gamma,
                   training, dx, dgamma, dbeta, threads)
    } else {
        reluBackward(v.count, dy, y, gz, threads: threads)
        bnBackward(v, x, plain, plain, (mean, mean), mean, invStd, gamma, training, dx, dgamma, dbeta, threads)
    }
}

/// Gradients of batch normalization (optionally followed by a fused ReLU).
///
/// With `dz` the gradient of the normalised value (`dy`, masked by the ReLU when fused),
/// `x̂ = (x − μ)·inv`: `dγ = Σ dz·x̂`, `dβ = Σ dz`, and
/// - training mode (batch statistics): `dx = γ·inv·(dz − dβ/M − x̂·dγ/M)`;
/// - inference mode (constant statistics): `dx = γ·inv·dz`.
///
/// - Parameters:
///   - mean, invStd: the statistics the forward pass normalised with (`inv = 1/√(σ²+ε)`).
///   - gamma: the scale, or nil for 1.
///   - fusedReLU: when a ReLU was fused into the forward pass, the `scale` and `shift` it was given
///     (the ReLU mask is recomputed from them and `x`), else nil.
///   - dx, dgamma, dbeta: outputs, each optional (nil: not computed).
public func batchNormBackward(_ v: ChannelView, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                              mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>, gamma: UnsafePointer<Float>?,
                              training: Bool, fusedReLU: (scale: UnsafePointer<Float>, shift: UnsafePointer<Float>)?,
                              dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                              dbeta: UnsafeMutablePointer<Float>?, threads: Int? = nil) {
    let affine = fusedReLU ?? (mean, mean)   // unread by the plain path
    if fusedReLU != nil {
        let g = ReLUMaskedGradient(dy: dy)
        bnBackward(v, x, g, g, affine, mean, invStd, gamma, training, dx, dgamma, dbeta, threads)
    } else {
        let g = PlainGradient(dy: dy)
        bnBackward(v, x, g, g, affine, mean, invStd, gamma, training, dx, dgamma, dbeta, threads)
    }
}

/// `sumsGradient` gives `dz` to the statistics pass, `g` to the `dx` pass (the same values; the
/// fused add + ReLU reads back the masked gradient its statistics pass stored).
func bnBackward<S: BNGradient, G: BNGradient>(_ v: ChannelView, _ x: UnsafePointer<Float>, _ sumsGradient: S, _ g: G,
                               _ affine: (scale: UnsafePointer<Float>, shift: UnsafePointer<Float>),
                               _ mean: UnsafePointer<Float>, _ invStd: UnsafePointer<Float>,
                               _ gamma: UnsafePointer<Float>?, _ training: Bool,
                               _ dx: UnsafeMutablePointer<Float>?, _ dgamma: UnsafeMutablePointer<Float>?,
                               _ dbeta: UnsafeMutablePointer<Float>?, _ threads: Int?) {
    let c = v.channels
    if c == 0 { return }
    let needSums = training && dx != nil || dgamma != nil || dbeta != nil
    // Per channel: Σ dz and Σ dz·(x − μ).
    let sdz = UnsafeMutablePointer<Float>.allocate(capacity: c)
    let sdzx = UnsafeMutablePointer<Float>.allocate(capacity: c)
    defer { sdz.deallocate(); sdzx.deallocate() }
    sdz.update(repeating: 0, count: c); sdzx.update(repeating: 0, count: c)
    if needSums && v.perChannel > 0 { bnGradientSums(v, x, sumsGradient, affine, mean, sdz, sdzx, threads) }
    for ch in 0..<c {
        dgamma?[ch] = invStd[ch] * sdzx[ch]
        dbeta?[ch] = sdz[ch]
    }
    guard let dx, v.perChannel > 0 else { return }
    // dx = k·(dz − a − (x − μ)·b): k = γ·inv; training a = Σdz/M, b = inv²·Σdz(x−μ)/M; else a = b = 0.
    let k = UnsafeMutablePointer<Float>.allocate(capacity: 3 * c)
    defer { k.deallocate() }
    let a = k + c, b = k + 2 * c
    let m = Float(v.perChannel)
    for ch in 0..<c {
        let inv = invStd[ch]
        k[ch] = (gamma?[ch] ?? 1) * inv
        a[ch] = training ? sdz[ch] / m : 0
        b[ch] = training ? inv * inv * sdzx[ch] / m : 0
    }
    let (scale, shift) = affine
    let out = UncheckedSendable(dx)
    if v.inner > 1 {
        parallelFor(v.outer * c, minimumPerThread: max(1, 8192 / v.inner), threads: threads) { planes in
            for plane in planes {
                let ch = plane % c, off = plane * v.inner
                let (kk, aa, bb, mu, sc, sh) = (k[ch], a[ch], b[ch], mean[ch], scale[ch], shift[ch])
                let (vk, va, vb, vmu) = (Vec(repeating: kk), Vec(repeating: aa), Vec(repeating: bb), Vec(repeating: mu))
                let (vsc, vsh) = (Vec(repeating: sc), Vec(repeating: sh))
                let xp = x + off, dp = out.value + off
                var j = 0
                while j + 16 <= v.inner {
                    let xv = load(xp + j)
                    store(vk * (g.vector(off + j, x: xv, scale: vsc, shift: vsh) - va - (xv - vmu) * vb), dp + j)
                    j += 16
                }
                while j < v.inner {
                    dp[j] = kk * (g.scalar(off + j, x: xp[j], scale: sc, shift: sh) - aa - (xp[j] - mu) * bb)
                    j += 1
                }
            }
        }
        return
    }
    forEachRowChunk(v.outer, c, threads) { r0, r1 in
        var c0 = 0
        while c0 + 16 <= c {
            let (vk, va, vb, vmu) = (load(k + c0), load(a + c0), load(b + c0), load(mean + c0))
            let (vsc, vsh) = (load(scale + c0), load(shift + c0))
            for r in r0..<r1 {
                let off = r * c + c0
                let xv = load(x + off)
                store(vk * (g.vector(off, x: xv, scale: vsc, shift: vsh) - va - (xv - vmu) * vb), out.value + off)
            }
            c0 += 16
        }
        if c0 < c {
            for r in r0..<r1 {
                for ch in c0..<c {
                    let off = r * c + ch
                    let dz = g.scalar(off, x: x[off], scale: scale[ch], shift: shift[ch])
                    out.value[off] = k[ch] * (dz - a[ch] - (x[off] - mean[ch]) * b[ch])
                }
            }
        }
    }
}

/// `sdz[c] = Σ dz`, `sdzx[c] = Σ dz·(x − μ)` (outputs overwritten).
func bnGradientSums<G: BNGradient>(_ v: ChannelView, _ x: UnsafePointer<Float>, _ g: G,
                                   _ affine: (scale: UnsafePointer<Float>, shift: UnsafePointer<Float>),
                                   _ mean: UnsafePointer<Float>, _ sdz: UnsafeMutablePointer<Float>,
                                   _ sdzx: UnsafeMutablePointer<Float>, _ threads: Int?) {
    let c = v.channels
    let (scale, shift) = affine
    if v.inner > 1 {
        let (p0, p1) = (UncheckedSendable(sdz), UncheckedSendable(sdzx))
        parallelFor(c, threads: threads) { channels in
            for ch in channels {
                let mu = mean[ch], vmu = Vec(repeating: mu)
                let (sc, sh) = (scale[ch], shift[ch])
                let (vsc, vsh) = (Vec(repeating: sc), Vec(repeating: sh))
                var s0: Float = 0, s1: Float = 0
                for o in 0..<v.outer {
                    let off = (o * c + ch) * v.inner, xp = x + off
                    var a0 = Vec(), a1 = Vec()
                    var j = 0
                    while j + 16 <= v.inner {
                        let xv = load(xp + j)
                        let d = g.vector(off + j, x: xv, scale: vsc, shift: vsh)
                        a0 += d; a1 = a1.addingProduct(d, xv - vmu); j += 16
                    }
                    var t0 = a0.sum(), t1 = a1.sum()
                    while j < v.inner {
                        let d = g.scalar(off + j, x: xp[j], scale: sc, shift: sh)
                        t0 += d; t1 += d * (xp[j] - mu); j += 1
                    }
                    s0 += t0; s1 += t1
                }
                p0.value[ch] = s0; p1.value[ch] = s1
            }
        }
        return
    }
    let rows = v.outer, chunk = chunkRows(c)
    let chunks = (rows + chunk - 1) / chunk
    let partial = UnsafeMutablePointer<Float>.allocate(capacity: 2 * chunks * c)
    defer { partial.deallocate() }
    let pp = UncheckedSendable(partial)
    parallelFor(chunks, threads: threads) { range in
        for k in range {
            let r0 = k * chunk, nr = min(chunk, rows - r0)
            let out0 = pp.value + 2 * k * c, out1 = out0 + c
            var c0 = 0
            while c0 + 16 <= c {
                let vmu = load(mean + c0), vsc = load(scale + c0), vsh = load(shift + c0)
                var a0 = Vec(), a1 = Vec(), b0 = Vec(), b1 = Vec()
                var r = r0
                while r + 2 <= r0 + nr {
                    let o0 = r * c + c0, o1 = o0 + c
                    let x0 = load(x + o0), x1 = load(x + o1)
                    let d0 = g.vector(o0, x: x0, scale: vsc, shift: vsh), d1 = g.vector(o1, x: x1, scale: vsc, shift: vsh)
                    a0 += d0; a1 += d1
                    b0 = b0.addingProduct(d0, x0 - vmu)
                    b1 = b1.addingProduct(d1, x1 - vmu)
                    r += 2
                }
                if r < r0 + nr {
                    let o = r * c + c0, xv = load(x + o), d = g.vector(o, x: xv, scale: vsc, shift: vsh)
                    a0 += d; b0 = b0.addingProduct(d, xv - vmu)
                }
                store(a0 + a1, out0 + c0)
                store(b0 + b1, out1 + c0)
                c0 += 16
            }
            for ch in c0..<c {
                let mu = mean[ch], sc = scale[ch], sh = shift[ch]
                var s0: Float = 0, s1: Float = 0
                for r in r0..<(r0 + nr) {
                    let o = r * c + ch, d = g.scalar(o, x: x[o], scale: sc, shift: sh)
                    s0 += d; s1 += d * (x[o] - mu)
                }
                out0[ch] = s0; out1[ch] = s1
            }
        }
    }
    for k in 0..<chunks {
        let p0 = partial + 2 * k * c
        accumulate(c, p0, into: sdz, threads: 1)
        accumulate(c, p0 + c, into: sdzx, threads: 1)
    }
}

// MARK: - Scalar references (tests)

/// Plain reference for `batchNormStatistics`: two passes in Double.
public func referenceBatchNormStatistics(_ v: ChannelView, _ x: UnsafePointer<Float>,
                                         mean: UnsafeMutablePointer<Float>, variance: UnsafeMutablePointer<Float>) {
    for ch in 0..<v.channels {
        var s = 0.0
        for o in 0..<v.outer { for i in 0..<v.inner { s += Double(x[(o * v.channels + ch) * v.inner + i]) } }
        let m = s / Double(max(1, v.perChannel))
        var q = 0.0
        for o in 0..<v.outer {
            for i in 0..<v.inner { let d = Double(x[(o * v.channels + ch) * v.inner + i]) - m; q += d * d }
        }
        mean[ch] = Float(m)
        variance[ch] = Float(q / Double(max(1, v.perChannel)))
    }
}

/// Plain reference for `batchNormApply`.
public func referenceBatchNormApply(_ v: ChannelView, _ x: UnsafePointer<Float>, scale: UnsafePointer<Float>,
                                    shift: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, relu: Bool) {
    for o in 0..<v.outer {
        for ch in 0..<v.channels {
            for i in 0..<v.inner {
                let e = (o * v.channels + ch) * v.inner + i
                let z = shift[ch].addingProduct(x[e], scale[ch])
                y[e] = relu ? max(z, 0) : z
            }
        }
    }
}

/// Plain reference for `batchNormBackward`, in Double (the ReLU mask from `fma(x, scale, shift) > 0`).
public func referenceBatchNormBackward(_ v: ChannelView, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                                       mean: UnsafePointer<Float>, invStd: UnsafePointer<Float>,
                                       gamma: UnsafePointer<Float>?, training: Bool,
                                       fusedReLU: (scale: UnsafePointer<Float>, shift: UnsafePointer<Float>)?,
                                       dx: UnsafeMutablePointer<Float>?, dgamma: UnsafeMutablePointer<Float>?,
                                       dbeta: UnsafeMutablePointer<Float>?) {
    func index(_ o: Int, _ ch: Int, _ i: Int) -> Int { (o * v.channels + ch) * v.inner + i }
    for ch in 0..<v.channels {
        let mu = Double(mean[ch]), inv = Double(invStd[ch]), gm = Double(gamma?[ch] ?? 1)
        func dz(_ e: Int) -> Double {
            guard let (scale, shift) = fusedReLU else { return Double(dy[e]) }
            return shift[ch].addingProduct(x[e], scale[ch]) > 0 ? Double(dy[e]) : 0
        }
        var sdz = 0.0, sdzxhat = 0.0
        for o in 0..<v.outer {
            for i in 0..<v.inner {
                let e = index(o, ch, i)
                sdz += dz(e); sdzxhat += dz(e) * (Double(x[e]) - mu) * inv
            }
        }
        dgamma?[ch] = Float(sdzxhat)
        dbeta?[ch] = Float(sdz)
        guard let dx else { continue }
        let m = Double(v.perChannel)
        for o in 0..<v.outer {
            for i in 0..<v.inner {
                let e = index(o, ch, i)
                let xhat = (Double(x[e]) - mu) * inv
                dx[e] = Float(training ? gm * inv * (dz(e) - sdz / m - xhat * sdzxhat / m) : gm * inv * dz(e))
            }
        }
    }
}
