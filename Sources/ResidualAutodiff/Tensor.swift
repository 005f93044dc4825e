/// A dense Float tensor: a logical shape (NCHW for images) and storage in one of two memory layouts.
///
/// `Tensor` is a value type. Storage is shared between copies and reshapes and copied before a
/// write unless uniquely referenced, so mutating one tensor never changes another. Reshape is O(1).
///
/// **Memory layout.** The shape is always logical (`[N, C, H, W]` for images, as in PyTorch). A
/// rank-4 tensor may store its elements channels-last (`[N, H, W, C]` in memory, PyTorch's
/// `memory_format=torch.channels_last`), which is what the convolution, batch-norm and pooling
/// kernels want; see `Layout`. Everything that reads or writes elements by index (`scalars`,
/// subscripts, `withUnsafeBufferPointer`, `description`) sees logical row-major (NCHW) order and
/// converts when needed. Raw memory is reached through `storage` (standard layout only: it traps
/// on a channels-last tensor, so code that is not layout-aware cannot misread one) or `rawStorage`
/// (either layout, for layout-aware kernels).
///
/// A tensor produced while a `Tape` records carries a `trace` (the tape's id and the index of the
/// node that produced it); that is how ops find the gradient path. Tensors made outside a recording,
/// and `Parameter.data`, carry none and are constants to the tape.
public struct Tensor: Sendable {
    public let shape: [Int]
    /// The buffer, in `layout` order.
    public private(set) var rawStorage: TensorStorage
    /// How the elements are ordered in `rawStorage`.
    public private(set) var layout: Layout
    /// Where this value sits on a tape, if it was recorded.
    public internal(set) var trace: Trace?

    /// The tape position of a recorded value.
    public struct Trace: Sendable, Equatable {
        public let tapeID: UInt64
        public let index: Int
    }

    /// The order of a tensor's elements in memory. The logical shape never changes with it.
    public enum Layout: Sendable, Equatable, CustomStringConvertible {
        /// Row-major in logical axis order (NCHW for images): PyTorch's `contiguous_format`.
        case standard
        /// Rank 4 only: logical `[N, C, H, W]` stored as `[N, H, W, C]` (PyTorch's `channels_last`).
        /// The channels of one pixel are adjacent, so per-channel work vectorises over channels.
        case channelsLast

        public var description: String { self == .standard ? "standard" : "channelsLast" }
    }

    /// The storage of a standard-layout tensor. Traps on a channels-last tensor: code that reads raw
    /// memory as row-major must first convert (`converted(to: .standard)`, or `relaid(.standard)`
    /// inside an op). Layout-aware kernels use `rawStorage`.
    public var storage: TensorStorage {
        if layout != .standard { Tensor.layoutMisuse(shape) }
        return rawStorage
    }

    @usableFromInline
    static func layoutMisuse(_ shape: [Int]) -> Never {
        fatalError("Tensor.storage: a channels-last tensor \(describe(shape)) was read as row-major; " +
                   "convert it first (converted(to: .standard)) or use rawStorage in layout-aware code")
    }

    /// Wraps existing storage (no copy). `storage.count` must equal the product of `shape`.
    public init(shape: [Int], storage: TensorStorage) {
        self.init(shape: shape, layout: .standard, storage: storage)
    }

