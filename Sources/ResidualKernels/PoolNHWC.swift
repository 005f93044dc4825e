/// Pooling over channels-last (NHWC) images: max, average (padding counted, PyTorch's default)
/// and global average, forward and backward. The channels of a pixel are adjacent, so every
/// window step is one SIMD16 operation per 16 channels (a scalar loop takes the last `C % 16`).
/// Forward passes split output rows `(n, oy)` across threads; backward passes split images, since
/// overlapping windows add into the same input pixels.
///
/// `g` gives the per-image geometry (`channels` is C); images are `[H, W, C]`, outputs `[outH, outW, C]`.

/// Output rows per thread below which a pooling pass stays on the calling thread: about
/// `elementwiseBlock` window reads, the work that pays for waking a worker (a CIFAR-sized pool at
/// batch 1 is a few microseconds; ResNet's stem pool, 56 rows of 56 x 64 x 9 reads, still splits).
@inline(__always)
func poolRowsPerThread(_ g: ConvGeometry) -> Int {
    max(1, elementwiseBlock / max(1, g.outW * g.channels * g.kernelH * g.kernelW))
}

/// Max pooling; `argmax` receives, for every output element, the input pixel `iy·W + ix` that won
/// (the first maximum in row-major window order; padding never wins).
public func maxPool2dNHWC(_ g: ConvGeometry, batch: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                          argmax: UnsafeMutablePointer<Int32>, threads: Int? = nil) {
    let c = g.channels, oh = g.outH, ow = g.outW
    if c == 0 { return }
    let (out, idx) = (UncheckedSendable(output), UncheckedSendable(argmax))
    parallelFor(batch * oh, minimumPerThread: poolRowsPerThread(g), threads: threads) { rows in
        for row in rows {
            let n = row / oh, oy = row % oh
            let image = input + n * g.height * g.width * c
            let y0 = oy * g.strideH - g.padH
            let ky0 = max(0, -y0), ky1 = min(g.kernelH, g.height - y0)
            for ox in 0..<ow {
                let x0 = ox * g.strideW - g.padW
                let kx0 = max(0, -x0), kx1 = min(g.kernelW, g.width - x0)
                let o = ((n * oh + oy) * ow + ox) * c
                let first = Int32((y0 + ky0) * g.width + x0 + kx0)
                var c0 = 0
                while c0 + 16 <= c {
                    var best = load(image + Int(first) * c + c0)
                    var where_ = SIMD16<Int32>(repeating: first)
                    for ky in ky0..<ky1 {
                        for kx in kx0..<kx1 {
                            let pixel = (y0 + ky) * g.width + x0 + kx
                            let v = load(image + pixel * c + c0)
                            let better = v .> best
                            best = best.replacing(with: v, where: better)
                            where_ = where_.replacing(with: Int32(pixel), where: better)
                        }
                    }
                    store(best, out.value + o + c0)
                    UnsafeMutableRawPointer(idx.value + o + c0).storeBytes(of: where_, as: SIMD16<Int32>.self)
                    c0 += 16
                }
                for ch in c0..<c {
                    var best = image[Int(first) * c + ch], at = first
                    for ky in ky0..<ky1 {
                        for kx in kx0..<kx1 {
                            let pixel = (y0 + ky) * g.width + x0 + kx
                            let v = image[pixel * c + ch]
                            if v > best { best = v; at = Int32(pixel) }
                        }
                    }
                    out.value[o + ch] = best
                    idx.value[o + ch] = at
                }
            }
        }
    }
}

/// Gradient of max pooling: each output gradient goes to the pixel that won (overwrites `gradInput`).
public func maxPool2dBackwardNHWC(_ g: ConvGeometry, batch: Int, gradOutput: UnsafePointer<Float>,
                                  argmax: UnsafePointer<Int32>, gradInput: UnsafeMutablePointer<Float>,
                                  threads: Int? = nil) {
    let c = g.channels, outPlane = g.outH * g.outW, inImage = g.height * g.width * c
    let gin = UncheckedSendable(gradInput)
    parallelFor(batch, threads: threads) { images in
        for n in images {
            let dst = gin.value + n * inImage
            dst.update(repeating: 0, count: inImage)
            let src = gradOutput + n * outPlane * c, at = argmax + n * outPlane * c
            for q in 0..<outPlane {
                for ch in 0..<c { dst[Int(at[q * c + ch]) * c + ch] += src[q * c + ch] }
            }
        }
    }
}

