import Foundation

/// A trainable tensor: a reference type holding the value and its accumulated gradient.
///
/// Layers store parameters; optimizers collect them once and update them in place. Inside
/// `Tape.record`, reading `value` yields the parameter's leaf on the active tape, so ops know to send
/// it a gradient; `data` is the raw tensor, never traced (PyTorch's `.data`).
public final class Parameter: @unchecked Sendable {
    private let lock = NSLock()
    private var _data: Tensor
    private var _grad: Tensor?
    private var _requiresGrad: Bool
    private var _version = 0

    public init(_ data: Tensor, requiresGrad: Bool = true) {
        _data = data.detached
        _requiresGrad = requiresGrad
    }

    /// The current values, untraced.
    public var data: Tensor {
        get { lock.withLock { _data } }
        set {
            lock.withLock {
                shapeCheck(newValue.shape == _data.shape, "Parameter.data: cannot assign \(describe(newValue.shape)) to a parameter of shape \(describe(_data.shape))")
                _data = newValue.detached
                _version += 1
            }
        }
    }

    /// Counts the changes of `data` (assignments and `update`s): caches derived from the values
    /// (an inference plan's folded, packed weights) compare it to know when to rebuild.
    public var version: Int { lock.withLock { _version } }

    /// The accumulated gradient, or nil if no backward pass reached it since the last `zeroGrad`.
    public var grad: Tensor? {
        get { lock.withLock { _grad } }
        set { lock.withLock { _grad = newValue?.detached } }
    }

    /// A frozen parameter (`requiresGrad == false`) is a constant to the tape and gets no gradient.
    public var requiresGrad: Bool {
        get { lock.withLock { _requiresGrad } }
        set { lock.withLock { _requiresGrad = newValue } }
    }

    public var shape: [Int] { data.shape }
    public var count: Int { data.count }

    /// The value to compute with: traced on the active tape if one is recording.
    public var value: Tensor {
        let d = data
        guard requiresGrad, let tape = Tape.current else { return d }
        return tape.leaf(for: self, data: d)
    }

    public func zeroGrad() { grad = nil }

    func accumulateGradient(_ g: Tensor) {
        lock.withLock {
            shapeCheck(g.shape == _data.shape, "Parameter: gradient \(describe(g.shape)) for parameter \(describe(_data.shape))")
            if _grad == nil { _grad = g.detached } else { _grad!.accumulate(g) }
        }
    }

    /// Replaces the values in place with `body` (used by optimizers; copy-on-write keeps other
    /// holders of the old tensor unchanged).
    public func update(_ body: (inout Tensor) -> Void) {
        lock.withLock { body(&_data); _data = _data.detached; _version += 1 }
    }
}
