import ResidualKernels

// Batch normalization over axis 1 (channels) of [N, C, ...]: training mode (batch statistics) and
// inference mode (given statistics), each optionally fused with the ReLU that follows it in a
// ResNet (one pass over memory forward, one backward, instead of two each). Both are primitives
// with hand-written backward passes over the kernels of ResidualKernels/BatchNorm.swift, and both
// are layout-aware: a channels-last input is normalised in its own layout (the kernels
// vectorise over channels) and gives a channels-last output.
// `1 / sqrt(var + eps)`, so batch size 1 and constant channels stay finite.

/// Checks shapes and views `x` as `[outer, C, inner]` in its own memory layout.
private func channelView(_ op: String, _ x: Tensor, _ tensors: [(String, Tensor?)]) -> ChannelView {
    shapeCheck(x.rank >= 2, "\(op): input \(describe(x.shape)) has no channel axis")
    let c = x.shape[1]
    for (name, t) in tensors {
        if let t { shapeCheck(t.shape == [c], "\(op): \(name) \(describe(t.shape)) for input \(describe(x.shape))") }
    }
    if x.layout == .channelsLast {
        return ChannelView(outer: x.shape[0] * x.shape[2] * x.shape[3], channels: c, inner: 1)
    }
    return ChannelView(outer: x.shape[0], channels: c, inner: x.shape[2...].reduce(1, *))
}

/// `[c]` tensor written by `body`.
private func vector(_ c: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
    Tensor(shape: [c]) { body($0.baseAddress!) }
}

/// The normalisation as a per-channel affine map: `scale = γ·inv`, `shift = β − μ·scale`.
private func affine(_ c: Int, mean: Tensor, invStd: Tensor, weight: Tensor?, bias: Tensor?) -> (Tensor, Tensor) {
    let pm = mean.storage.pointer, pi = invStd.storage.pointer
    let pw = weight?.storage.pointer, pb = bias?.storage.pointer
    let scale = vector(c) { s in for ch in 0..<c { s[ch] = pi[ch] * (pw?[ch] ?? 1) } }
    let shift = vector(c) { s in
        scale.withUnsafeBufferPointer { sc in for ch in 0..<c { s[ch] = (pb?[ch] ?? 0) - pm[ch] * sc[ch] } }
    }
    return withExtendedLifetime((mean, invStd, weight, bias)) { (scale, shift) }
}

/// Records the normalisation `y` (computed from `x` with statistics `mean`/`invStd`) with its
/// hand-written backward. `training`: the statistics are this batch's (their gradient flows);
/// otherwise they are constants.
/// With `residual` (the shortcut of a residual block, any layout), `y = relu(bn(x) + residual)`
/// and the backward also returns the shortcut's gradient (`g` where `y > 0`), written by the
/// statistics pass.
private func recordBatchNorm(_ y: Tensor, _ x: Tensor, _ v: ChannelView, weight: Tensor?, bias: Tensor?,
                             mean: Tensor, invStd: Tensor, training: Bool,
                             fusedReLU: (scale: Tensor, shift: Tensor)?, residual: Tensor? = nil) -> Tensor {
    let (cx, cw) = (x.detached, weight?.detached)
    var inputs = [x]
    if let weight { inputs.append(weight) }
    if let bias { inputs.append(bias) }
    if let residual { inputs.append(residual) }
    let hasW = weight != nil, hasB = bias != nil, hasR = residual != nil
    let cy: Tensor? = hasR ? y.detached : nil
    let c = v.channels
    return Tape.recordOp(y, inputs: inputs) { g, needs in
        let g = g.relaid(cx.layout, for: "batchNorm backward")
        let wantW = hasW && needs[1], wantB = hasB && needs[hasW ? 2 : 1]
        var gw = wantW ? Tensor(zeros: [c]) : nil, gb = wantB ? Tensor(zeros: [c]) : nil
        var gx: Tensor? = nil
        // The shortcut's gradient is computed whenever there is a shortcut: it is the masked
        // gradient the batch-norm backward reads.
        var gr: Tensor? = hasR ? Tensor(shape: cx.shape, layout: cx.layout) { _ in } : nil
        func run(_ dx: UnsafeMutablePointer<Float>?) {
            gw.withMutablePointer { pgw in
                gb.withMutablePointer { pgb in
                    if let cy, let grs = gr?.rawStorage {
                        batchNormBackwardAddReLU(v, x: cx.rawStorage.pointer, dy: g.rawStorage.pointer,
                                                 output: cy.rawStorage.pointer, mean: mean.storage.pointer,
                                                 invStd: invStd.storage.pointer,
                                                 gamma: cw.map { UnsafePointer($0.storage.pointer) },
                                                 training: training, residualGradient: grs.pointer,
                                                 dx: dx, dgamma: pgw, dbeta: pgb)
                        return
                    }
                    batchNormBackward(v, x: cx.rawStorage.pointer, dy: g.rawStorage.pointer,
                                      mean: mean.storage.pointer, invStd: invStd.storage.pointer,
                                      gamma: cw.map { UnsafePointer($0.storage.pointer) }, training: training,
                                      fusedReLU: fusedReLU.map { (UnsafePointer($0.scale.storage.pointer),
                                                                  UnsafePointer($0.shift.storage.pointer)) },
                                      dx: dx, dgamma: pgw, dbeta: pgb)
                }
            }
        }
        if needs[0] {
            gx = Tensor(shape: cx.shape, layout: cx.layout) { run($0.baseAddress!) }
        } else {
            run(nil)
        }
        var grads: [Tensor?] = [gx]
        if hasW { grads.append(gw) }
        if hasB { grads.append(gb) }
        if hasR {
            if !needs[needs.count - 1] { gr = nil }
            grads.append(gr)
        }
        return grads
    }
}

