#if canImport(Glibc)
import Glibc
#endif

/// Fused softmax cross-entropy over `rows` rows of `cols` logits (row-major, contiguous), with
/// integer labels and optional label smoothing `ε` (target `(1 − ε)·onehot + ε/C`).
///
/// Per row: the maximum `m` (SIMD16 reduction), `e_j = exp(x_j − m)` with ``vexp(_:)`` stored in
/// `probabilities` while their sum `s` accumulates, then `p_j = e_j / s`; the row's loss is
/// `−Σ q_j (x_j − lse)` with `lse = m + log s`, i.e. `(1 − ε)(lse − x_label) + ε(lse − mean x)`,
/// so no logarithm of a probability is ever taken (no `log 0`). Rows are processed in order on the
/// calling thread (a batch of logits is tiny next to a network) and the losses summed in Double,
/// so the result does not depend on the thread count.
///
/// - Returns: the sum of the rows' losses (divide by `rows` for the mean).
public func softmaxCrossEntropyForward(
    rows: Int, cols: Int, logits: UnsafePointer<Float>, labels: UnsafePointer<Int>,
    labelSmoothing eps: Float = 0, probabilities: UnsafeMutablePointer<Float>
) -> Double {
    var total = 0.0
    for r in 0..<rows {
        let x = logits + r * cols, p = probabilities + r * cols
        let m = maximum(cols, x)
        let s = expShiftedSum(cols, x, m, p)
        let lse = m + logf(s)
        runLanes(0, cols, Scale(p: p, factor: 1 / s))
        var loss = Double(1 - eps) * Double(lse - x[labels[r]])
        if eps > 0 { loss += Double(eps) * (Double(lse) - Double(sum(cols, x)) / Double(cols)) }
        total += loss
    }
    return total
}

/// The gradient of `scale · Σ_rows loss` with respect to the logits: `(p − q) · scale`, i.e.
/// `dx_j = (p_j − ε/C)·scale`, minus `(1 − ε)·scale` at the label. With `scale = 1/rows` this is
/// the gradient of the mean loss.
public func softmaxCrossEntropyBackward(
    rows: Int, cols: Int, probabilities: UnsafePointer<Float>, labels: UnsafePointer<Int>,
    labelSmoothing eps: Float = 0, scale: Float, gradient: UnsafeMutablePointer<Float>
) {
    let offset = eps / Float(cols)
    for r in 0..<rows {
        let d = gradient + r * cols
        runLanes(0, cols, ShiftScale(x: probabilities + r * cols, y: d, shift: offset, scale: scale))
        d[labels[r]] -= (1 - eps) * scale
    }
}

/// `p_j = exp(x_j − m)` for `j < n`; returns `Σ p_j`. The last `n % 16` elements go through one
/// SIMD16 padded with `-∞` (whose exponentials are exactly 0), so every element takes the same
/// `vexp` path.
@inline(__always)
func expShiftedSum(_ n: Int, _ x: UnsafePointer<Float>, _ m: Float, _ p: UnsafeMutablePointer<Float>) -> Float {
    let m16 = Vec(repeating: m)
    var acc = Vec()
    var i = 0
    while i + 16 <= n {
        let e = vexp(load(x + i) - m16)
        store(e, p + i); acc += e; i += 16
    }
    if i < n {
        let e = vexp(loadPartial(x + i, n - i, fill: -.infinity) - m16)
        storePartial(e, p + i, n - i); acc += e
    }
    return acc.sum()
}

/// `p *= factor`.
struct Scale: LaneKernel {
    let p: UnsafeMutablePointer<Float>, factor: Float
    @inline(__always)
    func apply<V: SIMD>(_ i: Int, _ count: Int, _ width: V.Type) where V.Scalar == Float {
        storePartial(loadPartial(p + i, count) as V * factor, p + i, count)
    }
}

/// `y = (x − shift) · scale`.
struct ShiftScale: LaneKernel {
    let x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>, shift: Float, scale: Float
    @inline(__always)
    func apply<V: SIMD>(_ i: Int, _ count: Int, _ width: V.Type) where V.Scalar == Float {
        storePartial((loadPartial(x + i, count) as V - shift) * scale, y + i, count)
    }
}

/// Scalar oracle (tests): probabilities and the summed loss, computed in Double with `exp`/`log`.
public func referenceSoftmaxCrossEntropy(
    rows: Int, cols: Int, logits: UnsafePointer<Float>, labels: UnsafePointer<Int>,
    labelSmoothing eps: Float = 0, probabilities: UnsafeMutablePointer<Double>
) -> Double {
    var total = 0.0
    for r in 0..<rows {
        let x = logits + r * cols, p = probabilities + r * cols
        var m = -Double.infinity
        for j in 0..<cols { m = Swift.max(m, Double(x[j])) }
        var s = 0.0
        for j in 0..<cols { p[j] = exp(Double(x[j]) - m); s += p[j] }
        for j in 0..<cols { p[j] /= s }
        let lse = m + log(s)
        for j in 0..<cols {
            let q = (j == labels[r] ? Double(1 - eps) : 0) + Double(eps) / Double(cols)
            total -= q * (Double(x[j]) - lse)
        }
    }
    return total
}
