import ResidualAutodiff

/// A NaN or infinity where training needs finite numbers: in the loss, in a parameter's gradient,
/// or in a parameter or buffer about to be saved.
///
/// The message names the step and the first tensor affected, in state-dict order (the model's
/// order, the order of `namedParameters()`), e.g. `step 1234: loss is NaN` or
/// `step 1234: gradient of layer2.0.conv1.weight has 3 NaN (and 41 more tensors are non-finite)`.
public struct NumericFault: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Site: Equatable, Sendable {
        case loss
        /// The gradient of the named parameter.
        case gradient(String)
        /// The value of the named parameter or buffer.
        case value(String)
    }

    /// The training step (1-based: the step whose loss or gradient it is).
    public let step: Int
    public let site: Site
    public let nanCount: Int
    public let infinityCount: Int
    /// Further tensors of the same kind (gradients, or values) that are also non-finite.
    public let otherTensors: Int

    public init(step: Int, site: Site, nanCount: Int, infinityCount: Int, otherTensors: Int = 0) {
        self.step = step; self.site = site; self.nanCount = nanCount
        self.infinityCount = infinityCount; self.otherTensors = otherTensors
    }

    public var description: String {
        let counts = [nanCount > 0 ? "\(nanCount) NaN" : nil, infinityCount > 0 ? "\(infinityCount) Inf" : nil]
            .compactMap { $0 }.joined(separator: " and ")
        let more = otherTensors == 0 ? "" : otherTensors == 1 ? " (and 1 more tensor is non-finite)"
            : " (and \(otherTensors) more tensors are non-finite)"
        switch site {
        case .loss: return "step \(step): loss is \(nanCount > 0 ? "NaN" : "infinite")"
        case .gradient(let name): return "step \(step): gradient of \(name) has \(counts)\(more)"
        case .value(let name): return "step \(step): \(name) has \(counts)\(more)"
        }
    }
}

/// Finds NaN and infinity in the loss, the gradients and the weights of a training run.
///
/// The check is one vectorised pass per tensor that computes `Σ (x - x)`: zero when every element
/// is finite, NaN as soon as one is NaN or infinite. Unlike summing `x`, it cannot overflow, so it
/// never reports a finite tensor. Only a tensor that fails is counted element by element. For a
/// ResNet-20 (0.27 M parameters) a whole check costs about 0.1 ms, against tens of milliseconds per
/// training step, so it runs every step.
public enum NumericGuard {
    /// Whether every element is finite.
    public static func isFinite(_ t: Tensor) -> Bool {
        // Layout does not matter for a whole-tensor property: read the storage as it lies.
        let p = UnsafePointer(t.rawStorage.pointer), n = t.count
        var acc = SIMD16<Float>()
        var i = 0
        while i + 16 <= n {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
            acc += v - v
            i += 16
        }
        var tail: Float = 0
        while i < n { tail += p[i] - p[i]; i += 1 }
        return acc.sum() + tail == 0
    }

    /// The number of NaN and of infinite elements.
    public static func nonFiniteCounts(_ t: Tensor) -> (nan: Int, infinity: Int) {
        let p = UnsafePointer(t.rawStorage.pointer)
        var nan = 0, infinity = 0
        for i in 0..<t.count {
            if p[i].isNaN { nan += 1 } else if p[i].isInfinite { infinity += 1 }
        }
        return (nan, infinity)
    }

    /// The first problem of a step, in this order: the loss, then the gradients in parameter order.
    /// Parameters without a gradient (frozen, or unused by the step) are skipped.
    public static func check(step: Int, loss: Tensor, parameters: [(String, Parameter)]) -> NumericFault? {
        if !isFinite(loss) {
            let (nan, infinity) = nonFiniteCounts(loss)
            return NumericFault(step: step, site: .loss, nanCount: nan, infinityCount: infinity)
        }
        return firstNonFinite(step: step, parameters.compactMap { name, p in p.grad.map { (name, $0) } }) { .gradient($0) }
    }

    /// The first non-finite tensor of a state dict (weights and buffers), e.g. before it is saved.
    public static func check(step: Int, state: [(String, Tensor)]) -> NumericFault? {
        firstNonFinite(step: step, state) { .value($0) }
    }

    static func firstNonFinite(step: Int, _ tensors: [(String, Tensor)], _ site: (String) -> NumericFault.Site) -> NumericFault? {
        var first: (String, Tensor)?
        var others = 0
        for (name, t) in tensors where !isFinite(t) {
            if first == nil { first = (name, t) } else { others += 1 }
        }
        guard let (name, t) = first else { return nil }
        let (nan, infinity) = nonFiniteCounts(t)
        return NumericFault(step: step, site: site(name), nanCount: nan, infinityCount: infinity, otherTensors: others)
    }
}
