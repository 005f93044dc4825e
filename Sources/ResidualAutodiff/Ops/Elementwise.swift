import ResidualKernels
#if canImport(Glibc)
import Glibc
#endif

// Element-wise ops: add, sub, mul, div (NumPy broadcasting), neg, exp, log, sqrt, pow, relu,
// sigmoid, tanh, and the fused addReLU. Each op's forward and backward sit together; the loops are
// flat vector kernels.
//
// Layouts: unary ops, and binary ops on two operands of the same shape, run over raw memory and
// keep the layout (for two layouts, the right operand is converted to the left one's). A binary
// op that broadcasts converts channels-last operands to the standard layout first.

// MARK: - Kernel plumbing (no tape here)

/// `f(a, b)` with broadcasting, computed row by row. Same shapes: flat, in `a`'s layout.
func broadcastBinary(_ a: Tensor, _ b: Tensor, op: String,
                     _ fv: (Vec, Vec) -> Vec, _ fs: (Float, Float) -> Float) -> Tensor {
    if a.shape == b.shape {
        let bb = b.relaid(a.layout, for: "elementwise (mixed layouts)")
        return Tensor(shape: a.shape, layout: a.layout) { z in
            zip(a.count, a.rawStorage.pointer, bb.rawStorage.pointer, z.baseAddress!, fv, fs)
        }
    }
    let a = a.standard(for: "broadcast"), b = b.standard(for: "broadcast")
    let shape = broadcastShape(a.shape, b.shape, op: op)
    let loop = StridedLoop(shape: shape, strides: [contiguousStrides(shape),
                                                   broadcastStrides(a.shape, to: shape),
                                                   broadcastStrides(b.shape, to: shape)])
    let n = loop.inner, sa = loop.innerStride(1), sb = loop.innerStride(2)
    let pa = a.storage.pointer, pb = b.storage.pointer
    // `a` and `b` may be fresh conversions: keep them alive while their pointers are read.
    return withExtendedLifetime((a, b)) { Tensor(shape: shape) { z in
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
    } }
}

/// `f(x)` element-wise, in `x`'s layout.
func unary(_ x: Tensor, _ fv: (Vec) -> Vec, _ fs: (Float) -> Float) -> Tensor {
    Tensor(shape: x.shape, layout: x.layout) { z in map(x.count, x.rawStorage.pointer, z.baseAddress!, fv, fs) }
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
    let y: Tensor
    if a.shape == b.shape {
        // The residual addition: a parallel kernel, in a's layout.
        let bb = b.relaid(a.layout, for: "add (mixed layouts)")
        y = Tensor(shape: a.shape, layout: a.layout) { z in
            add(a.count, a.rawStorage.pointer, bb.rawStorage.pointer, z.baseAddress!)
        }
    } else {
        y = broadcastBinary(a, b, op: "add", { $0 + $1 }, { $0 + $1 })
    }
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

/// `max(x, 0)`, in `x`'s layout; the gradient at 0 is 0 (PyTorch's convention).
public func relu(_ x: Tensor) -> Tensor {
    let y = Tensor(shape: x.shape, layout: x.layout) { z in reluForward(x.count, x.rawStorage.pointer, z.baseAddress!) }
    let cy = y.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in [reluGradient(g, output: cy)] }
}

/// `g` where `output > 0`, else 0, in `output`'s layout.
func reluGradient(_ g: Tensor, output y: Tensor) -> Tensor {
    let g = g.relaid(y.layout, for: "relu backward")
    return Tensor(shape: y.shape, layout: y.layout) { d in
        reluBackward(y.count, g.rawStorage.pointer, y.rawStorage.pointer, d.baseAddress!)
    }
}

/// `relu(a + b)` in one pass over memory, forward and backward: the last step of a residual block.
/// Same shapes; the result has `a`'s layout.
public func addReLU(_ a: Tensor, _ b: Tensor) -> Tensor {
    shapeCheck(a.shape == b.shape, "addReLU: shapes \(describe(a.shape)) and \(describe(b.shape)) differ")
    let bb = b.relaid(a.layout, for: "addReLU (mixed layouts)")
    let y = Tensor(shape: a.shape, layout: a.layout) { z in
        ResidualKernels.addReLU(a.count, a.rawStorage.pointer, bb.rawStorage.pointer, z.baseAddress!)
    }
    let cy = y.detached
    return Tape.recordOp(y, inputs: [a, b]) { g, needs in
        let gz = reluGradient(g, output: cy)
        return [needs[0] ? gz : nil, needs[1] ? gz : nil]
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
