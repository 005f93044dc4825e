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

/// Sum of `n` floats, 16 partial sums (pairwise-ish: far less rounding than a serial sum).
@inlinable
public func sum(_ n: Int, _ x: UnsafePointer<Float>) -> Float {
    var a0 = Vec(), a1 = Vec()
    var i = 0
    while i + 32 <= n { a0 += load(x + i); a1 += load(x + i + 16); i += 32 }
    while i + 16 <= n { a0 += load(x + i); i += 16 }
    var s = (a0 + a1).sum()
    while i < n { s += x[i]; i += 1 }
    return s
}
