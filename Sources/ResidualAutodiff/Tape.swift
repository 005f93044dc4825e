import Foundation
import ResidualKernels
import Synchronization

/// The backward rule of one recorded op: given the gradient of the loss with respect to the op's
/// output, return the gradient with respect to each input (in the order the inputs were recorded).
/// `needs[i]` is false when input `i` leads to nothing that wants a gradient; the rule may then
/// return `nil` for it and skip the work (a first convolution never computes its data gradient).
public typealias BackwardRule = (_ gradient: Tensor, _ needs: [Bool]) -> [Tensor?]

/// A backward rule that adds its contributions into the gradients accumulated so far for its inputs
/// (`accumulated[i]`, nil when nothing has arrived yet), instead of returning them to be added by
/// the tape in a separate pass: a convolution's backward-data writes `gradInput += convᵀ(g)` in its
/// own epilogue (`beta = 1`), so the residual input's gradient costs no extra pass over memory.
/// On return `accumulated[i]` must be the old value plus the contribution (or left unchanged when
/// `needs[i]` is false); a tensor in `accumulated` is uniquely referenced by the array when nothing
/// else holds it, so the rule may write into it in place after checking that with
/// `isKnownUniquelyReferenced`.
public typealias AccumulatingBackwardRule = (_ gradient: Tensor, _ needs: [Bool], _ accumulated: inout [Tensor?]) -> Void

/// A tape for reverse-mode automatic differentiation.
///
/// While `record { ... }` runs, every differentiable op whose inputs include a value recorded on this
/// tape (or a `Parameter`) appends a node: the indices of its inputs and its backward rule.
/// `backward(_:)` then walks the nodes once, in reverse order, with a loop (no recursion: ResNet-1202
/// records tens of thousands of nodes), adding up the gradient of every value that was used more than
/// once, and releasing each node, and the activations its rule captured, as soon as it has run.
///
/// The active tape is a task-local value, so each thread or task records onto its own tape: two
/// trainings can run at once. A tape is meant to be used by the thread that records on it; its
/// internal state is still guarded by a lock so that misuse cannot corrupt memory.
///
/// Outside `record`, or inside `withoutTape`, nothing is recorded and no backward rule (with the
/// activations it would capture) is kept: inference holds no intermediates.
public final class Tape: @unchecked Sendable {
    /// The tape that ops record onto on this thread or task, if any.
    @TaskLocal public static var current: Tape?

    private static let nextID = Atomic<UInt64>(1)

    struct Node {
        var inputs: [Int]
        var backward: BackwardRule?
        var accumulatingBackward: AccumulatingBackwardRule? = nil
        /// The layout of the value this node produced: its gradient is handed on in this layout.
        var layout: Tensor.Layout = .standard
        /// The recording function and output shape, kept only while `OpProfile` is on.
        var profileKey: String? = nil
    }

    public let id: UInt64
    private let lock = NSLock()
    private var nodes: [Node] = []
    private var leafOfParameter: [ObjectIdentifier: Int] = [:]
    private var parameterAtLeaf: [Int: Parameter] = [:]
    /// When the previous op was recorded (only kept while `OpProfile` is on).
    private var lastRecord = 0.0
    /// True once `backward` or `gradients` has run: a tape can be differentiated once.
    public private(set) var isConsumed = false

    public init() {
        id = Tape.nextID.add(1, ordering: .relaxed).oldValue
    }

    /// Number of recorded nodes (leaves included).
    public var nodeCount: Int { lock.withLock { nodes.count } }

    /// Runs `body` with this tape as the active tape and returns its result.
    public func record<R>(_ body: () throws -> R) rethrows -> R {
        if OpProfile.isEnabled { lock.withLock { lastRecord = OpProfile.now() } }
        return try Tape.$current.withValue(self) { try body() }
    }

    /// Marks `tensor` as a leaf whose gradient can be asked for with `gradients(of:withRespectTo:)`.
    public func watch(_ tensor: Tensor) -> Tensor {
        var t = tensor.detached
        t.trace = Tensor.Trace(tapeID: id, index: append(Node(inputs: [], backward: nil, layout: t.layout)))
        return t
    }

    /// The leaf that stands for `parameter` on this tape (one per parameter, however often it is read,
    /// so its gradient accumulates across uses).
    func leaf(for parameter: Parameter, data: Tensor) -> Tensor {
        var t = data.detached
        let key = ObjectIdentifier(parameter)
        let index: Int = lock.withLock {
            checkNotConsumed()
            if let i = leafOfParameter[key] { return i }
            let i = nodes.count
            nodes.append(Node(inputs: [], backward: nil, layout: t.layout))
            leafOfParameter[key] = i
            parameterAtLeaf[i] = parameter
            return i
        }
        t.trace = Tensor.Trace(tapeID: id, index: index)
        return t
    }

