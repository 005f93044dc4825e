import ResidualKernels
#if canImport(Glibc)
import Glibc
#endif

// Element-wise ops: add, sub, mul, div (NumPy broadcasting), neg, exp, log, sqrt, pow, relu,
// sigmoid, tanh. Each op's forward and backward sit together; the loops are flat vector kernels.

// MARK: - Kernel plumbing (no tape here)

/// `f(a, b)` with broadcasting, computed row by row.
func broadcastBinary(_ a: Tensor, _ b: Tensor, op: String,
                     _ fv: (Vec, Vec) -> Vec, _ fs: (Float, Float) -> Float) -> Tensor {
    if a.shape == b.shape {
        return Tensor(shape: a.shape) { z in
            zip(a.count, a.storage.pointer, b.storage.pointer, z.baseAddress!, fv, fs)
        }
    }
    let shape = broadcastShape(a.shape, b.shape, op: op)
    let loop = StridedLoop(shape: shape, strides: [contiguousStrides(shape),
                                                   broadcastStrides(a.shape, to: shape),
                                                   broadcastStrides(b.shape, to: shape)])
    let n = loop.inner, sa = loop.innerStride(1), sb = loop.innerStride(2)
    let pa = a.storage.pointer, pb = b.storage.pointer
    return Tensor(shape: shape) { z in
        let pz = z.baseAddress!
        if shape.reduce(1, *) == 0 { return }
        loop.forEachRow { o in
            let x = pa + o[1], y = pb + o[2], out = pz + o[0]
            switch (sa, sb) {
            case (1, 1): zip(n, x, y, out, fv, fs)
            case (1, 0):
                let s = y[0], vs = Vec(repeating: s)
                map(n, x, out, { fv($0, vs) }, { fs($0, s) })
            case (0, 1):
                let s = x[0], vs = Vec(repeating: s)
                map(n, y, out, { fv(vs, $0) }, { fs(s, $0) })
            default:
                for i in 0..<n { out[i] = fs(x[i * sa], y[i * sb]) }
            }
        }
    }
}

/// `f(x)` element-wise.
func unary(_ x: Tensor, _ fv: (Vec) -> Vec, _ fs: (Float) -> Float) -> Tensor {
    Tensor(shape: x.shape) { z in map(x.count, x.storage.pointer, z.baseAddress!, fv, fs) }
}

/// Applies a scalar function lane by lane (for transcendental functions without a vector form).
@inline(__always)
func lanes(_ v: Vec, _ f: (Float) -> Float) -> Vec {
    var r = Vec()
    for i in 0..<16 { r[i] = f(v[i]) }
    return r
}

/// Sums `gradient` down to `shape`, undoing a broadcast.
func unbroadcast(_ gradient: Tensor, to shape: [Int]) -> Tensor {
    if gradient.shape == shape { return gradient }
    let lead = gradient.rank - shape.count
    var axes: [Int] = Array(0..<lead)
    for (i, n) in shape.enumerated() where n == 1 && gradient.shape[lead + i] != 1 { axes.append(lead + i) }
    return reduceSum(gradient, axes: axes).reshaped(shape)
}

// MARK: - Binary ops

public func + (a: Tensor, b: Tensor) -> Tensor {
    let y = broadcastBinary(a, b, op: "add", { $0 + $1 }, { $0 + $1 })
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        [needs[0] ? unbroadcast(g, to: a.shape) : nil, needs[1] ? unbroadcast(g, to: b.shape) : nil]
    }
}

public func - (a: Tensor, b: Tensor) -> Tensor {
    let y = broadcastBinary(a, b, op: "sub", { $0 - $1 }, { $0 - $1 })
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        [needs[0] ? unbroadcast(g, to: a.shape) : nil, needs[1] ? unbroadcast(-g, to: b.shape) : nil]
    }
}

public func * (a: Tensor, b: Tensor) -> Tensor {
    let y = broadcastBinary(a, b, op: "mul", { $0 * $1 }, { $0 * $1 })
    let (ca, cb) = (a.detached, b.detached)
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        [needs[0] ? unbroadcast(g * cb, to: a.shape) : nil, needs[1] ? unbroadcast(g * ca, to: b.shape) : nil]
    }
}

