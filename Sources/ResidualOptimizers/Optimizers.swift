import ResidualAutodiff
import ResidualKernels

/// An optimizer updates a fixed list of parameters, collected once at construction, in place.
public protocol Optimizer: AnyObject {
    var parameters: [Parameter] { get }
    var learningRate: Float { get set }
    /// Applies one update from the parameters' accumulated gradients (parameters with no gradient
    /// or frozen are skipped).
    func step()
    /// Per-parameter state tensors by name suffix (e.g. "momentum_buffer"), for checkpoints.
    func stateTensors() -> [Int: [String: Tensor]]
    func loadStateTensors(_ state: [Int: [String: Tensor]])
    /// Scalar state (step counters), for checkpoints.
    var stepCount: Int { get set }
}

extension Optimizer {
    /// Drops all gradients (PyTorch's `zero_grad(set_to_none=True)`).
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// Runs `body(i, n, p, g)` over raw buffers of parameter, gradient and one state buffer each.
@inline(__always)
func withBuffers(_ p: Parameter, _ g: Tensor, _ body: (Int, UnsafeMutablePointer<Float>, UnsafePointer<Float>) -> Void) {
    p.update { value in
        value.withUnsafeMutableBufferPointer { vp in
            g.withUnsafeBufferPointer { gp in body(vp.count, vp.baseAddress!, gp.baseAddress!) }
        }
    }
}

/// Stochastic gradient descent with momentum in PyTorch's form:
/// `g ← g + wd·p` (L2 weight decay, as He et al. use it), `buf ← μ·buf + g` (`buf = g` on the first
/// step), then `p ← p − lr·buf`, or with Nesterov `p ← p − lr·(g + μ·buf)`.
public final class SGD: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let momentum: Float, weightDecay: Float, nesterov: Bool
    public var stepCount = 0
    private var buffers: [Tensor?]

    public init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0,
                nesterov: Bool = false) {
        precondition(!nesterov || momentum > 0, "SGD: Nesterov momentum needs momentum > 0")
        self.parameters = parameters
        self.learningRate = learningRate; self.momentum = momentum
        self.weightDecay = weightDecay; self.nesterov = nesterov
        buffers = Array(repeating: nil, count: parameters.count)
    }

    public func step() {
        stepCount += 1
        let lr = learningRate, mu = momentum, wd = weightDecay, nesterov = nesterov
        for (i, p) in parameters.enumerated() {
            guard p.requiresGrad, let g = p.grad else { continue }
            if mu == 0 {
                withBuffers(p, g) { n, v, gp in
                    sgdUpdate(n, parameter: v, gradient: gp, buffer: nil, learningRate: lr, momentum: 0,
                              weightDecay: wd, nesterov: false, firstStep: false)
                }
                continue
            }
            let first = buffers[i] == nil
            var buf = buffers[i] ?? Tensor(zeros: p.shape)
            buffers[i] = nil   // unique reference: updated in place
            buf.withUnsafeMutableBufferPointer { bp in
                withBuffers(p, g) { n, v, gp in
                    sgdUpdate(n, parameter: v, gradient: gp, buffer: bp.baseAddress!, learningRate: lr,
                              momentum: mu, weightDecay: wd, nesterov: nesterov, firstStep: first)
                }
            }
            buffers[i] = buf
        }
    }

    public func stateTensors() -> [Int: [String: Tensor]] {
        var out: [Int: [String: Tensor]] = [:]
        for (i, b) in buffers.enumerated() { if let b { out[i] = ["momentum_buffer": b] } }
        return out
    }

    public func loadStateTensors(_ state: [Int: [String: Tensor]]) {
        buffers = parameters.indices.map { state[$0]?["momentum_buffer"] }
    }
}

/// Adam (Kingma & Ba) in PyTorch's form, with bias correction and `eps` outside the square root.
/// `decoupled: false` adds `wd·p` to the gradient (Adam's L2); `true` is AdamW's decoupled decay
/// `p ← p − lr·wd·p` applied before the Adam update.
public final class Adam: Optimizer {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float, weightDecay: Float, decoupled: Bool
    public var stepCount = 0
    private var m: [Tensor?], v: [Tensor?]
    private var steps: [Int]

    public init(_ parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                epsilon: Float = 1e-8, weightDecay: Float = 0, decoupled: Bool = false) {
        self.parameters = parameters
        self.learningRate = learningRate; self.beta1 = beta1; self.beta2 = beta2
        self.epsilon = epsilon; self.weightDecay = weightDecay; self.decoupled = decoupled
        m = Array(repeating: nil, count: parameters.count)
        v = Array(repeating: nil, count: parameters.count)
        steps = Array(repeating: 0, count: parameters.count)
    }

    public func step() {
        stepCount += 1
        let (lr, b1, b2, eps, wd, decoupled) = (learningRate, beta1, beta2, epsilon, weightDecay, self.decoupled)
        for (i, p) in parameters.enumerated() {
            guard p.requiresGrad, let g = p.grad else { continue }
            steps[i] += 1
            let t = Float(steps[i])
            let c1 = 1 - Float(pow(Double(b1), Double(t))), c2 = 1 - Float(pow(Double(b2), Double(t)))
            var mi = m[i] ?? Tensor(zeros: p.shape), vi = v[i] ?? Tensor(zeros: p.shape)
            m[i] = nil; v[i] = nil
            mi.withUnsafeMutableBufferPointer { mp in
                vi.withUnsafeMutableBufferPointer { vp in
                    let (mb, vb) = (mp.baseAddress!, vp.baseAddress!)
                    withBuffers(p, g) { n, x, gp in
                        adamUpdate(n, parameter: x, gradient: gp, m: mb, v: vb, learningRate: lr, beta1: b1,
                                   beta2: b2, epsilon: eps, weightDecay: wd, decoupled: decoupled, c1: c1, c2: c2)
                    }
                }
            }
            m[i] = mi; v[i] = vi
        }
    }

    public func stateTensors() -> [Int: [String: Tensor]] {
        var out: [Int: [String: Tensor]] = [:]
        for i in parameters.indices {
            if let mi = m[i], let vi = v[i] { out[i] = ["exp_avg": mi, "exp_avg_sq": vi, "step": Tensor(Float(steps[i]))] }
        }
        return out
    }

    public func loadStateTensors(_ state: [Int: [String: Tensor]]) {
        m = parameters.indices.map { state[$0]?["exp_avg"] }
        v = parameters.indices.map { state[$0]?["exp_avg_sq"] }
        steps = parameters.indices.map { Int(state[$0]?["step"]?.scalar ?? 0) }
    }
}

/// AdamW (Loshchilov & Hutter): Adam with decoupled weight decay (PyTorch's default wd 0.01).
public func AdamW(_ parameters: [Parameter], learningRate: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999,
                  epsilon: Float = 1e-8, weightDecay: Float = 0.01) -> Adam {
    Adam(parameters, learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon,
         weightDecay: weightDecay, decoupled: true)
}

import Foundation
