import ResidualKernels

// Pooling: max pool, average pool (PyTorch's count_include_pad = true), global average pool.
// Layout-aware: a channels-last input runs the NHWC kernels of ResidualKernels/PoolNHWC.swift and
// gives a channels-last output (global average pooling gives [N, C, 1, 1], whose bytes are the same
// in both layouts, labelled standard). A standard input runs the NCHW loops below, where each
// (image, channel) plane is independent, so planes are split across threads.

private func poolGeometry(_ op: String, _ x: Tensor, _ k: Int, _ s: Int, _ p: Int) -> ConvGeometry {
    shapeCheck(x.rank == 4 && k >= 1 && s >= 1 && p >= 0 && 2 * p <= k,
               "\(op): input \(describe(x.shape)), kernel \(k), stride \(s), padding \(p)")
    shapeCheck(x.shape[2] + 2 * p >= k && x.shape[3] + 2 * p >= k,
               "\(op): input \(describe(x.shape)) is smaller than the \(k)x\(k) window")
    return ConvGeometry(channels: 1, height: x.shape[2], width: x.shape[3], kernelH: k, kernelW: k,
                        strideH: s, strideW: s, padH: p, padW: p)
}

/// Max pooling with a `kernelSize` square window; padded positions never win.
public func maxPool2d(_ x: Tensor, kernelSize: Int, stride: Int, padding: Int = 0) -> Tensor {
    let g = poolGeometry("maxPool2d", x, kernelSize, stride, padding)
    if x.layout == .channelsLast { return maxPool2dChannelsLast(x, g) }
    let planes = x.shape[0] * x.shape[1], inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let argmax = TensorIndexBuffer(count: planes * outPlane)
    let px = UncheckedSendable(x.storage.pointer)
    let y = Tensor(shape: [x.shape[0], x.shape[1], g.outH, g.outW]) { out in
        let po = UncheckedSendable(out.baseAddress!)
        parallelFor(planes, minimumPerThread: 8) { range in
            for plane in range {
                let src = px.value + plane * inPlane
                let dst = po.value + plane * outPlane
                let idx = argmax.pointer + plane * outPlane
                for oy in 0..<g.outH {
                    let y0 = oy * g.strideH - g.padH
                    for ox in 0..<g.outW {
                        let x0 = ox * g.strideW - g.padW
                        var best = -Float.infinity, bestIndex: Int32 = -1
                        for ky in max(0, -y0)..<min(g.kernelH, g.height - y0) {
                            let row = (y0 + ky) * g.width
                            for kx in max(0, -x0)..<min(g.kernelW, g.width - x0) {
                                let v = src[row + x0 + kx]
                                if v > best || bestIndex < 0 { best = v; bestIndex = Int32(row + x0 + kx) }
                            }
                        }
                        dst[oy * g.outW + ox] = best
                        idx[oy * g.outW + ox] = bestIndex
                    }
                }
            }
        }
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { grad, _ in
        [Tensor(shape: xShape) { gx in
            let pg = UncheckedSendable(grad.storage.pointer), pgx = UncheckedSendable(gx.baseAddress!)
            parallelFor(planes, minimumPerThread: 8) { range in
                for plane in range {
                    let dst = pgx.value + plane * inPlane
                    dst.update(repeating: 0, count: inPlane)
                    let src = pg.value + plane * outPlane
                    let idx = argmax.pointer + plane * outPlane
                    for i in 0..<outPlane { dst[Int(idx[i])] += src[i] }
                }
            }
        }]
    }
}

/// Average pooling; the divisor is always `kernelSize²` (padding counts, as PyTorch's default).
public func avgPool2d(_ x: Tensor, kernelSize: Int, stride: Int, padding: Int = 0) -> Tensor {
    let g = poolGeometry("avgPool2d", x, kernelSize, stride, padding)
    if x.layout == .channelsLast { return avgPool2dChannelsLast(x, g) }
    let planes = x.shape[0] * x.shape[1], inPlane = g.height * g.width, outPlane = g.outH * g.outW
    let scale = 1 / Float(kernelSize * kernelSize)
    let px = UncheckedSendable(x.storage.pointer)
    let y = Tensor(shape: [x.shape[0], x.shape[1], g.outH, g.outW]) { out in
        let po = UncheckedSendable(out.baseAddress!)
        parallelFor(planes, minimumPerThread: 8) { range in
            for plane in range {
                let src = px.value + plane * inPlane, dst = po.value + plane * outPlane
                for oy in 0..<g.outH {
                    let y0 = oy * g.strideH - g.padH
                    for ox in 0..<g.outW {
                        let x0 = ox * g.strideW - g.padW
                        var acc: Float = 0
                        for ky in max(0, -y0)..<min(g.kernelH, g.height - y0) {
                            for kx in max(0, -x0)..<min(g.kernelW, g.width - x0) {
                                acc += src[(y0 + ky) * g.width + x0 + kx]
                            }
                        }
                        dst[oy * g.outW + ox] = acc * scale
                    }
                }
            }
        }
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { grad, _ in
        [Tensor(shape: xShape) { gx in
            let pg = UncheckedSendable(grad.storage.pointer), pgx = UncheckedSendable(gx.baseAddress!)
            parallelFor(planes, minimumPerThread: 8) { range in
                for plane in range {
                    let dst = pgx.value + plane * inPlane, src = pg.value + plane * outPlane
                    dst.update(repeating: 0, count: inPlane)
                    for oy in 0..<g.outH {
                        let y0 = oy * g.strideH - g.padH
                        for ox in 0..<g.outW {
                            let x0 = ox * g.strideW - g.padW
                            let v = src[oy * g.outW + ox] * scale
                            for ky in max(0, -y0)..<min(g.kernelH, g.height - y0) {
                                for kx in max(0, -x0)..<min(g.kernelW, g.width - x0) {
                                    dst[(y0 + ky) * g.width + x0 + kx] += v
                                }
                            }
                        }
                    }
                }
            }
        }]
    }
}

/// Mean over the spatial axes: `[N, C, H, W] -> [N, C, 1, 1]` (PyTorch's `AdaptiveAvgPool2d(1)`).
/// The result's bytes are those of `[N, C]` in either layout; it is labelled standard, so the
/// usual `flattened()` that follows is free.
public func globalAvgPool(_ x: Tensor) -> Tensor {
    shapeCheck(x.rank == 4, "globalAvgPool: input \(describe(x.shape)) is not NCHW")
    guard x.layout == .channelsLast else { return mean(x, axes: [2, 3], keepingDimensions: true) }
    let (n, c, spatial) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
    let y = Tensor(shape: [n, c, 1, 1]) { out in
        globalAvgPoolNHWC(batch: n, spatial: spatial, channels: c, input: x.rawStorage.pointer, output: out.baseAddress!)
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { grad, _ in
        // [N, C, 1, 1]: the same bytes in both layouts.
        let g = grad.relaid(.standard, for: "globalAvgPool backward")
        return [Tensor(shape: xShape, layout: .channelsLast) { gx in
            globalAvgPoolBackwardNHWC(batch: n, spatial: spatial, channels: c, gradOutput: g.rawStorage.pointer,
                                      gradInput: gx.baseAddress!)
        }]
    }
}

// MARK: - Channels-last

private func maxPool2dChannelsLast(_ x: Tensor, _ g0: ConvGeometry) -> Tensor {
    var g = g0
    g.channels = x.shape[1]
    let n = x.shape[0], outCount = n * g.channels * g.outH * g.outW
    let argmax = TensorIndexBuffer(count: outCount)
    let y = Tensor(shape: [n, g.channels, g.outH, g.outW], layout: .channelsLast) { out in
        maxPool2dNHWC(g, batch: n, input: x.rawStorage.pointer, output: out.baseAddress!, argmax: argmax.pointer)
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { grad, _ in
        let gc = grad.relaid(.channelsLast, for: "maxPool2d backward")
        return [Tensor(shape: xShape, layout: .channelsLast) { gx in
            maxPool2dBackwardNHWC(g, batch: n, gradOutput: gc.rawStorage.pointer, argmax: argmax.pointer,
                                  gradInput: gx.baseAddress!)
        }]
    }
}

private func avgPool2dChannelsLast(_ x: Tensor, _ g0: ConvGeometry) -> Tensor {
    var g = g0
    g.channels = x.shape[1]
    let n = x.shape[0]
    let y = Tensor(shape: [n, g.channels, g.outH, g.outW], layout: .channelsLast) { out in
        avgPool2dNHWC(g, batch: n, input: x.rawStorage.pointer, output: out.baseAddress!)
    }
    let xShape = x.shape
    return Tape.recordOp(y, inputs: [x]) { grad, _ in
        let gc = grad.relaid(.channelsLast, for: "avgPool2d backward")
        return [Tensor(shape: xShape, layout: .channelsLast) { gx in
            avgPool2dBackwardNHWC(g, batch: n, gradOutput: gc.rawStorage.pointer, gradInput: gx.baseAddress!)
        }]
    }
}

/// Int32 scratch owned by a closure (max-pool winners), freed with it.
///
/// Its memory comes from `BufferPool` like a tensor's (Int32 and Float have the same size): a max
/// pool's index map is as large as its output (800 KB for ResNet's stem pool at batch 1), so a fresh
/// allocation per call would go to `mmap` and fault its pages in on every forward.
final class TensorIndexBuffer: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<Int32>
    private let count: Int
    init(count: Int) {
        self.count = max(1, count)
        let floats = BufferPool.shared.allocate(self.count)
        pointer = UnsafeMutableRawPointer(floats).bindMemory(to: Int32.self, capacity: self.count)
    }
    deinit {
        let floats = UnsafeMutableRawPointer(pointer).bindMemory(to: Float.self, capacity: count)
        BufferPool.shared.release(floats, count)
    }
}