    private func append(_ node: Node) -> Int {
        lock.withLock {
            checkNotConsumed()
            nodes.append(node)
            return nodes.count - 1
        }
    }

    private func checkNotConsumed() {
        if isConsumed {
            fatalError("Tape: this tape was consumed by an earlier backward pass; record the forward pass again on a new Tape")
        }
    }

    /// Records `output` as the result of an op over `inputs` if a tape is active and at least one input
    /// is on it; otherwise returns `output` untouched and drops `backward` (and what it captured).
    ///
    /// This is the only entry point ops use; write a new op as: compute the output with kernels, then
    /// `return Tape.recordOp(output, inputs: [a, b]) { grad, needs in [...] }`.
    ///
    /// Layouts: `backward` receives the gradient in `output`'s memory layout, and may return input
    /// gradients in any layout (the tape converts each to the layout of the value it belongs to).
    public static func recordOp(_ output: Tensor, inputs: [Tensor], function: StaticString = #function,
                                backward: @escaping BackwardRule) -> Tensor {
        record(output, inputs: inputs, function: function, Node(inputs: [], backward: backward))
    }

    /// `recordOp` for an op whose backward adds into its inputs' gradients in place
    /// (`AccumulatingBackwardRule`).
    public static func recordOp(_ output: Tensor, inputs: [Tensor], function: StaticString = #function,
                                accumulatingBackward: @escaping AccumulatingBackwardRule) -> Tensor {
        record(output, inputs: inputs, function: function,
               Node(inputs: [], backward: nil, accumulatingBackward: accumulatingBackward))
    }

    private static func record(_ output: Tensor, inputs: [Tensor], function: StaticString, _ node: Node) -> Tensor {
        guard let tape = Tape.current else { return output.detached }
        let profileKey = OpProfile.isEnabled ? OpProfile.key(function, output.shape) : nil
        if let profileKey { tape.profileForward(profileKey) }
        var any = false
        let indices = inputs.map { t -> Int in
            if let tr = t.trace, tr.tapeID == tape.id { any = true; return tr.index }
            return -1
        }
        guard any else { return output.detached }
        var out = output.detached
        var node = node
        node.inputs = indices
        node.layout = output.layout
        node.profileKey = profileKey
        out.trace = Tensor.Trace(tapeID: tape.id, index: tape.append(node))
        return out
    }

    /// Charges the time since the previous recorded op (or the start of recording) to `function`.
    private func profileForward(_ key: String) {
        let t = OpProfile.now()
        let last = lock.withLock { () -> Double in
            defer { lastRecord = t }
            return lastRecord
        }
        if last > 0 { OpProfile.add(key, t - last) }
    }

    /// Back-propagates from `loss` and adds the result into the `grad` of every `Parameter` read while
    /// recording (PyTorch's `loss.backward()`; call `zeroGrad` on the optimizer between steps).
    /// `seed` is the gradient of the final objective with respect to `loss` (default: ones; required
    /// to be given when `loss` has more than one element).
    public func backward(_ loss: Tensor, seed: Tensor? = nil) {
        _ = run(from: loss, seed: seed, keep: [])
    }

    /// Back-propagates from `loss` and returns its gradient with respect to each of `tensors` (values
    /// recorded on this tape, typically from `watch`); zeros for a value the loss does not depend on.
    /// Parameters read while recording receive their gradients too.
    public func gradients(of loss: Tensor, withRespectTo tensors: [Tensor], seed: Tensor? = nil) -> [Tensor] {
        let keep = tensors.map { t -> Int in
            guard let tr = t.trace, tr.tapeID == id else {
                fatalError("Tape.gradients: a tensor of shape \(describe(t.shape)) was not recorded on this tape")
            }
            return tr.index
        }
        let kept = run(from: loss, seed: seed, keep: Set(keep))
        return zip(keep, tensors).map { i, t in kept[i] ?? Tensor(zeros: t.shape) }
    }

