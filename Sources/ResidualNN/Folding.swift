import Foundation
import ResidualAutodiff
import ResidualKernels

// Eval-mode batch norm folded into the convolution before it.
//
// In evaluation BN is a fixed per-channel affine map, `bn(z) = z·scale + shift` with
// `scale = γ / √(running_var + ε)` and `shift = β − running_mean·scale`, so
// `bn(conv(x, W) + c) = conv(x, W·scale) + (c·scale + shift)`: the same convolution with each output
// channel's filter scaled and a bias. Inference then runs conv (+ bias + shortcut, ReLU in the same
// pass) and never touches the BN's output as a separate tensor.
//
// The folded, packed weight is cached on the convolution and rebuilt whenever it could differ: the
// cache is keyed by the `version` of every parameter and buffer it reads (assignments, optimizer
// updates, checkpoint loads and the running-statistics updates of a training step all bump them),
// by the BN it was folded with and by the input's per-image shape. So a model can go back and forth
// between training and evaluation and always computes with its current values; the only cost is one
// fold and pack (about one pass over the weights) after each change.

/// The folded, planned forward of one conv + BN pair, and what it was built from.
final class FoldedConvolution: @unchecked Sendable {
    struct Key: Equatable {
        var batchNorm: ObjectIdentifier
        var versions: [Int]
        var epsilon: Float
        var image: [Int]           // C, H, W of the input
    }

    private let lock = NSLock()
    private var key: Key?
    private var plan: ConvForwardPlan?
    private var bias: Tensor?

    /// The plan and bias for `conv` followed by `bn` on inputs of `shape`, rebuilt if stale.
    func prepared(_ conv: Conv2d, _ bn: BatchNorm2d, inputShape shape: [Int]) -> (ConvForwardPlan, Tensor) {
        let versions = [conv.weight.version, conv.bias?.version ?? -1, bn.weight?.version ?? -1,
                        bn.bias?.version ?? -1, bn.runningMean.version, bn.runningVar.version]
        let k = Key(batchNorm: ObjectIdentifier(bn), versions: versions, epsilon: bn.epsilon,
                    image: Array(shape.dropFirst()))
        return lock.withLock {
            if key == k, let plan, let bias { return (plan, bias) }
            let (p, b) = Self.fold(conv, bn, shape)
            (key, plan, bias) = (k, p, b)
            return (p, b)
        }
    }

    /// Drops the cached plan (the model is training: its weights will change).
    func clear() {
        lock.withLock { (key, plan, bias) = (nil, nil, nil) }
    }

    /// `W'[o] = W[o]·scale[o]`, `b'[o] = c[o]·scale[o] + shift[o]`, with `scale` and the products
    /// in Double and rounded once to Float (each folded value is the correctly rounded exact one).
    static func fold(_ conv: Conv2d, _ bn: BatchNorm2d, _ shape: [Int]) -> (ConvForwardPlan, Tensor) {
        let w = conv.weight.data, c = conv.bias?.data
        let gamma = bn.weight?.data, beta = bn.bias?.data
        let mean = bn.runningMean.value, variance = bn.runningVar.value
        let outC = w.shape[0], perFilter = w.count / max(1, outC)
        let meanS = mean.scalars, varS = variance.scalars
        let gammaS = gamma?.scalars, betaS = beta?.scalars, cS = c?.scalars
        let scale = (0..<outC).map { o in
            Double(gammaS?[o] ?? 1) / (Double(varS[o]) + Double(bn.epsilon)).squareRoot()
        }
        let bias = Tensor(shape: [outC], scalars: (0..<outC).map { o -> Float in
            let convBias = Double(cS?[o] ?? 0), shift = Double(betaS?[o] ?? 0) - Double(meanS[o]) * scale[o]
            return Float(convBias * scale[o] + shift)
        })
        let folded = Tensor(shape: w.shape) { dst in
            let src = w.storage.pointer
            for o in 0..<outC {
                for i in (o * perFilter)..<((o + 1) * perFilter) { dst[i] = Float(Double(src[i]) * scale[o]) }
            }
        }
        let s = Conv2dShape(batch: shape[0], inChannels: shape[1], height: shape[2], width: shape[3],
                            outChannels: outC, kernelH: w.shape[2], kernelW: w.shape[3],
                            strideH: conv.stride, strideW: conv.stride, padH: conv.padding, padW: conv.padding,
                            groups: conv.groups)
        let plan = withExtendedLifetime(folded) { ConvForwardPlan(s, weight: folded.storage.pointer) }
        return (plan, bias)
    }
}

extension Conv2d {
    /// `bn(self(x))`, plus `residual`, then ReLU if `relu`: a ResNet's conv → BN (→ + shortcut) → ReLU.
    ///
    /// In training mode, or whenever a tape is recording (gradients are wanted), this is exactly
    /// `bn(self(x), fusedReLU:)` (with a residual: `bn(self(x), addingReLU:)` or `+`). In evaluation with no tape (the
    /// `withoutTape` inference path), the BN is folded into this convolution's weight and a bias
    /// (see the comment at the top of Folding.swift) and the whole sequence is one convolution with a
    /// fused epilogue. The folded weight is cached and rebuilt whenever a parameter or running
    /// statistic changes; outputs match the unfolded path up to Float rounding.
    ///
    /// - Precondition: `bn` has `self`'s output channels; `residual` has the output's shape.
    public func callAsFunction(_ x: Tensor, batchNorm bn: BatchNorm2d, residual: Tensor? = nil,
                               relu: Bool = false) -> Tensor {
        // Anything that could be a shape error goes the unfolded way, which reports it.
        guard !bn.isTraining, Tape.current == nil, x.rank == 4, x.shape[1] == weight.shape[1] * groups,
              x.shape[2] + 2 * padding >= weight.shape[2], x.shape[3] + 2 * padding >= weight.shape[3],
              bn.runningMean.shape == [weight.shape[0]] else {
            if bn.isTraining { folded.clear() }
            guard let residual else { return bn(self(x), fusedReLU: relu) }
            // relu(bn(conv(x)) + residual) in one pass, with no temporary for the BN's output.
            if relu { return bn(self(x), addingReLU: residual) }
            return bn(self(x)) + residual
        }
        let (plan, bias) = folded.prepared(self, bn, inputShape: x.shape)
        let y = conv2dInference(x, plan: plan, bias: bias, residual: residual, relu: relu)
        SummaryRecorder.note(self, y, macsPerImage: y.count / max(1, y.shape[0]) * weight.count / weight.shape[0])
        SummaryRecorder.note(bn, y)
        return y
    }
}