/// Average pooling; the divisor is always `kernelH·kernelW` (padding counts, PyTorch's default).
public func avgPool2dNHWC(_ g: ConvGeometry, batch: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                          threads: Int? = nil) {
    let c = g.channels, oh = g.outH, ow = g.outW
    let scale = 1 / Float(g.kernelH * g.kernelW), vscale = Vec(repeating: scale)
    let out = UncheckedSendable(output)
    parallelFor(batch * oh, minimumPerThread: poolRowsPerThread(g), threads: threads) { rows in
        for row in rows {
            let n = row / oh, oy = row % oh
            let image = input + n * g.height * g.width * c
            let y0 = oy * g.strideH - g.padH
            let ky0 = max(0, -y0), ky1 = min(g.kernelH, g.height - y0)
            for ox in 0..<ow {
                let x0 = ox * g.strideW - g.padW
                let kx0 = max(0, -x0), kx1 = min(g.kernelW, g.width - x0)
                let dst = out.value + ((n * oh + oy) * ow + ox) * c
                var c0 = 0
                while c0 + 16 <= c {
                    var acc = Vec()
                    for ky in ky0..<ky1 {
                        for kx in kx0..<kx1 { acc += load(image + ((y0 + ky) * g.width + x0 + kx) * c + c0) }
                    }
                    store(acc * vscale, dst + c0)
                    c0 += 16
                }
                for ch in c0..<c {
                    var acc: Float = 0
                    for ky in ky0..<ky1 {
                        for kx in kx0..<kx1 { acc += image[((y0 + ky) * g.width + x0 + kx) * c + ch] }
                    }
                    dst[ch] = acc * scale
                }
            }
        }
    }
}

/// Gradient of average pooling (overwrites `gradInput`).
public func avgPool2dBackwardNHWC(_ g: ConvGeometry, batch: Int, gradOutput: UnsafePointer<Float>,
                                  gradInput: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let c = g.channels, oh = g.outH, ow = g.outW, inImage = g.height * g.width * c
    let scale = 1 / Float(g.kernelH * g.kernelW), vscale = Vec(repeating: scale)
    let gin = UncheckedSendable(gradInput)
    parallelFor(batch, threads: threads) { images in
        for n in images {
            let dst = gin.value + n * inImage
            dst.update(repeating: 0, count: inImage)
            for oy in 0..<oh {
                let y0 = oy * g.strideH - g.padH
                let ky0 = max(0, -y0), ky1 = min(g.kernelH, g.height - y0)
                for ox in 0..<ow {
                    let x0 = ox * g.strideW - g.padW
                    let kx0 = max(0, -x0), kx1 = min(g.kernelW, g.width - x0)
                    let src = gradOutput + ((n * oh + oy) * ow + ox) * c
                    for ky in ky0..<ky1 {
                        for kx in kx0..<kx1 {
                            let d = dst + ((y0 + ky) * g.width + x0 + kx) * c
                            var c0 = 0
                            while c0 + 16 <= c { store(load(d + c0).addingProduct(load(src + c0), vscale), d + c0); c0 += 16 }
                            while c0 < c { d[c0] += src[c0] * scale; c0 += 1 }
                        }
                    }
                }
            }
        }
    }
}

/// Mean over the pixels of each image: `input[N, spatial, C]` → `output[N, C]`.
public func globalAvgPoolNHWC(batch: Int, spatial: Int, channels c: Int, input: UnsafePointer<Float>,
                              output: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let scale = 1 / Float(max(1, spatial)), vscale = Vec(repeating: scale)
    let out = UncheckedSendable(output)
    parallelFor(batch, threads: threads) { images in
        for n in images {
            let src = input + n * spatial * c, dst = out.value + n * c
            var c0 = 0
            while c0 + 16 <= c {
                var a0 = Vec(), a1 = Vec()
                var s = 0
                while s + 2 <= spatial { a0 += load(src + s * c + c0); a1 += load(src + (s + 1) * c + c0); s += 2 }
                if s < spatial { a0 += load(src + s * c + c0) }
                store((a0 + a1) * vscale, dst + c0)
                c0 += 16
            }
            for ch in c0..<c {
                var acc: Float = 0
                for s in 0..<spatial { acc += src[s * c + ch] }
                dst[ch] = acc * scale
            }
        }
    }
}

