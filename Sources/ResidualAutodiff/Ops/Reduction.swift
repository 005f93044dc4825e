import ResidualKernels

// Reductions over axes: sum, mean, max. `keepingDimensions` keeps reduced axes as size 1.

/// Normalises and checks an axis list (negative axes count from the end).
func normalizeAxes(_ axes: [Int], rank: Int, op: String) -> [Int] {
    let out = axes.map { $0 < 0 ? $0 + rank : $0 }
    for (a, o) in zip(axes, out) {
        shapeCheck(o >= 0 && o < rank, "\(op): axis \(a) out of range for rank \(rank)")
    }
    shapeCheck(Set(out).count == out.count, "\(op): repeated axis in \(axes)")
    return out.sorted()
}

/// Shape after reducing `axes` (size 1 there: the keep-dims shape).
func keptShape(_ shape: [Int], _ axes: [Int]) -> [Int] {
    shape.indices.map { axes.contains($0) ? 1 : shape[$0] }
}

/// Sum over `axes` (sorted, valid), result in keep-dims shape. Untraced kernel path.
func reduceSum(_ x: Tensor, axes: [Int]) -> Tensor {
    let x = x.standard(for: "sum")
    let outShape = keptShape(x.shape, axes)
    var outStrides = contiguousStrides(outShape)
    for a in axes { outStrides[a] = 0 }
    let loop = StridedLoop(shape: x.shape, strides: [contiguousStrides(x.shape), outStrides])
    let n = loop.inner, so = loop.innerStride(1)
    let px = x.storage.pointer
    return Tensor(shape: outShape) { out in
        let po = out.baseAddress!
        po.update(repeating: 0, count: out.count)
        if x.count == 0 { return }
        loop.forEachRow { o in
            if so == 0 { po[o[1]] += sum(n, px + o[0]) } else { axpy(n, 1, px + o[0], po + o[1]) }
        }
    }
}

/// Maximum over `axes`, keep-dims shape. Untraced kernel path.
func reduceMax(_ x: Tensor, axes: [Int]) -> Tensor {
    let x = x.standard(for: "max")
    let outShape = keptShape(x.shape, axes)
    var outStrides = contiguousStrides(outShape)
    for a in axes { outStrides[a] = 0 }
    let loop = StridedLoop(shape: x.shape, strides: [contiguousStrides(x.shape), outStrides])
    let n = loop.inner, so = loop.innerStride(1)
    let px = x.storage.pointer
    return Tensor(shape: outShape) { out in
        let po = out.baseAddress!
        po.update(repeating: -.infinity, count: out.count)
        if x.count == 0 { return }
        loop.forEachRow { o in
            let src = px + o[0], dst = po + o[1]
            if so == 0 {
                dst[0] = max(dst[0], maximum(n, src))
            } else {
                zip(n, dst, src, dst, { pointwiseMax($0, $1) }, { max($0, $1) })
            }
        }
    }
}

/// Sum over `axes` (all axes when nil).
public func sum(_ x: Tensor, axes: [Int]? = nil, keepingDimensions: Bool = false) -> Tensor {
    let ax = normalizeAxes(axes ?? Array(0..<x.rank), rank: x.rank, op: "sum")
    let kept = reduceSum(x, axes: ax)
    let shape = keepingDimensions ? kept.shape : x.shape.indices.filter { !ax.contains($0) }.map { x.shape[$0] }
    let y = kept.reshaped(shape)
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        [broadcastBinary(g.reshaped(kept.shape), Tensor(zeros: x.shape), op: "sum backward", { a, _ in a }, { a, _ in a })]
    }
}

/// Mean over `axes` (all axes when nil).
public func mean(_ x: Tensor, axes: [Int]? = nil, keepingDimensions: Bool = false) -> Tensor {
    let ax = normalizeAxes(axes ?? Array(0..<x.rank), rank: x.rank, op: "mean")
    let n = ax.reduce(1) { $0 * x.shape[$1] }
    return sum(x, axes: ax, keepingDimensions: keepingDimensions) * (1 / Float(max(n, 1)))
}

/// Maximum over `axes` (all axes when nil). The gradient is shared equally between tied maxima.
public func max(_ x: Tensor, axes: [Int]? = nil, keepingDimensions: Bool = false) -> Tensor {
    let ax = normalizeAxes(axes ?? Array(0..<x.rank), rank: x.rank, op: "max")
    shapeCheck(ax.allSatisfy { x.shape[$0] > 0 }, "max: cannot reduce an empty axis of \(describe(x.shape))")
    let kept = reduceMax(x, axes: ax)
    let shape = keepingDimensions ? kept.shape : x.shape.indices.filter { !ax.contains($0) }.map { x.shape[$0] }
    let y = kept.reshaped(shape)
    let cx = x.detached
    return Tape.recordOp(y, inputs: [x]) { g, _ in
        let mask = broadcastBinary(cx, kept, op: "max backward",
                                   { a, m in Vec(repeating: 1).replacing(with: 0, where: a .!= m) },
                                   { $0 == $1 ? 1 : 0 })
        let ties = reduceSum(mask, axes: ax)
        return [mask * (g.reshaped(kept.shape) / ties)]
    }
}
