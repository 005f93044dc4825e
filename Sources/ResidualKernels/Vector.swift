/// Flat vector kernels over `n` contiguous floats: one SIMD16 path plus a scalar tail.
/// They know nothing of shapes; callers pass pointers and counts.

public typealias Vec = SIMD16<Float>

@inlinable @inline(__always)
func load(_ p: UnsafePointer<Float>) -> Vec {
    UnsafeRawPointer(p).loadUnaligned(as: Vec.self)
}

@inlinable @inline(__always)
func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec.self)
}

/// `y += alpha * x`
@inlinable
public func axpy(_ n: Int, _ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    var i = 0
    let va = Vec(repeating: alpha)
    while i + 16 <= n {
        store(load(y + i).addingProduct(va, load(x + i)), y + i)
        i += 16
    }
    while i < n { y[i] += alpha * x[i]; i += 1 }
}

/// `sum(x * y)`, accumulated in 16 lanes.
@inlinable
public func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
    var acc = Vec()
    var i = 0
    while i + 16 <= n {
        acc = acc.addingProduct(load(x + i), load(y + i))
        i += 16
    }
    var s = acc.sum()
    while i < n { s += x[i] * y[i]; i += 1 }
    return s
}

/// `z[i] = f(x[i])` with a vector body `fv` and a scalar tail `fs` that must agree.
@inlinable
public func map(
    _ n: Int, _ x: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>,
    _ fv: (Vec) -> Vec, _ fs: (Float) -> Float
) {
    var i = 0
    while i + 16 <= n { store(fv(load(x + i)), z + i); i += 16 }
    while i < n { z[i] = fs(x[i]); i += 1 }
}

/// `z[i] = f(x[i], y[i])` with a vector body and a scalar tail.
@inlinable
public func zip(
    _ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ z: UnsafeMutablePointer<Float>,
    _ fv: (Vec, Vec) -> Vec, _ fs: (Float, Float) -> Float
) {
    var i = 0
    while i + 16 <= n { store(fv(load(x + i), load(y + i)), z + i); i += 16 }
    while i < n { z[i] = fs(x[i], y[i]); i += 1 }
}

// MARK: - Narrower tails

/// Loads `count <= V.scalarCount` floats into the first lanes of a `V`, the other lanes `fill`.
@inlinable @inline(__always)
func loadPartial<V: SIMD>(_ p: UnsafePointer<Float>, _ count: Int, fill: Float = 0) -> V where V.Scalar == Float {
    if count == V.scalarCount { return UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    var v = V(repeating: fill)
    for l in 0..<count { v[l] = p[l] }
    return v
}

/// Stores the first `count <= V.scalarCount` lanes of `v`.
@inlinable @inline(__always)
func storePartial<V: SIMD>(_ v: V, _ p: UnsafeMutablePointer<Float>, _ count: Int) where V.Scalar == Float {
    if count == V.scalarCount { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self); return }
    for l in 0..<count { p[l] = v[l] }
}

/// An element-wise kernel body written once, generically over the vector width, so the same
/// formula serves the SIMD16 body and the SIMD8/SIMD4 tails (bit-identical lane for lane: every
/// lane computes the same IEEE operations in the same order).
protocol LaneKernel {
    /// Processes elements `i ..< i + count` (`count <= V.scalarCount`; fewer only in the last call).
    func apply<V: SIMD>(_ i: Int, _ count: Int, _ width: V.Type) where V.Scalar == Float
}

/// Runs `kernel` over `start ..< start + n`: SIMD16 while 16 remain, then one SIMD8 step, then
/// SIMD4 steps, the last one partial. Nothing is ever read or written past the end.
@inline(__always)
func runLanes<K: LaneKernel>(_ start: Int, _ n: Int, _ kernel: K) {
    var i = start
    let end = start + n
    while i + 16 <= end { kernel.apply(i, 16, SIMD16<Float>.self); i += 16 }
    if i + 8 <= end { kernel.apply(i, 8, SIMD8<Float>.self); i += 8 }
    while i < end {
        let c = min(4, end - i)
        kernel.apply(i, c, SIMD4<Float>.self)
        i += c
    }
}

// MARK: - Reductions

/// Sum of `n` floats: two SIMD16 accumulators, folded to SIMD8 and SIMD4 for the tails.
///
/// The order of additions depends on `n` only (never on threads). Its error bound is that of a
/// sum of about `n / 32 + 8` terms, far below a serial sum's `n` terms.
@inlinable
public func sum(_ n: Int, _ x: UnsafePointer<Float>) -> Float {
    var a0 = Vec(), a1 = Vec()
    var i = 0
    while i + 32 <= n { a0 += load(x + i); a1 += load(x + i + 16); i += 32 }
    if i + 16 <= n { a0 += load(x + i); i += 16 }
    let s16 = a0 + a1
    var s8 = s16.lowHalf + s16.highHalf
    if i + 8 <= n { s8 += loadPartial(x + i, 8); i += 8 }
    var s4 = s8.lowHalf + s8.highHalf
    while i < n { let c = min(4, n - i); s4 += loadPartial(x + i, c); i += c }
    return (s4.lowHalf + s4.highHalf).sum()
}