/// Gradient of global average pooling: `gradInput[n, s, c] = gradOutput[n, c] / spatial`.
public func globalAvgPoolBackwardNHWC(batch: Int, spatial: Int, channels c: Int, gradOutput: UnsafePointer<Float>,
                                      gradInput: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let scale = 1 / Float(max(1, spatial)), vscale = Vec(repeating: scale)
    let gin = UncheckedSendable(gradInput)
    parallelFor(batch, threads: threads) { images in
        for n in images {
            let src = gradOutput + n * c, dst = gin.value + n * spatial * c
            for s in 0..<spatial {
                let d = dst + s * c
                var c0 = 0
                while c0 + 16 <= c { store(load(src + c0) * vscale, d + c0); c0 += 16 }
                while c0 < c { d[c0] = src[c0] * scale; c0 += 1 }
            }
        }
    }
}

/// The option-A shortcut of He et al. on channels-last data: keep every `stride`-th pixel in both
/// directions and add `before`/`after` zero channels: `input[N, H, W, C]` →
/// `output[N, ⌈H/s⌉, ⌈W/s⌉, before + C + after]`.
public func subsampleAndPadChannelsNHWC(batch: Int, height: Int, width: Int, channels c: Int, stride s: Int,
                                        before: Int, after: Int, input: UnsafePointer<Float>,
                                        output: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let oh = (height + s - 1) / s, ow = (width + s - 1) / s, oc = before + c + after
    let out = UncheckedSendable(output)
    parallelFor(batch * oh, minimumPerThread: 4, threads: threads) { rows in
        for row in rows {
            let n = row / oh, oy = row % oh
            let src = input + ((n * height + oy * s) * width) * c
            for ox in 0..<ow {
                let d = out.value + (row * ow + ox) * oc
                if before > 0 { d.update(repeating: 0, count: before) }
                (d + before).update(from: src + ox * s * c, count: c)
                if after > 0 { (d + before + c).update(repeating: 0, count: after) }
            }
        }
    }
}

/// Gradient of `subsampleAndPadChannelsNHWC` (overwrites `gradInput[N, H, W, C]`).
public func subsampleAndPadChannelsBackwardNHWC(batch: Int, height: Int, width: Int, channels c: Int, stride s: Int,
                                                before: Int, after: Int, gradOutput: UnsafePointer<Float>,
                                                gradInput: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let oh = (height + s - 1) / s, ow = (width + s - 1) / s, oc = before + c + after
    let gin = UncheckedSendable(gradInput)
    parallelFor(batch * height, minimumPerThread: 4, threads: threads) { rows in
        for row in rows {
            let n = row / height, y = row % height
            let d = gin.value + row * width * c
            if y % s != 0 { d.update(repeating: 0, count: width * c); continue }
            let src = gradOutput + ((n * oh + y / s) * ow) * oc + before
            for x in 0..<width {
                if x % s == 0 {
                    (d + x * c).update(from: src + (x / s) * oc, count: c)
                } else {
                    (d + x * c).update(repeating: 0, count: c)
                }
            }
        }
    }
}

// MARK: - Scalar references (tests)

