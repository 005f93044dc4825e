import ResidualKernels

/// Row-by-row iteration over up to three operands that share one logical shape but have their own
/// strides (0 along broadcast or reduced axes). Adjacent axes that are contiguous in every operand
/// are merged first, so `[N, C, H, W] + [1, C, 1, 1]` runs as N*C rows of H*W contiguous elements.
/// Element-wise kernels then work on whole rows.
struct StridedLoop {
    var shape: [Int]
    var strides: [[Int]]

    init(shape: [Int], strides: [[Int]]) {
        // Drop size-1 axes, then merge axis i into i+1 where every operand allows it.
        var s: [Int] = []
        var st: [[Int]] = Array(repeating: [], count: strides.count)
        for (d, n) in shape.enumerated() where n != 1 {
            s.append(n)
            for k in strides.indices { st[k].append(strides[k][d]) }
        }
        var i = s.count - 2
        while i >= 0 {
            if st.allSatisfy({ $0[i] == $0[i + 1] * s[i + 1] }) {
                s[i] *= s[i + 1]
                s.remove(at: i + 1)
                for k in st.indices { st[k][i] = st[k][i + 1]; st[k].remove(at: i + 1) }
            }
            i -= 1
        }
        if s.isEmpty { s = [1]; st = st.map { _ in [1] } }
        self.shape = s
        self.strides = st
    }

    var inner: Int { shape[shape.count - 1] }
    func innerStride(_ k: Int) -> Int { strides[k][shape.count - 1] }

    /// Calls `body(offsets)` once per row (all axes but the last), with each operand's element offset.
    func forEachRow(_ body: ([Int]) -> Void) {
        let outerRank = shape.count - 1
        var index = [Int](repeating: 0, count: outerRank)
        var offsets = [Int](repeating: 0, count: strides.count)
        let rows = shape[0..<outerRank].reduce(1, *)
        for _ in 0..<rows {
            body(offsets)
            var d = outerRank - 1
            while d >= 0 {
                index[d] += 1
                for k in offsets.indices { offsets[k] += strides[k][d] }
                if index[d] < shape[d] { break }
                for k in offsets.indices { offsets[k] -= strides[k][d] * shape[d] }
                index[d] = 0
                d -= 1
            }
        }
    }
}

/// Row-major strides of a contiguous shape.
func contiguousStrides(_ shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for d in stride(from: shape.count - 1, through: 0, by: -1) { s[d] = acc; acc *= shape[d] }
    return s
}

/// Strides of `shape` viewed in `outShape` (right-aligned, NumPy rules): 0 on broadcast axes.
func broadcastStrides(_ shape: [Int], to outShape: [Int]) -> [Int] {
    let own = contiguousStrides(shape)
    let lead = outShape.count - shape.count
    return outShape.indices.map { d in
        d < lead ? 0 : (shape[d - lead] == 1 && outShape[d] != 1 ? 0 : own[d - lead])
    }
}

/// The broadcast of two shapes (NumPy rules), or a fatal error naming the op and both shapes.
public func broadcastShape(_ a: [Int], _ b: [Int], op: String) -> [Int] {
    let r = max(a.count, b.count)
    return (0..<r).map { i in
        let x = i < r - a.count ? 1 : a[i - (r - a.count)]
        let y = i < r - b.count ? 1 : b[i - (r - b.count)]
        shapeCheck(x == y || x == 1 || y == 1, "\(op): shapes \(describe(a)) and \(describe(b)) do not broadcast")
        return x == 1 ? y : x
    }
}
