import ResidualKernels

// 2-D convolution over NCHW with stride, zero padding and groups. Forward, backward-data and
// backward-weight are the Kernels module's conv2d functions; this file only checks shapes and
// records the node.

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
    // LAYOUT, TEMPORARY (layout package; the conv package replaces this with NHWC kernels): the
    // kernels below are NCHW, so a channels-last input is converted to standard, and the output
    // converted to channels-last (groups == 1) or back to the input's layout (groups > 1).
    let outputLayout: Tensor.Layout = groups == 1 ? .channelsLast : x.layout
    let xs = x.standard(for: "conv2d")
    let y = Tensor(shape: [s.batch, s.outChannels, s.outH, s.outW]) { out in
        conv2dForward(s, input: xs.storage.pointer, weight: weight.storage.pointer,
                      bias: bias.map { UnsafePointer($0.storage.pointer) }, output: out.baseAddress!)
    }.relaid(outputLayout, for: "conv2d")
    let (cx, cw, inputLayout) = (xs.detached, weight.detached, x.layout)
    var inputs = [x, weight]
    if let bias { inputs.append(bias) }
    return Tape.recordOp(y, inputs: inputs) { g, needs in
        let g = g.standard(for: "conv2d backward")   // LAYOUT, TEMPORARY (see above)
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
