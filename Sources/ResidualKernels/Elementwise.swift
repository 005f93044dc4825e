/// Layout-agnostic element-wise kernels of the training hot path (ReLU, residual addition and
/// their backward passes): they treat a tensor as a flat run of `n` floats, so they serve NCHW
/// and channels-last storage alike. SIMD16 body, scalar tail, split over threads in blocks of
/// `elementwiseBlock` floats (no reductions, so any split gives the same bits).

/// Work per thread below which element-wise kernels stay on the calling thread: at ~16 floats
/// per cycle a block this size costs about a microsecond, the price of waking a worker.
@usableFromInline let elementwiseBlock = 16_384

@inlinable @inline(__always)
func forEachBlock(_ n: Int, threads: Int?, _ body: (_ start: Int, _ count: Int) -> Void) {
    let blocks = (n + elementwiseBlock - 1) / elementwiseBlock
    parallelFor(blocks, threads: threads) { range in
        let lo = range.lowerBound * elementwiseBlock
        let hi = min(n, range.upperBound * elementwiseBlock)
        body(lo, hi - lo)
    }
}

// The loops are written out rather than passed as closures to `map`/`zip`: a closure that is not
// inlined costs a call per 16 lanes (with the vector split across four xmm registers).

/// `y = max(x, 0)`.
public func reluForward(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let out = UncheckedSendable(y)
    forEachBlock(n, threads: threads) { s, k in
        let (src, dst) = (x + s, out.value + s)
        var i = 0
        while i + 16 <= k { let v = load(src + i); store(v.replacing(with: 0, where: v .< 0), dst + i); i += 16 }
        while i < k { dst[i] = max(src[i], 0); i += 1 }
    }
}

/// `dx = dy` where `y > 0`, else 0 (the gradient at 0 is 0, as in PyTorch). `y` is the forward output.
public func reluBackward(_ n: Int, _ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let out = UncheckedSendable(dx)
    forEachBlock(n, threads: threads) { s, k in
        let (g, v, dst) = (dy + s, y + s, out.value + s)
        var i = 0
        while i + 16 <= k { store(load(g + i).replacing(with: 0, where: load(v + i) .<= 0), dst + i); i += 16 }
        while i < k { dst[i] = v[i] > 0 ? g[i] : 0; i += 1 }
    }
}

/// `z = a + b`.
public func add(_ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>,
                threads: Int? = nil) {
    let out = UncheckedSendable(z)
    forEachBlock(n, threads: threads) { s, k in
        let (p, q, dst) = (a + s, b + s, out.value + s)
        var i = 0
        while i + 16 <= k { store(load(p + i) + load(q + i), dst + i); i += 16 }
        while i < k { dst[i] = p[i] + q[i]; i += 1 }
    }
}

/// `z = max(a + b, 0)`: a residual block's last step in one pass.
public func addReLU(_ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>,
                    threads: Int? = nil) {
    let out = UncheckedSendable(z)
    forEachBlock(n, threads: threads) { s, k in
        let (p, q, dst) = (a + s, b + s, out.value + s)
        var i = 0
        while i + 16 <= k {
            let v = load(p + i) + load(q + i)
            store(v.replacing(with: 0, where: v .< 0), dst + i)
            i += 16
        }
        while i < k { dst[i] = max(p[i] + q[i], 0); i += 1 }
    }
}

/// `y += x` (gradient accumulation).
public func accumulate(_ n: Int, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let out = UncheckedSendable(y)
    forEachBlock(n, threads: threads) { s, k in
        let (src, dst) = (x + s, out.value + s)
        var i = 0
        while i + 16 <= k { store(load(dst + i) + load(src + i), dst + i); i += 16 }
        while i < k { dst[i] += src[i]; i += 1 }
    }
}
