import ResidualKernels

// Movement ops: layout conversion, reshape, permute, slice (with strides), concatenate, zero
// padding, and the option-A shortcut. Each is a (strided) copy forward and its adjoint backward.
// Only the layout conversion and the option-A shortcut read channels-last memory; the others
// convert their input to the standard layout first.

/// Copies the `shape`-shaped view of `src` (element `[i...]` at `srcOffset + Σ i·srcStrides`) into
/// `dst` at `dstOffset + Σ i·dstStrides`.
func stridedCopy(shape: [Int], src: UnsafePointer<Float>, srcOffset: Int, srcStrides: [Int],
                 dst: UnsafeMutablePointer<Float>, dstOffset: Int, dstStrides: [Int]) {
    if shape.contains(0) { return }
    let loop = StridedLoop(shape: shape, strides: [dstStrides, srcStrides])
    let n = loop.inner, sd = loop.innerStride(0), ss = loop.innerStride(1)
    loop.forEachRow { o in
        let d = dst + dstOffset + o[0], s = src + srcOffset + o[1]
        if sd == 1 && ss == 1 {
            d.update(from: s, count: n)
        } else {
            for i in 0..<n { d[i * sd] = s[i * ss] }
        }
    }
}

extension Tensor {
    /// The same logical values stored in `layout` (PyTorch's `x.contiguous(memory_format=...)`):
    /// a copy, recorded on the tape, whose gradient is converted back. Returns `self` when the
    /// layout already matches; O(1) when both layouts have the same bytes (`C == 1` or `H·W == 1`).
    /// - Precondition: `layout == .standard` or rank 4.
    public func converted(to layout: Layout) -> Tensor {
        shapeCheck(layout == .standard || rank == 4,
                   "converted(to:): layout \(layout) needs rank 4 ([N, C, H, W]), got \(describe(shape))")
        if layout == self.layout { return self }
        let y = relaid(layout, for: "converted(to:)")
        let original = self.layout
        return Tape.recordOp(y, inputs: [self]) { g, _ in [g.relaid(original, for: "converted(to:) backward")] }
    }

    /// The same elements under a new shape (O(1) for a standard tensor: storage is shared; a
    /// channels-last tensor is converted first unless the shape is unchanged). One dimension may be -1.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var shape = newShape
        if let i = shape.firstIndex(of: -1) {
            let known = shape.enumerated().filter { $0.offset != i }.reduce(1) { $0 * $1.element }
            shapeCheck(known > 0 && count % known == 0, "reshape: \(describe(self.shape)) to \(describe(newShape))")
            shape[i] = count / known
        }
        shapeCheck(shape.reduce(1, *) == count, "reshape: \(describe(self.shape)) to \(describe(newShape))")
        if shape == self.shape { return self }
        let y = Tensor(shape: shape, storage: standard(for: "reshape").rawStorage)
        let original = self.shape
        return Tape.recordOp(y, inputs: [self]) { g, _ in [g.reshaped(original)] }
    }

    /// Flattens all axes from `axis` on into one (`[N, C, H, W]` -> `[N, C*H*W]` for `axis: 1`).
    public func flattened(from axis: Int = 1) -> Tensor {
        reshaped(Array(shape[..<axis]) + [shape[axis...].reduce(1, *)])
    }
}

/// Reorders axes: output axis `i` is input axis `axes[i]` (PyTorch's `permute`).
public func permute(_ x: Tensor, _ axes: [Int]) -> Tensor {
    shapeCheck(axes.sorted() == Array(0..<x.rank), "permute: \(axes) is not a permutation of the axes of \(describe(x.shape))")
    let source = x.standard(for: "permute")
    let shape = axes.map { x.shape[$0] }
    let xs = contiguousStrides(x.shape)
    let y = Tensor(shape: shape) { out in
        stridedCopy(shape: shape, src: source.storage.pointer, srcOffset: 0, srcStrides: axes.map { xs[$0] },
                    dst: out.baseAddress!, dstOffset: 0, dstStrides: contiguousStrides(shape))
    }
    var inverse = [Int](repeating: 0, count: axes.count)
    for (i, a) in axes.enumerated() { inverse[a] = i }
    return Tape.recordOp(y, inputs: [x]) { g, _ in [permute(g, inverse)] }
}