    /// Wraps existing storage holding the elements in `layout` order (no copy).
    public init(shape: [Int], layout: Layout, storage: TensorStorage) {
        shapeCheck(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(describe(shape))")
        shapeCheck(shape.reduce(1, *) == storage.count,
                   "Tensor: shape \(describe(shape)) needs \(shape.reduce(1, *)) elements, storage has \(storage.count)")
        shapeCheck(layout == .standard || shape.count == 4,
                   "Tensor: layout \(layout) needs rank 4 ([N, C, H, W]), got shape \(describe(shape))")
        self.shape = shape
        self.rawStorage = storage
        self.layout = layout
        self.trace = nil
    }

    /// A tensor of the given shape holding `scalars` in row-major order (standard layout).
    public init(shape: [Int], scalars: [Float]) {
        shapeCheck(shape.reduce(1, *) == scalars.count,
                   "Tensor(shape:scalars:): shape \(describe(shape)) needs \(shape.reduce(1, *)) scalars, got \(scalars.count)")
        let s = TensorStorage(uninitializedCount: scalars.count)
        scalars.withUnsafeBufferPointer { s.pointer.update(from: $0.baseAddress!, count: scalars.count) }
        self.init(shape: shape, storage: s)
    }

    /// A rank-0 tensor.
    public init(_ scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    /// Every element `value`, stored in `layout` (the same bytes either way).
    public init(repeating value: Float, shape: [Int], layout: Layout = .standard) {
        self.init(shape: shape, layout: layout, storage: TensorStorage(repeating: value, count: shape.reduce(1, *)))
    }

    public init(zeros shape: [Int], layout: Layout = .standard) { self.init(repeating: 0, shape: shape, layout: layout) }
    public init(ones shape: [Int], layout: Layout = .standard) { self.init(repeating: 1, shape: shape, layout: layout) }

    /// A standard-layout tensor whose elements `body` writes in row-major order (all of them).
    public init(shape: [Int], initializingWith body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        self.init(shape: shape, layout: .standard, initializingWith: body)
    }

    /// A tensor whose elements `body` writes in `layout` order (all of them): for layout-aware ops.
    public init(shape: [Int], layout: Layout, initializingWith body: (UnsafeMutableBufferPointer<Float>) -> Void) {
        let n = shape.reduce(1, *)
        let s = TensorStorage(uninitializedCount: n)
        body(UnsafeMutableBufferPointer(start: s.pointer, count: n))
        self.init(shape: shape, layout: layout, storage: s)
    }

    public var rank: Int { shape.count }
    public var count: Int { rawStorage.count }
    /// The elements in logical row-major (NCHW) order, whatever the layout.
    public var scalars: [Float] { withUnsafeBufferPointer { Array($0) } }

    /// The single element of a one-element tensor.
    public var scalar: Float {
        shapeCheck(count == 1, "Tensor.scalar: shape \(describe(shape)) has \(count) elements, not 1")
        return rawStorage.pointer[0]
    }

    /// The same values without any tape trace: a constant to autodiff (PyTorch's `detach()`).
    /// The layout is kept.
    public var detached: Tensor { Tensor(shape: shape, layout: layout, storage: rawStorage) }

    /// Element offset of each logical axis in `rawStorage` (0 never occurs: sizes are positive).
    public var strides: [Int] {
        switch layout {
        case .standard: return contiguousStrides(shape)
        case .channelsLast:
            let (c, h, w) = (shape[1], shape[2], shape[3])
            return [h * w * c, 1, w * c, c]
        }
    }

    /// Element at a multi-index (slow; for tests and printing).
    public subscript(_ index: Int...) -> Float {
        get { rawStorage.pointer[storageOffset(index)] }
        set {
            let i = storageOffset(index)
            makeStorageUnique()
            rawStorage.pointer[i] = newValue
        }
    }

    /// Element at a logical row-major index (`scalars[index]`), in either layout (slow; for tests).
    public subscript(flat index: Int) -> Float {
        get { rawStorage.pointer[storageOffset(flat: index)] }
        set {
            let i = storageOffset(flat: index)
            makeStorageUnique()
            rawStorage.pointer[i] = newValue
        }
    }

    func storageOffset(_ index: [Int]) -> Int {
        shapeCheck(index.count == rank, "Tensor subscript: index of rank \(index.count) into shape \(describe(shape))")
        let st = strides
        var offset = 0
        for (d, i) in index.enumerated() {
            shapeCheck(i >= 0 && i < shape[d], "Tensor subscript: index \(index) out of range for shape \(describe(shape))")
            offset += i * st[d]
        }
        return offset
    }

    func storageOffset(flat index: Int) -> Int {
        shapeCheck(index >= 0 && index < count, "Tensor subscript: flat index \(index) out of range for shape \(describe(shape))")
        if layout == .standard { return index }
        var rest = index
        var multi = [Int](repeating: 0, count: rank)
        for d in stride(from: rank - 1, through: 0, by: -1) { multi[d] = rest % shape[d]; rest /= shape[d] }
        return storageOffset(multi)
    }

    /// Copy-on-write without changing the layout; a write makes the tensor a constant.
    mutating func makeStorageUnique() {
        if !isKnownUniquelyReferenced(&rawStorage) { rawStorage = rawStorage.copy() }
        trace = nil
    }

    /// Read access to the elements in logical row-major order. A channels-last tensor is copied to
    /// the standard layout first (O(n)); layout-aware code reads `rawStorage` instead.
    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        if layout != .standard { return try relaid(.standard, for: "withUnsafeBufferPointer").withUnsafeBufferPointer(body) }
        return try body(UnsafeBufferPointer(start: rawStorage.pointer, count: count))
    }

    /// Write access in logical row-major order; copies the storage first if it is shared
    /// (copy-on-write). A channels-last tensor becomes standard first. A write makes the tensor a
    /// constant: its trace is dropped.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        if layout != .standard { self = relaid(.standard, for: "withUnsafeMutableBufferPointer") }
        makeStorageUnique()
        return try body(UnsafeMutableBufferPointer(start: rawStorage.pointer, count: count))
    }
}

extension Tensor: CustomStringConvertible {
    /// Nested brackets like PyTorch's, eliding the middle of long dimensions, then the shape.
    public var description: String {
        var out = "tensor("
        let p = scalars
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