/// The shortcut of `relu(bn(x) + residual)`, checked and in `x`'s layout.
private func residualOperand(_ op: String, _ x: Tensor, _ residual: Tensor?) -> Tensor? {
    guard let residual else { return nil }
    shapeCheck(residual.shape == x.shape, "\(op): residual \(describe(residual.shape)) for input \(describe(x.shape))")
    return residual.relaid(x.layout, for: "batchNorm (residual layout)")
}

extension Optional where Wrapped == Tensor {
    /// Runs `body` with a pointer to the (uniquely owned) elements, or nil.
    fileprivate mutating func withMutablePointer<R>(_ body: (UnsafeMutablePointer<Float>?) -> R) -> R {
        guard var t = self else { return body(nil) }
        let r = t.withUnsafeMutableBufferPointer { body($0.baseAddress!) }
        self = t
        return r
    }
}

/// Normalises each channel with the statistics of this batch, then applies `weight`/`bias`, then
/// (with `fusedReLU`) `max(·, 0)`: `relu(batchNorm(x))` in one pass each way.
/// Returns the output (recorded on the tape, in `x`'s layout) and the batch mean and *biased*
/// variance per channel (constants; the caller updates its running statistics from them).
///
/// With `residual` (same shape as `x`), the output is `relu(bn(x) + residual)` (`fusedReLU` is then
/// implied): the end of a residual block in one pass forward and two backward, where a separate
/// `addReLU` would add a pass each way and a temporary the size of the activation.
public func batchNormTraining(_ x: Tensor, weight: Tensor?, bias: Tensor?, epsilon: Float, fusedReLU: Bool = false,
                              residual: Tensor? = nil)
    -> (output: Tensor, mean: Tensor, variance: Tensor) {
    let v = channelView("batchNormTraining", x, [("weight", weight), ("bias", bias)])
    let r = residualOperand("batchNormTraining", x, residual)
    shapeCheck(v.perChannel > 0, "batchNormTraining: input \(describe(x.shape)) has no elements per channel")
    let c = v.channels
    var meanT = Tensor(zeros: [c]), varT = Tensor(zeros: [c])
    meanT.withUnsafeMutableBufferPointer { mp in
        varT.withUnsafeMutableBufferPointer { vp in
            batchNormStatistics(v, x.rawStorage.pointer, mean: mp.baseAddress!, variance: vp.baseAddress!)
        }
    }
    let invStd = inverseStandardDeviation(c, varT, epsilon)
    let (scale, shift) = affine(c, mean: meanT, invStd: invStd, weight: weight, bias: bias)
    let y = normalized(x, v, scale: scale, shift: shift, residual: r, relu: fusedReLU)
    let out = recordBatchNorm(y, x, v, weight: weight, bias: bias, mean: meanT, invStd: invStd,
                              training: true, fusedReLU: fusedReLU && r == nil ? (scale, shift) : nil, residual: residual)
    return (out, meanT, varT)
}

/// Normalises with given (running) statistics: `(x − mean) / sqrt(variance + eps) · weight + bias`,
/// then (with `fusedReLU`) `max(·, 0)`. `mean` and `variance` are constants to the tape.
/// With `residual`, `relu(bn(x) + residual)` in one pass, as in `batchNormTraining`.
public func batchNormInference(_ x: Tensor, weight: Tensor?, bias: Tensor?, mean: Tensor, variance: Tensor,
                               epsilon: Float, fusedReLU: Bool = false, residual: Tensor? = nil) -> Tensor {
    let v = channelView("batchNormInference", x,
                        [("weight", weight), ("bias", bias), ("mean", mean), ("variance", variance)])
    let r = residualOperand("batchNormInference", x, residual)
    let c = v.channels
    let m = mean.standard(for: "batchNormInference"), variance = variance.standard(for: "batchNormInference")
    let invStd = inverseStandardDeviation(c, variance, epsilon)
    let (scale, shift) = affine(c, mean: m, invStd: invStd, weight: weight, bias: bias)
    let y = normalized(x, v, scale: scale, shift: shift, residual: r, relu: fusedReLU)
    return recordBatchNorm(y, x, v, weight: weight, bias: bias, mean: m.detached, invStd: invStd,
                           training: false, fusedReLU: fusedReLU && r == nil ? (scale, shift) : nil, residual: residual)
}

/// `1 / sqrt(variance + eps)` per channel.
private func inverseStandardDeviation(_ c: Int, _ variance: Tensor, _ epsilon: Float) -> Tensor {
    vector(c) { p in
        variance.withUnsafeBufferPointer { vp in for ch in 0..<c { p[ch] = 1 / (vp[ch] + epsilon).squareRoot() } }
    }
}

/// `x · scale + shift` per channel, then the fused ReLU, or with `residual` `relu(· + residual)`,
/// in one pass (the forward of both batch-norm modes).
private func normalized(_ x: Tensor, _ v: ChannelView, scale: Tensor, shift: Tensor, residual r: Tensor?,
                        relu: Bool) -> Tensor {
    Tensor(shape: x.shape, layout: x.layout) { out in
        if let r {
            withExtendedLifetime(r) {
                batchNormApplyAddReLU(v, x.rawStorage.pointer, scale: scale.storage.pointer,
                                      shift: shift.storage.pointer, residual: r.rawStorage.pointer, out.baseAddress!)
            }
        } else {
            batchNormApply(v, x.rawStorage.pointer, scale: scale.storage.pointer, shift: shift.storage.pointer,
                           out.baseAddress!, relu: relu)
        }
    }
}