/// Swaps the last two axes.
public func transposed(_ x: Tensor) -> Tensor {
    shapeCheck(x.rank >= 2, "transpose: needs rank >= 2, got \(describe(x.shape))")
    var axes = Array(0..<x.rank)
    axes.swapAt(x.rank - 1, x.rank - 2)
    return permute(x, axes)
}

/// `x[lower[0]..<upper[0] by stride[0], ...]` along every axis (`x[:, :, ::2, ::2]` is
/// `slice(x, lower: [0, 0, 0, 0], upper: x.shape, stride: [1, 1, 2, 2])`).
public func slice(_ x: Tensor, lower: [Int], upper: [Int], stride: [Int]? = nil) -> Tensor {
    let step = stride ?? [Int](repeating: 1, count: x.rank)
    shapeCheck(lower.count == x.rank && upper.count == x.rank && step.count == x.rank,
               "slice: bounds \(lower)..<\(upper) do not match the rank of \(describe(x.shape))")
    for d in 0..<x.rank {
        shapeCheck(step[d] >= 1 && 0 <= lower[d] && lower[d] <= upper[d] && upper[d] <= x.shape[d],
                   "slice: \(lower)..<\(upper) by \(step) out of range for \(describe(x.shape))")
    }
    let shape: [Int] = (0..<x.rank).map { (d: Int) -> Int in
        let span: Int = upper[d] - lower[d]
        return (span + step[d] - 1) / step[d]
    }
    let source = x.standard(for: "slice")
    let xs = contiguousStrides(x.shape)
    let offset: Int = zip(lower, xs).reduce(0) { (acc: Int, p: (Int, Int)) -> Int in acc + p.0 * p.1 }
    let srcStrides: [Int] = zip(xs, step).map { (a: Int, b: Int) -> Int in a * b }
    let y = Tensor(shape: shape) { out in
        stridedCopy(shape: shape, src: source.storage.pointer, srcOffset: offset, srcStrides: srcStrides,
                    dst: out.baseAddress!, dstOffset: 0, dstStrides: contiguousStrides(shape))
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        var gx = Tensor(zeros: xShape)
        gx.withUnsafeMutableBufferPointer { gxp in
            stridedCopy(shape: shape, src: g.storage.pointer, srcOffset: 0, srcStrides: contiguousStrides(shape),
                        dst: gxp.baseAddress!, dstOffset: offset, dstStrides: srcStrides)
        }
        return [gx]
    }
}

/// Joins tensors along `axis`; all other dimensions must agree.
public func concatenate(_ xs: [Tensor], axis: Int) -> Tensor {
    shapeCheck(!xs.isEmpty, "concatenate: no tensors")
    let rank = xs[0].rank
    let ax = axis < 0 ? axis + rank : axis
    shapeCheck(ax >= 0 && ax < rank, "concatenate: axis \(axis) out of range for rank \(rank)")
    for t in xs {
        shapeCheck(t.rank == rank && (0..<rank).allSatisfy { $0 == ax || t.shape[$0] == xs[0].shape[$0] },
                   "concatenate: \(describe(xs[0].shape)) and \(describe(t.shape)) along axis \(ax)")
    }
    var shape = xs[0].shape
    shape[ax] = xs.reduce(0) { $0 + $1.shape[ax] }
    let os = contiguousStrides(shape)
    var starts: [Int] = []
    let y = Tensor(shape: shape) { out in
        var start = 0
        for t in xs {
            starts.append(start)
            let source = t.standard(for: "concatenate")
            stridedCopy(shape: t.shape, src: source.storage.pointer, srcOffset: 0, srcStrides: contiguousStrides(t.shape),
                        dst: out.baseAddress!, dstOffset: start * os[ax], dstStrides: os)
            start += t.shape[ax]
        }
    }
    let shapes = xs.map(\.shape)
    return Tape.recordOp(y, inputs: xs) { g, needs in
        shapes.indices.map { i in
            guard needs[i] else { return nil }
            var lo = [Int](repeating: 0, count: rank), hi = shape
            lo[ax] = starts[i]; hi[ax] = starts[i] + shapes[i][ax]
            return withoutTape { slice(g, lower: lo, upper: hi) }
        }
    }
}

