import ResidualKernels

// 2-D convolution with stride, zero padding and groups. Forward, backward-data and backward-weight
// are the Kernels module's NHWC convolutions (groups > 1: the NCHW im2col ones); this file only
// checks shapes, handles layouts and records the node.

/// `x[N, C, H, W]` convolved with `weight[O, C/groups, kh, kw]` (+ `bias[O]`), PyTorch's `conv2d`
/// (cross-correlation). Output `[N, O, (H + 2p - kh)/s + 1, (W + 2p - kw)/s + 1]`.
///
/// Layouts: `x` may be standard or channels-last. With `groups == 1` the output is channels-last
/// (the network's activations stay channels-last from the first convolution on); with
/// `groups > 1` it has `x`'s layout.
public func conv2d(_ x: Tensor, _ weight: Tensor, bias: Tensor? = nil,
                   stride: Int = 1, padding: Int = 0, groups: Int = 1) -> Tensor {
    let message = "conv2d: input \(describe(x.shape)), weight \(describe(weight.shape))" +
        (bias.map { ", bias \(describe($0.shape))" } ?? "") + ", stride \(stride), padding \(padding), groups \(groups)"
    shapeCheck(x.rank == 4 && weight.rank == 4 && stride >= 1 && padding >= 0 && groups >= 1, message)
    shapeCheck(x.shape[1] == weight.shape[1] * groups && weight.shape[0] % groups == 0, message)
    shapeCheck(x.shape[2] + 2 * padding >= weight.shape[2] && x.shape[3] + 2 * padding >= weight.shape[3], message)
    if let bias { shapeCheck(bias.shape == [weight.shape[0]], message) }
    let s = Conv2dShape(batch: x.shape[0], inChannels: x.shape[1], height: x.shape[2], width: x.shape[3],
                        outChannels: weight.shape[0], kernelH: weight.shape[2], kernelW: weight.shape[3],
                        strideH: stride, strideW: stride, padH: padding, padW: padding, groups: groups)
    if groups != 1 { return groupedConv2d(x, weight, bias: bias, s) }
    // Channels-last end to end: a standard input (the network's first convolution) is converted once
    // here; every convolution output, and the input gradient of a channels-last input, stays
    // channels-last. The weight keeps PyTorch's [O, C, kh, kw] (the kernels pack it per call).
    let xc = x.relaid(.channelsLast, for: "conv2d")
    let y = Tensor(shape: [s.batch, s.outChannels, s.outH, s.outW], layout: .channelsLast) { out in
        conv2dForwardNHWC(s, input: xc.rawStorage.pointer, weight: weight.storage.pointer,
                          bias: bias.map { UnsafePointer($0.storage.pointer) }, output: out.baseAddress!)
    }
    let (cx, cw, inputLayout) = (xc.detached, weight.detached, x.layout)
    var inputs = [x, weight]
    if let bias { inputs.append(bias) }
    return Tape.recordOp(y, inputs: inputs) { (g: Tensor, needs: [Bool], accumulated: inout [Tensor?]) in
        let g = g.relaid(.channelsLast, for: "conv2d backward")
        if needs[0] {
            // The input's gradient so far (a residual block's input already holds its shortcut's
            // gradient): when it is channels-last and only this rule holds it, backward-data adds
            // into it in its epilogue instead of the tape adding a new tensor in a separate pass.
            if var acc = accumulated[0], acc.layout == .channelsLast {
                accumulated[0] = nil
                acc.makeStorageUnique()   // copies only if someone else still holds it
                conv2dBackwardDataNHWC(s, gradOutput: g.rawStorage.pointer, weight: cw.storage.pointer,
                                       gradInput: acc.rawStorage.pointer, accumulate: true)
                accumulated[0] = acc
            } else {
                let gx = Tensor(shape: cx.shape, layout: .channelsLast) { gi in
                    conv2dBackwardDataNHWC(s, gradOutput: g.rawStorage.pointer, weight: cw.storage.pointer,
                                           gradInput: gi.baseAddress!)
                }.relaid(inputLayout, for: "conv2d backward")
                if accumulated[0] == nil { accumulated[0] = gx } else { accumulated[0]!.accumulate(gx) }
            }
        }
        let wantWeight = needs[1], wantBias = needs.count == 3 && needs[2]
        var gw: Tensor? = nil, gb: Tensor? = nil
        if wantBias {
            // d(bias) alone is a sum over pixels; d(weight) is only computed when asked for.
            var b = Tensor(zeros: [s.outChannels])
            b.withUnsafeMutableBufferPointer { bp in
                if wantWeight {
                    gw = Tensor(shape: cw.shape) { gwp in
                        conv2dBackwardWeightNHWC(s, input: cx.rawStorage.pointer, gradOutput: g.rawStorage.pointer,
                                                 gradWeight: gwp.baseAddress!, gradBias: bp.baseAddress!)
                    }
                } else {
                    conv2dBiasGradientNHWC(s, gradOutput: g.rawStorage.pointer, gradBias: bp.baseAddress!)
                }
            }
            gb = b
        } else if wantWeight {
            gw = Tensor(shape: cw.shape) { gwp in
                conv2dBackwardWeightNHWC(s, input: cx.rawStorage.pointer, gradOutput: g.rawStorage.pointer,
                                         gradWeight: gwp.baseAddress!, gradBias: nil)
            }
        }
        for (k, t) in [(1, gw), (2, gb)] where k < needs.count {
            guard let t else { continue }
            if accumulated[k] == nil { accumulated[k] = t } else { accumulated[k]!.accumulate(t) }
        }
    }
}