/// Mean of `n` floats (`sum / n`; NaN for `n == 0`, as PyTorch's mean of an empty tensor).
@inlinable
public func mean(_ n: Int, _ x: UnsafePointer<Float>) -> Float {
    sum(n, x) / Float(n)
}

/// Largest of `n` floats (`-infinity` for `n == 0`). Exact, so any order gives the same result;
/// NaN inputs are not propagated reliably (lanes compare with `<`).
@inlinable
public func maximum(_ n: Int, _ x: UnsafePointer<Float>) -> Float {
    var m0 = Vec(repeating: -.infinity), m1 = m0
    var i = 0
    while i + 32 <= n { m0 = vmax(m0, load(x + i)); m1 = vmax(m1, load(x + i + 16)); i += 32 }
    if i + 16 <= n { m0 = vmax(m0, load(x + i)); i += 16 }
    let m16 = vmax(m0, m1)
    var m8 = vmax(m16.lowHalf, m16.highHalf)
    if i + 8 <= n { m8 = vmax(m8, loadPartial(x + i, 8) as SIMD8<Float>); i += 8 }
    var m4 = vmax(m8.lowHalf, m8.highHalf)
    while i < n {
        let c = min(4, n - i)
        m4 = vmax(m4, loadPartial(x + i, c, fill: -.infinity) as SIMD4<Float>)
        i += c
    }
    let m2 = m4.lowHalf.replacing(with: m4.highHalf, where: m4.highHalf .> m4.lowHalf)
    return m2[1] > m2[0] ? m2[1] : m2[0]
}

/// Lane-wise maximum as a compare and blend, one overload per width: in a generic function the
/// comparison would bind to the protocol's lane-by-lane loop (the standard library's concrete
/// vector compare is only chosen for concrete types), and `pointwiseMax` stayed an out-of-line call.
@inlinable @inline(__always)
func vmax(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> { a.replacing(with: b, where: b .> a) }
@inlinable @inline(__always)
func vmax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: b .> a) }
@inlinable @inline(__always)
func vmax(_ a: SIMD4<Float>, _ b: SIMD4<Float>) -> SIMD4<Float> { a.replacing(with: b, where: b .> a) }

/// Scalar oracles for the reductions (tests): a serial sum in Double, and a plain maximum.
public func referenceSum(_ n: Int, _ x: UnsafePointer<Float>) -> Double {
    var s = 0.0
    for i in 0..<n { s += Double(x[i]) }
    return s
}

public func referenceMaximum(_ n: Int, _ x: UnsafePointer<Float>) -> Float {
    var m = -Float.infinity
    for i in 0..<n where x[i] > m { m = x[i] }
    return m
}

// MARK: - Exponential

/// `exp(x)` lane by lane, to within 2 ulp of the exact result for results above the smallest
/// normal float (x >= -87.33); below that it returns 0 instead of a subnormal. Above 88.72 it
/// returns +infinity; NaN gives NaN.
///
/// `x = n·ln2 + r` with `n = round(x / ln2)` and `|r| <= ln2/2` (ln2 split in two parts so `r` is
/// exact), `exp(r)` by a degree-6 polynomial (Cephes' `expf` coefficients), and `2ⁿ` built in the
/// exponent bits as `2^a · 2^b` (`a + b = n`, each in range even for n = 128 or -126). Rounding
/// and the conversion to integer use the `1.5·2²³` trick: pure bit operations, no trapping
/// float-to-int conversion. Why not `exp` per lane: that is 16 library calls per vector.
/// Concrete SIMD16 (generic code would bind the compares and blends to lane-by-lane loops); tails
/// pass a padded vector.
@inlinable @inline(__always)
public func vexp(_ x: SIMD16<Float>) -> SIMD16<Float> {
    typealias V = SIMD16<Float>
    let log2e: Float = 1.44269504088896341
    let ln2hi: Float = 0.693359375, ln2lo: Float = -2.12194440e-4
    let magic: Float = 12_582_912   // 1.5 · 2²³: adding it rounds to an integer in the low mantissa bits
    let big = V(repeating: 88.72283), small = V(repeating: -87.33654)
    var xc = x.replacing(with: 0, where: x .!= x)
    xc.replace(with: small, where: xc .< small)
    xc.replace(with: big, where: xc .> big)
    let t = xc * log2e + magic
    let n = t - magic
    let r = (xc - n * ln2hi) - n * ln2lo
    var p = V(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let e = (p * r) * r + r + 1
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- 0x4B40_0000
    let a = ni &>> 1, b = ni &- a
    let fa = unsafeBitCast((a &+ 127) &<< 23, to: V.self), fb = unsafeBitCast((b &+ 127) &<< 23, to: V.self)
    var out = (e * fa) * fb
    out.replace(with: 0, where: x .< small)
    out.replace(with: .infinity, where: x .> big)
    out.replace(with: x, where: x .!= x)
    return out
}