/// Zero padding: `padding[d] = (before, after)` elements added on axis `d`. Spatial padding of NCHW
/// is `[(0,0), (0,0), (p,p), (p,p)]`; the paper's option-A shortcut pads channels:
/// `[(0,0), (c,c), (0,0), (0,0)]`.
public func pad(_ x: Tensor, _ padding: [(before: Int, after: Int)]) -> Tensor {
    shapeCheck(padding.count == x.rank, "pad: \(padding.count) paddings for \(describe(x.shape))")
    shapeCheck(padding.allSatisfy { $0.before >= 0 && $0.after >= 0 }, "pad: negative padding for \(describe(x.shape))")
    let shape: [Int] = (0..<x.rank).map { (d: Int) -> Int in x.shape[d] + padding[d].before + padding[d].after }
    let os = contiguousStrides(shape)
    let offset: Int = (0..<x.rank).reduce(0) { (acc: Int, d: Int) -> Int in acc + padding[d].before * os[d] }
    let source = x.standard(for: "pad")
    let y = Tensor(shape: shape) { out in
        out.baseAddress!.update(repeating: 0, count: out.count)
        stridedCopy(shape: x.shape, src: source.storage.pointer, srcOffset: 0, srcStrides: contiguousStrides(x.shape),
                    dst: out.baseAddress!, dstOffset: offset, dstStrides: os)
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        [Tensor(shape: xShape) { gx in
            stridedCopy(shape: xShape, src: g.storage.pointer, srcOffset: offset, srcStrides: os,
                        dst: gx.baseAddress!, dstOffset: 0, dstStrides: contiguousStrides(xShape))
        }]
    }
}

/// The option-A shortcut of He et al. 2015 in one op: keep every `stride`-th pixel (rows and
/// columns `0, s, 2s, ...`) and add `before`/`after` zero channels:
/// `[N, C, H, W] -> [N, before + C + after, ⌈H/s⌉, ⌈W/s⌉]`. Layout-aware: a channels-last input
/// gives a channels-last output through one fused kernel; a standard input is `pad(slice(x))`.
public func subsampleAndPadChannels(_ x: Tensor, stride: Int, before: Int, after: Int) -> Tensor {
    shapeCheck(x.rank == 4 && stride >= 1 && before >= 0 && after >= 0,
               "subsampleAndPadChannels: input \(describe(x.shape)), stride \(stride), channels +\(before)/+\(after)")
    guard x.layout == .channelsLast else {
        var h = x
        if stride > 1 { h = slice(h, lower: [0, 0, 0, 0], upper: h.shape, stride: [1, 1, stride, stride]) }
        if before + after > 0 { h = pad(h, [(0, 0), (before, after), (0, 0), (0, 0)]) }
        return h
    }
    let (n, c, hh, ww) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
    let shape = [n, before + c + after, (hh + stride - 1) / stride, (ww + stride - 1) / stride]
    let y = Tensor(shape: shape, layout: .channelsLast) { out in
        subsampleAndPadChannelsNHWC(batch: n, height: hh, width: ww, channels: c, stride: stride, before: before,
                                    after: after, input: x.rawStorage.pointer, output: out.baseAddress!)
    }
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        let gc = g.relaid(.channelsLast, for: "subsampleAndPadChannels backward")
        return [Tensor(shape: [n, c, hh, ww], layout: .channelsLast) { gx in
            subsampleAndPadChannelsBackwardNHWC(batch: n, height: hh, width: ww, channels: c, stride: stride,
                                                before: before, after: after, gradOutput: gc.rawStorage.pointer,
                                                gradInput: gx.baseAddress!)
        }]
    }
}