/// groups > 1 (the zoo never uses it): the NCHW im2col kernels, output in the input's layout.
private func groupedConv2d(_ x: Tensor, _ weight: Tensor, bias: Tensor?, _ s: Conv2dShape) -> Tensor {
    let xs = x.standard(for: "conv2d")
    let y = Tensor(shape: [s.batch, s.outChannels, s.outH, s.outW]) { out in
        conv2dForward(s, input: xs.storage.pointer, weight: weight.storage.pointer,
                      bias: bias.map { UnsafePointer($0.storage.pointer) }, output: out.baseAddress!)
    }.relaid(x.layout, for: "conv2d")
    let (cx, cw, inputLayout) = (xs.detached, weight.detached, x.layout)
    var inputs = [x, weight]
    if let bias { inputs.append(bias) }
    return Tape.recordOp(y, inputs: inputs) { g, needs in
        let g = g.standard(for: "conv2d backward")
        let gx: Tensor? = needs[0] ? Tensor(shape: cx.shape) { gi in
            conv2dBackwardData(s, gradOutput: g.storage.pointer, weight: cw.storage.pointer, gradInput: gi.baseAddress!)
        }.relaid(inputLayout, for: "conv2d backward") : nil
        let wantBias = needs.count == 3 && needs[2]
        var gb: Tensor? = wantBias ? Tensor(zeros: [s.outChannels]) : nil
        let gw: Tensor? = (needs[1] || wantBias) ? Tensor(shape: cw.shape) { gwp in
            if var b = gb {
                b.withUnsafeMutableBufferPointer { bp in
                    conv2dBackwardWeight(s, input: cx.storage.pointer, gradOutput: g.storage.pointer,
                                         gradWeight: gwp.baseAddress!, gradBias: bp.baseAddress!)
                }
                gb = b
            } else {
                conv2dBackwardWeight(s, input: cx.storage.pointer, gradOutput: g.storage.pointer,
                                     gradWeight: gwp.baseAddress!, gradBias: nil)
            }
        } : nil
        var grads: [Tensor?] = [gx, needs[1] ? gw : nil]
        if needs.count == 3 { grads.append(gb) }
        return grads
    }
}

/// Inference-only convolution with a prepared plan and a fused epilogue:
/// `relu(conv(x) + bias + residual)` (ReLU and each term optional), channels-last output, in one
/// pass after the convolution. This is what an eval-mode conv + BN (folded into the plan's weight and
/// `bias`) + shortcut + ReLU runs as; see ``ConvForwardPlan`` for why the weight is planned.
///
/// Not differentiable: it records nothing, so it must run with no tape recording (`withoutTape`, or
/// outside `Tape.record`); calling it while a tape records stops with an error, since a gradient
/// would silently be lost.
///
/// - Precondition: `x` is `[N, C, H, W]` with the per-image shape the plan was made for; `bias` is
///   `[O]`; `residual` has the output's shape (any layout).
public func conv2dInference(_ x: Tensor, plan: ConvForwardPlan, bias: Tensor? = nil, residual: Tensor? = nil,
                            relu: Bool = false) -> Tensor {
    let s = plan.shape
    let outShape = [x.rank == 4 ? x.shape[0] : 0, s.outChannels, s.outH, s.outW]
    // Built only on failure (this runs once per layer per image at inference).
    func message() -> String {
        "conv2dInference: input \(describe(x.shape)) for a plan of input [N, \(s.inChannels), \(s.height), "
            + "\(s.width)]" + (bias.map { ", bias \(describe($0.shape))" } ?? "")
            + (residual.map { ", residual \(describe($0.shape)) for output \(describe(outShape))" } ?? "")
    }
    shapeCheck(Tape.current == nil, "conv2dInference is not differentiable: run it inside withoutTape "
               + "(a tape is recording)")
    shapeCheck(x.rank == 4 && x.shape[1] == s.inChannels && x.shape[2] == s.height && x.shape[3] == s.width,
               message())
    if let bias { shapeCheck(bias.shape == [s.outChannels], message()) }
    if let residual { shapeCheck(residual.shape == outShape, message()) }
    let t0 = OpProfile.isEnabled ? OpProfile.now() : 0
    let xc = x.relaid(.channelsLast, for: "conv2dInference")
    let rc = residual?.relaid(.channelsLast, for: "conv2dInference")
    let b = bias?.standard(for: "conv2dInference")
    let y = Tensor(shape: outShape, layout: .channelsLast) { out in
        let epilogue = ConvEpilogue(bias: b.map { UnsafePointer($0.storage.pointer) },
                                    residual: rc.map { UnsafePointer($0.rawStorage.pointer) }, relu: relu)
        plan.run(batch: outShape[0], input: xc.rawStorage.pointer, output: out.baseAddress!, epilogue: epilogue)
    }
    // No tape to attribute the time: with profiling on, the op times itself.
    if OpProfile.isEnabled {
        OpProfile.add("conv2dInference \(describe(outShape)) \(s.kernelH)x\(s.kernelW)/\(s.strideH) "
                      + "C\(s.inChannels) \(plan.algorithm)", OpProfile.now() - t0)
    }
    return withExtendedLifetime((xc, rc, b)) { y }
}
