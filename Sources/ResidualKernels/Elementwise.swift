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

/// `y = max(x, 0)`.
public func reluForward(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let out = UncheckedSendable(y)
    forEachBlock(n, threads: threads) { s, k in
        map(k, x + s, out.value + s, { $0.replacing(with: 0, where: $0 .< 0) }, { max($0, 0) })
    }
}

/// `dx = dy` where `y > 0`, else 0 (the gradient at 0 is 0, as in PyTorch). `y` is the forward output.
public func reluBackward(_ n: Int, _ dy: UnsafePointer<Float>, _ y: UnsafePointer<Float>,
                         _ dx: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let out = UncheckedSendable(dx)
    forEachBlock(n, threads: threads) { s, k in
        zip(k, dy + s, y + s, out.value + s, { g, v in g.replacing(with: 0, where: v .<= 0) }, { $1 > 0 ? $0 : 0 })
    }
}

/// `z = a + b`.
public func add(_ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>,
                threads: Int? = nil) {
    let out = UncheckedSendable(z)
    forEachBlock(n, threads: threads) { s, k in zip(k, a + s, b + s, out.value + s, { $0 + $1 }, { $0 + $1 }) }
}

/// `z = max(a + b, 0)`: a residual block's last step in one pass.
public func addReLU(_ n: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>,
                    threads: Int? = nil) {
    let out = UncheckedSendable(z)
    forEachBlock(n, threads: threads) { s, k in
        zip(k, a + s, b + s, out.value + s, { let v = $0 + $1; return v.replacing(with: 0, where: v .< 0) },
            { max($0 + $1, 0) })
    }
}

/// `y += x` (gradient accumulation).
public func accumulate(_ n: Int, _ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let out = UncheckedSendable(y)
    forEachBlock(n, threads: threads) { s, k in axpy(k, 1, x + s, out.value + s) }
}
