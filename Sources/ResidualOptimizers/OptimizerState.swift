import ResidualAutodiff

/// A problem with saved optimizer state (from a checkpoint, so untrusted): names the tensor and
/// both shapes.
public struct OptimizerStateError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension Optimizer {
    /// The optimizer's state as named tensors, like PyTorch's `optimizer.state_dict()`: per-parameter
    /// state under `<prefix>state.<i>.<name>` (`i` is the parameter's index in ``parameters``, e.g.
    /// `optimizer.state.3.momentum_buffer`, `optimizer.state.3.exp_avg`) and the step counter under
    /// `<prefix>step_count` as two floats (high and low 24 bits, exact up to 2⁴⁸ steps).
    /// The learning rate is not saved: it comes from the schedule, whose state the caller saves.
    public func stateDict(prefix: String = "optimizer.") -> [(String, Tensor)] {
        var out: [(String, Tensor)] = []
        let state = stateTensors()
        for i in state.keys.sorted() {
            for (name, t) in state[i]!.sorted(by: { $0.key < $1.key }) {
                out.append(("\(prefix)state.\(i).\(name)", t))
            }
        }
        let n = stepCount
        out.append(("\(prefix)step_count", Tensor(shape: [2], scalars: [Float(n >> 24), Float(n & 0xFF_FFFF)])))
        return out
    }

    /// Restores state saved by ``stateDict(prefix:)`` into an optimizer over the same parameters.
    /// Keys without `prefix` are ignored. Throws, changing nothing, if a key is malformed, names a
    /// parameter index out of range, has a shape other than its parameter's (scalar `step` entries
    /// excepted), or is state this kind of optimizer does not keep (e.g. Adam's `exp_avg` into SGD).
    public func loadStateDict(_ tensors: [String: Tensor], prefix: String = "optimizer.") throws(OptimizerStateError) {
        var state: [Int: [String: Tensor]] = [:]
        var steps: Int?
        for (key, t) in tensors where key.hasPrefix(prefix) {
            let rest = key.dropFirst(prefix.count)
            if rest == "step_count" {
                let s = t.scalars
                guard t.shape == [2], s.allSatisfy({ $0 >= 0 && $0 < 0x1p24 && $0 == $0.rounded() }) else {
                    throw OptimizerStateError("'\(key)': expected two whole numbers below 2^24, got \(describe(t.shape)) \(s.prefix(4))")
                }
                steps = Int(s[0]) << 24 | Int(s[1])
                continue
            }
            let parts = rest.split(separator: ".", maxSplits: 2).map(String.init)
            guard parts.count == 3, parts[0] == "state", let i = Int(parts[1]) else {
                throw OptimizerStateError("'\(key)': not optimizer state (expected \(prefix)state.<index>.<name>)")
            }
            guard parameters.indices.contains(i) else {
                throw OptimizerStateError("'\(key)': parameter index \(i) but the optimizer has \(parameters.count) parameters")
            }
            let expected = parts[2] == "step" ? [] : parameters[i].shape
            guard t.shape == expected else {
                throw OptimizerStateError("'\(key)': the checkpoint has \(describe(t.shape)), parameter \(i) needs \(describe(expected))")
            }
            state[i, default: [:]][parts[2]] = t
        }
        let previous = stateTensors(), previousSteps = stepCount
        loadStateTensors(state)
        let kept = stateTensors()
        for (i, entries) in state {
            for name in entries.keys where kept[i]?[name] == nil {
                loadStateTensors(previous)
                stepCount = previousSteps
                throw OptimizerStateError("'\(prefix)state.\(i).\(name)': \(type(of: self)) keeps no such state")
            }
        }
        if let steps { stepCount = steps }
    }
}