/// Plain reference for `maxPool2dNHWC` (same tie rule: the first maximum in window order wins).
public func referenceMaxPool2dNHWC(_ g: ConvGeometry, batch: Int, input: UnsafePointer<Float>,
                                   output: UnsafeMutablePointer<Float>, argmax: UnsafeMutablePointer<Int32>) {
    let c = g.channels
    for n in 0..<batch {
        for oy in 0..<g.outH {
            for ox in 0..<g.outW {
                for ch in 0..<c {
                    var best = -Float.infinity, at: Int32 = -1
                    for ky in 0..<g.kernelH {
                        for kx in 0..<g.kernelW {
                            let iy = oy * g.strideH - g.padH + ky, ix = ox * g.strideW - g.padW + kx
                            guard iy >= 0 && iy < g.height && ix >= 0 && ix < g.width else { continue }
                            let v = input[((n * g.height + iy) * g.width + ix) * c + ch]
                            if at < 0 || v > best { best = v; at = Int32(iy * g.width + ix) }
                        }
                    }
                    let o = ((n * g.outH + oy) * g.outW + ox) * c + ch
                    output[o] = best
                    argmax[o] = at
                }
            }
        }
    }
}

/// Plain reference for `avgPool2dNHWC` (divisor `kernelH·kernelW`, sums in Double).
public func referenceAvgPool2dNHWC(_ g: ConvGeometry, batch: Int, input: UnsafePointer<Float>,
                                   output: UnsafeMutablePointer<Float>) {
    let c = g.channels
    for n in 0..<batch {
        for oy in 0..<g.outH {
            for ox in 0..<g.outW {
                for ch in 0..<c {
                    var acc = 0.0
                    for ky in 0..<g.kernelH {
                        for kx in 0..<g.kernelW {
                            let iy = oy * g.strideH - g.padH + ky, ix = ox * g.strideW - g.padW + kx
                            guard iy >= 0 && iy < g.height && ix >= 0 && ix < g.width else { continue }
                            acc += Double(input[((n * g.height + iy) * g.width + ix) * c + ch])
                        }
                    }
                    output[((n * g.outH + oy) * g.outW + ox) * c + ch] = Float(acc / Double(g.kernelH * g.kernelW))
                }
            }
        }
    }
}

/// Plain reference for `avgPool2dBackwardNHWC`.
public func referenceAvgPool2dBackwardNHWC(_ g: ConvGeometry, batch: Int, gradOutput: UnsafePointer<Float>,
                                           gradInput: UnsafeMutablePointer<Float>) {
    let c = g.channels
    gradInput.update(repeating: 0, count: batch * g.height * g.width * c)
    for n in 0..<batch {
        for oy in 0..<g.outH {
            for ox in 0..<g.outW {
                for ky in 0..<g.kernelH {
                    for kx in 0..<g.kernelW {
                        let iy = oy * g.strideH - g.padH + ky, ix = ox * g.strideW - g.padW + kx
                        guard iy >= 0 && iy < g.height && ix >= 0 && ix < g.width else { continue }
                        for ch in 0..<c {
                            gradInput[((n * g.height + iy) * g.width + ix) * c + ch] +=
                                gradOutput[((n * g.outH + oy) * g.outW + ox) * c + ch] / Float(g.kernelH * g.kernelW)
                        }
                    }
                }
            }
        }
    }
}

/// Plain reference for `globalAvgPoolNHWC`.
public func referenceGlobalAvgPoolNHWC(batch: Int, spatial: Int, channels c: Int, input: UnsafePointer<Float>,
                                       output: UnsafeMutablePointer<Float>) {
    for n in 0..<batch {
        for ch in 0..<c {
            var acc = 0.0
            for s in 0..<spatial { acc += Double(input[(n * spatial + s) * c + ch]) }
            output[n * c + ch] = Float(acc / Double(max(1, spatial)))
        }
    }
}

/// Plain reference for `subsampleAndPadChannelsNHWC`.
public func referenceSubsampleAndPadChannelsNHWC(batch: Int, height: Int, width: Int, channels c: Int, stride s: Int,
                                                 before: Int, after: Int, input: UnsafePointer<Float>,
                                                 output: UnsafeMutablePointer<Float>) {
    let oh = (height + s - 1) / s, ow = (width + s - 1) / s, oc = before + c + after
    for n in 0..<batch {
        for oy in 0..<oh {
            for ox in 0..<ow {
                for k in 0..<oc {
                    let ch = k - before
                    output[((n * oh + oy) * ow + ox) * oc + k] =
                        ch >= 0 && ch < c ? input[((n * height + oy * s) * width + ox * s) * c + ch] : 0
                }
            }
        }
    }
}
