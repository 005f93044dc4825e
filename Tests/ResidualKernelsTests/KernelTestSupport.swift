import ResidualKernels

/// A seeded buffer of floats for kernel tests (no dependency on the autodiff module).
final class Buffer {
    let pointer: UnsafeMutablePointer<Float>
    let count: Int
    init(_ count: Int, seed: UInt64 = 1, lower: Float = -1, upper: Float = 1) {
        self.count = count
        pointer = .allocate(capacity: max(1, count))
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        for i in 0..<count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) * 0x1p-24
            pointer[i] = lower + (upper - lower) * u
        }
    }
    init(zeros count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(1, count))
        pointer.update(repeating: 0, count: max(1, count))
    }
    deinit { pointer.deallocate() }
    var values: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    subscript(_ i: Int) -> Float { pointer[i] }
}

/// max |a − b| / max(1e-30, max |b|) over two arrays of equal length.
func relativeDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var d: Float = 0, m: Float = 0
    for (x, y) in zip(a, b) { d = max(d, abs(x - y)); m = max(m, abs(y)) }
    return m == 0 ? d : d / m
}
