/// A dense Float tensor: a shape and contiguous row-major storage (NCHW for images).
///
/// `Tensor` is a value type. Storage is shared between copies and reshapes and copied before a
/// write unless uniquely referenced, so mutating one tensor never changes another. Reshape is O(1).
///
/// A tensor produced while a `Tape` records carries a `trace` (the tape's id and the index of the
/// node that produced it); that is how ops find the gradient path. Tensors made outside a recording,
/// and `Parameter.data`, carry none and are constants to the tape.
public struct Tensor: Sendable {
    public let shape: [Int]
    public private(set) var storage: TensorStorage
    /// Where this value sits on a tape, if it was recorded.
    public internal(set) var trace: Trace?

    /// The tape position of a recorded value.
    public struct Trace: Sendable, Equatable {
        public let tapeID: UInt64
        public let index: Int
    }

    /// Wraps existing storage (no copy). `storage.count` must equal the product of `shape`.
    public init(shape: [Int], storage: TensorStorage) {
        shapeCheck(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(describe(shape))")
        shapeCheck(shape.reduce(1, *) == storage.count,
                   "Tensor: shape \(describe(shape)) needs \(shape.reduce(1, *)) elements, storage has \(storage.count)")
        self.shape = shape
        self.storage = storage
        self.trace = nil
    }

    /// A tensor of the given shape holding `scalars` in row-major order.
    public init(shape: [Int], scalars: [Float]) {
        shapeCheck(shape.reduce(1, *) == scalars.count,
                   "Tensor(shape:scalars:): shape \(describe(shape)) needs \(shape.reduce(1, *)) scalars, got \(scalars.count)")
        let s = TensorStorage(uninitializedCount: scalars.count)
        scalars.withUnsafeBufferPointer { s.pointer.update(from: $0.baseAddress!, count: scalars.count) }
        self.init(shape: shape, storage: s)
    }

    /// A rank-0 tensor.
    public init(_ scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    public init(repeating value: Float, shape: [Int]) {
        self.init(shape: shape, storage: TensorStorage(repeating: value, count: shape.reduce(1, *)))
    }

    public init(zeros shape: [Int]) { self.init(repeating: 0, shape: shape) }
    public init(ones shape: [Int]) { self.init(repeating: 1, shape: shape) }

    /// A tensor whose elements are written by `body` (it must write all of them).
    public init(shape: [Int], initializingWith body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let n = shape.reduce(1, *)
        let s = TensorStorage(uninitializedCount: n)
        body(UnsafeMutableBufferPointer(start: s.pointer, count: n))
        self.init(shape: shape, storage: s)
    }

    public var rank: Int { shape.count }
    public var count: Int { storage.count }
    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }

    /// The single element of a one-element tensor.
    public var scalar: Float {
        shapeCheck(count == 1, "Tensor.scalar: shape \(describe(shape)) has \(count) elements, not 1")
        return storage.pointer[0]
    }

    /// The same values without any tape trace: a constant to autodiff (PyTorch's `detach()`).
    public var detached: Tensor { Tensor(shape: shape, storage: storage) }

    /// Element at a multi-index (slow; for tests and printing).
    public subscript(_ index: Int...) -> Float {
        get { storage.pointer[flatIndex(index)] }
        set {
            let i = flatIndex(index)
            withUnsafeMutableBufferPointer { $0[i] = newValue }
        }
    }

    func flatIndex(_ index: [Int]) -> Int {
        shapeCheck(index.count == rank, "Tensor subscript: index of rank \(index.count) into shape \(describe(shape))")
        var flat = 0
        for (d, i) in index.enumerated() {
            shapeCheck(i >= 0 && i < shape[d], "Tensor subscript: index \(index) out of range for shape \(describe(shape))")
            flat = flat * shape[d] + i
        }
        return flat
    }

    /// Read access to the elements.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    /// Write access; copies the storage first if it is shared (copy-on-write). A write makes the
    /// tensor a constant: its trace is dropped.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        trace = nil
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }
}

extension Tensor: CustomStringConvertible {
    /// Nested brackets like PyTorch's, eliding the middle of long dimensions, then the shape.
    public var description: String {
        var out = "tensor("
        let p = storage.pointer
        func format(_ x: Float) -> String {
            if x == x.rounded(), abs(x) < 1e6 { return String(format4: x) }
            return String(format4: x)
        }
        func emit(_ dim: Int, _ offset: Int, _ indent: Int) {
            if dim == rank { out += format(p[offset]); return }
            let n = shape[dim]
            let stride = shape[(dim + 1)...].reduce(1, *)
            out += "["
            let elide = n > 6
            var first = true
            for i in 0..<n {
                if elide && i == 3 { out += ", ..."; continue }
                if elide && i > 3 && i < n - 3 { continue }
                if !first { out += dim == rank - 1 ? ", " : ",\n" + String(repeating: " ", count: indent + 1) }
                first = false
                emit(dim + 1, offset + i * stride, indent + 1)
            }
            out += "]"
        }
        if count == 0 { out += "[]" } else { emit(0, 0, 7) }
        out += ", shape: \(describe(shape)))"
        return out
    }
}

extension String {
    /// Four significant decimals, without Foundation's formatter.
    init(format4 x: Float) {
        if x.isNaN { self = "nan"; return }
        if x.isInfinite { self = x > 0 ? "inf" : "-inf"; return }
        let r = (Double(x) * 10_000).rounded() / 10_000
        if abs(r) >= 1e7 || (r != 0 && abs(r) < 1e-4) { self = "\(x)"; return }
        var s = String(r)
        if s.hasSuffix(".0") { s.removeLast(2) }
        self = s
    }
}
