import Foundation
import ResidualKernels

// Memory-layout plumbing: the untraced relayout that ops use on their inputs, and a log of
// conversions for tests and profiling. The traced, user-facing op is `Tensor.converted(to:)`
// (Ops/Movement.swift).

extension Tensor {
    /// The same logical values stored in `target` layout, untraced (no tape node): what an op
    /// calls on an input it cannot read in its current layout. Returns `self` when the layout
    /// already matches; shares the storage when both layouts have the same bytes (`C == 1` or
    /// `H·W == 1`); otherwise copies (a batched transpose).
    ///
    /// - Parameter op: who converts, for `LayoutConversionLog`.
    @usableFromInline
    func relaid(_ target: Layout, for op: StaticString) -> Tensor {
        if target == layout { return self }
        shapeCheck(rank == 4, "\(op): layout \(target) needs rank 4, got \(describe(shape))")
        let (n, c, hw) = (shape[0], shape[1], shape[2] * shape[3])
        if c == 1 || hw == 1 { return Tensor(shape: shape, layout: target, storage: rawStorage) }
        LayoutConversionLog.current?.record(op)
        let out = TensorStorage(uninitializedCount: count)
        if target == .channelsLast {
            transposeBatched(batch: n, rows: c, columns: hw, source: rawStorage.pointer, destination: out.pointer)
        } else {
            transposeBatched(batch: n, rows: hw, columns: c, source: rawStorage.pointer, destination: out.pointer)
        }
        return Tensor(shape: shape, layout: target, storage: out)
    }

    /// `relaid(.standard, for:)` for readability at the top of ops that are not layout-aware.
    @usableFromInline
    func standard(for op: StaticString) -> Tensor { relaid(.standard, for: op) }
}

/// Records every layout conversion that copies memory while it is the task's current log, by the
/// op that asked for it. Tests use it to prove that a network converts only where it should
/// (e.g. a channels-last ResNet converts nowhere but at its edges); profiling uses it to find
/// conversions that cost time.
///
/// ```swift
/// let log = LayoutConversionLog()
/// LayoutConversionLog.$current.withValue(log) { _ = model(x) }
/// print(log.counts)   // ["conv2d": 40, ...]
/// ```
public final class LayoutConversionLog: @unchecked Sendable {
    @TaskLocal public static var current: LayoutConversionLog?

    private let lock = NSLock()
    private var _counts: [String: Int] = [:]

    public init() {}

    func record(_ op: StaticString) {
        let key = "\(op)"
        lock.withLock { _counts[key, default: 0] += 1 }
    }

    /// Conversions by the op that asked for them.
    public var counts: [String: Int] { lock.withLock { _counts } }
    public var total: Int { counts.values.reduce(0, +) }
}