    private func run(from loss: Tensor, seed: Tensor?, keep: Set<Int>) -> [Int: Tensor] {
        guard let tr = loss.trace, tr.tapeID == id else {
            fatalError("Tape.backward: the loss (shape \(describe(loss.shape))) was not recorded on this tape")
        }
        let seedValue: Tensor
        if let seed {
            shapeCheck(seed.shape == loss.shape, "Tape.backward: seed \(describe(seed.shape)) vs loss \(describe(loss.shape))")
            seedValue = seed.detached
        } else {
            shapeCheck(loss.count == 1,
                       "Tape.backward: loss of shape \(describe(loss.shape)) is not a scalar; pass a seed gradient")
            seedValue = Tensor(ones: loss.shape)
        }
        var nodes: [Node] = []
        var parameters: [Int: Parameter] = [:]
        lock.withLock {
            if isConsumed {
                fatalError("Tape.backward: this tape was already consumed by an earlier backward pass; a second pass would double-count gradients. Record the forward pass again on a new Tape")
            }
            isConsumed = true
            swap(&nodes, &self.nodes)
            swap(&parameters, &parameterAtLeaf)
            leafOfParameter = [:]
        }
        // Which nodes lead to something that wants a gradient (a parameter or a kept value)?
        var wanted = [Bool](repeating: false, count: nodes.count)
        for i in 0..<nodes.count {
            if parameters[i] != nil || keep.contains(i) { wanted[i] = true; continue }
            for j in nodes[i].inputs where j >= 0 && wanted[j] { wanted[i] = true; break }
        }
        var grads = [Tensor?](repeating: nil, count: nodes.count)
        grads[tr.index] = seedValue
        var kept: [Int: Tensor] = [:]
        Tape.$current.withValue(nil) {
            for i in stride(from: tr.index, through: 0, by: -1) {
                let node = nodes[i]
                nodes[i] = Node(inputs: [], backward: nil)   // free the activations it captured
                guard var g = grads[i] else { continue }
                grads[i] = nil
                let t0 = node.profileKey != nil ? OpProfile.now() : 0
                // Each gradient travels in the layout of its value (rules may return any layout).
                if g.layout != node.layout { g = g.relaid(node.layout, for: "Tape.backward") }
                if keep.contains(i) { kept[i] = g }
                if let p = parameters[i] { p.accumulateGradient(g) }
                let needs = node.inputs.map { $0 >= 0 && wanted[$0] }
                if let rule = node.accumulatingBackward, needs.contains(true) {
                    // Hand over the gradients so far (the tape lets go of them, so a rule can write in
                    // place); a value that is an input twice gets its running sum in its first slot
                    // only, and the later slots' contributions are added afterwards.
                    var accumulated = [Tensor?](repeating: nil, count: node.inputs.count)
                    var first = [Bool](repeating: false, count: node.inputs.count)
                    for (k, j) in node.inputs.enumerated() where j >= 0 && wanted[j] && !node.inputs[..<k].contains(j) {
                        accumulated[k] = grads[j]; grads[j] = nil; first[k] = true
                    }
                    rule(g, needs, &accumulated)
                    for (k, j) in node.inputs.enumerated() where j >= 0 && wanted[j] {
                        guard let ig = accumulated[k] else { continue }
                        if first[k] || grads[j] == nil { grads[j] = ig } else { grads[j]!.accumulate(ig) }
                    }
                    if let key = node.profileKey { OpProfile.add(key + " backward", OpProfile.now() - t0) }
                    continue
                }
                guard let rule = node.backward else { continue }
                if !needs.contains(true) { continue }
                let inputGrads = rule(g, needs)
                precondition(inputGrads.count == node.inputs.count, "Tape: a backward rule returned \(inputGrads.count) gradients for \(node.inputs.count) inputs")
                for (j, ig) in zip(node.inputs, inputGrads) where j >= 0 && wanted[j] {
                    guard let ig else { continue }
                    if grads[j] == nil { grads[j] = ig } else { grads[j]!.accumulate(ig) }
                }
                if let key = node.profileKey { OpProfile.add(key + " backward", OpProfile.now() - t0) }
            }
        }
        return kept
    }
}

/// Runs `body` with no active tape: nothing is recorded and no intermediate is kept
/// (PyTorch's `torch.no_grad()`). Use it for inference and for optimizer updates.
public func withoutTape<R>(_ body: () throws -> R) rethrows -> R {
    try Tape.$current.withValue(nil) { try body() }
}

extension Tensor {
    /// `self += other` in place (same shape), used to sum gradients; copies first if shared. Keeps
    /// `self`'s layout (`other` is converted if it differs).
    public mutating func accumulate(_ other: Tensor) {
        shapeCheck(shape == other.shape, "accumulate: \(describe(shape)) += \(describe(other.shape))")
        let o = other.relaid(layout, for: "accumulate")
        makeStorageUnique()
        withExtendedLifetime(o) { ResidualKernels.accumulate(count, o.rawStorage.pointer, into: rawStorage.pointer) }
    }
}