public func / (a: Tensor, b: Tensor) -> Tensor {
    let y = broadcastBinary(a, b, op: "div", { $0 / $1 }, { $0 / $1 })
    let (cb, cy) = (b.detached, y.detached)
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        let ga = g / cb
        return [needs[0] ? unbroadcast(ga, to: a.shape) : nil,
                needs[1] ? unbroadcast(-(ga * cy), to: b.shape) : nil]
    }
}

public func + (a: Tensor, b: Float) -> Tensor { a + Tensor(b) }
public func + (a: Float, b: Tensor) -> Tensor { Tensor(a) + b }
public func - (a: Tensor, b: Float) -> Tensor { a - Tensor(b) }
public func - (a: Float, b: Tensor) -> Tensor { Tensor(a) - b }
public func * (a: Tensor, b: Float) -> Tensor { a * Tensor(b) }
public func * (a: Float, b: Tensor) -> Tensor { Tensor(a) * b }
public func / (a: Tensor, b: Float) -> Tensor { a / Tensor(b) }
public func / (a: Float, b: Tensor) -> Tensor { Tensor(a) / b }

// MARK: - Unary ops

public prefix func - (x: Tensor) -> Tensor {
    let y = unary(x, { -$0 }, { -$0 })
    return Tape.recordOp(y, inputs: [x]) { g, _ in [-g] }
}

public func exp(_ x: Tensor) -> Tensor {
    let y = unary(x, { lanes($0, expf) }, expf)
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [g * cy] }
}

/// Natural logarithm.
public func log(_ x: Tensor) -> Tensor {
    let y = unary(x, { lanes($0, logf) }, logf)
    let cx = x.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [g / cx] }
}

public func sqrt(_ x: Tensor) -> Tensor {
    let y = unary(x, { $0.squareRoot() }, { $0.squareRoot() })
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [g / (2 * cy)] }
}

/// `x` raised to a constant power.
public func pow(_ x: Tensor, _ p: Float) -> Tensor {
    let y: Tensor
    if p == 2 {
        y = unary(x, { $0 * $0 }, { $0 * $0 })
    } else {
        y = unary(x, { lanes($0) { powf($0, p) } }, { powf($0, p) })
    }
    let cx = x.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [g * (p * pow(cx, p - 1))] }
}

/// `a` raised to the power `b`, element-wise with broadcasting (`a > 0` where `b` needs a gradient).
public func pow(_ a: Tensor, _ b: Tensor) -> Tensor {
    let y = broadcastBinary(a, b, op: "pow", { v, w in
        var r = Vec(); for i in 0..<16 { r[i] = powf(v[i], w[i]) }; return r
    }, powf)
    let (ca, cb, cy) = (a.detached, b.detached, y.detached)
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        [needs[0] ? unbroadcast(g * cb * pow(ca, cb - 1), to: a.shape) : nil,
         needs[1] ? unbroadcast(g * cy * log(ca), to: b.shape) : nil]
    }
}

/// `max(x, 0)`; the gradient at 0 is 0 (PyTorch's convention).
public func relu(_ x: Tensor) -> Tensor {
    let y = unary(x, { $0.replacing(with: 0, where: $0 .< 0) }, { max($0, 0) })
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        [broadcastBinary(g, cy, op: "relu backward",
                         { gv, yv in gv.replacing(with: 0, where: yv .<= 0) },
                         { $1 > 0 ? $0 : 0 })]
    }
}

public func sigmoid(_ x: Tensor) -> Tensor {
    let s: (Float) -> Float = { v in v >= 0 ? 1 / (1 + expf(-v)) : expf(v) / (1 + expf(v)) }
    let y = unary(x, { lanes($0, s) }, s)
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [g * cy * (1 - cy)] }
}

public func tanh(_ x: Tensor) -> Tensor {
    let y = unary(x, { lanes($0, tanhf) }, tanhf)
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [g * (1 - cy * cy)] }
}
