/// The heap buffer behind a tensor: `count` floats, 64-byte aligned (one zmm register, one cache line).
///
/// Storage is shared between tensors that are reshapes of one another; `Tensor` copies it before any
/// write unless it is uniquely referenced (copy-on-write), so users see value semantics.
public final class TensorStorage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    /// Uninitialised storage; callers must write every element before it is read.
    public init(uninitializedCount count: Int) {
        precondition(count >= 0, "TensorStorage: negative count \(count)")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(1, count))
    }

    public convenience init(repeating value: Float, count: Int) {
        self.init(uninitializedCount: count)
        pointer.initialize(repeating: value, count: count)
    }

    public func copy() -> TensorStorage {
        let s = TensorStorage(uninitializedCount: count)
        s.pointer.update(from: pointer, count: count)
        return s
    }

    deinit { pointer.deallocate() }
}
