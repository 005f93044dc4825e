// CIFAR-specific convolution passes (ResNet-20/32/44/56/110 on 32x32 images), kept apart from the
// general direct kernels of ConvDirect.swift.
//
// Backward-weight of the 16-channel stage (C = 16 input channels, 3-wide kernels): the general
// kernel vectorises over output channels and broadcasts one input value per FMA (`convTile1`),
// which this core issues at about one per cycle, so it runs near half the FMA peak. Here the
// vector runs over the 16 input channels instead (one pixel of an NHWC row is exactly one
// vector), and each broadcast output-gradient value `dy[pixel, o]` feeds the three horizontal taps
// at once: `acc[kx][o] += x[pixel moved by kx] * dy[pixel, o]`, 3 FMAs per broadcast, with 8
// output channels x 3 taps = 24 accumulators in registers for a whole image.

/// Whether `conv2dBackwardWeightNHWC`'s direct path takes `backwardWeightC16`: 16 input channels,
/// a 3-wide kernel, output channels a multiple of 8, no groups (any height, strides and padding).
func usesBackwardWeightC16(_ s: Conv2dShape) -> Bool {
    s.groups == 1 && s.inChannels == 16 && s.kernelW == 3 && s.outChannels % 8 == 0 && s.outChannels > 0
}

/// `gradWeight[O, 16, kh, 3]` (overwritten) for `usesBackwardWeightC16` shapes.
///
/// Jobs are (kernel row ky, block of 8 output channels); each job sums its 3 x 8 x 16 gradient
/// entries over the batch in image, row, pixel order, into its own partial, so the result does not
/// depend on the thread count. Threads sweep the batch image by image and run all their jobs on an
/// image while its input and output gradient (2 x 64 KiB at 32x32x16) are in L2.
func backwardWeightC16(_ s: Conv2dShape, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                       gradWeight: UnsafeMutablePointer<Float>, threads: Int?) {
    let oBlocks = s.outChannels / 8, jobs = s.kernelH * oBlocks
    let partial = UnsafeMutablePointer<Float>.allocate(capacity: jobs * 3 * 8 * 16)
    defer { partial.deallocate() }
    partial.update(repeating: 0, count: jobs * 3 * 8 * 16)
    let flops = 2 * s.batch * s.outH * s.outW * s.outChannels * s.kernelH * 3 * 16
    let t = flops < 2_000_000 ? 1 : (threads ?? Threading.threadCount)
    let box = UncheckedSendable(partial)
    let inImage = s.height * s.width * 16, outImage = s.outH * s.outW * s.outChannels
    parallelFor(jobs, threads: t) { range in
        for n in 0..<s.batch {
            for job in range {
                let ky = job / oBlocks, o0 = (job % oBlocks) * 8
                weightGradientC16Image(s, ky: ky, x: input + n * inImage, dy: gradOutput + n * outImage + o0,
                                       acc: box.value + job * 3 * 8 * 16)
            }
        }
    }
    // [ky][o block][kx][o][c] to PyTorch's [o][c][ky][kx].
    for job in 0..<jobs {
        let ky = job / oBlocks, o0 = (job % oBlocks) * 8
        for kx in 0..<3 {
            for o in 0..<8 {
                let src = partial + ((job * 3 + kx) * 8 + o) * 16
                for c in 0..<16 { gradWeight[(((o0 + o) * 16 + c) * s.kernelH + ky) * 3 + kx] = src[c] }
            }
        }
    }
}

/// Adds one image's contribution for kernel row `ky` and 8 output channels to `acc` (`[kx][o][c]`,
/// 3 x 8 x 16). `dy` points at the image's first pixel, output channel `o0`.
@inline(never)
func weightGradientC16Image(_ s: Conv2dShape, ky: Int, x: UnsafePointer<Float>, dy: UnsafePointer<Float>,
                            acc: UnsafeMutablePointer<Float>) {
    let inW = s.width, outW = s.outW, sx = s.strideW, padL = s.padW, dyPixel = s.outChannels
    // Output columns whose three taps are all inside the input: ox*sx - padL >= 0 and ... + 2 < inW.
    let lo = min(outW, (padL + sx - 1) / sx)
    let hi = max(lo, min(outW, inW - 3 + padL >= 0 ? (inW - 3 + padL) / sx + 1 : 0))

    var a00 = load(acc + 0)
    var a01 = load(acc + 16)
    var a02 = load(acc + 32)
    var a03 = load(acc + 48)
    var a04 = load(acc + 64)
    var a05 = load(acc + 80)
    var a06 = load(acc + 96)
    var a07 = load(acc + 112)
    var a10 = load(acc + 128)
    var a11 = load(acc + 144)
    var a12 = load(acc + 160)
    var a13 = load(acc + 176)
    var a14 = load(acc + 192)
    var a15 = load(acc + 208)
    var a16 = load(acc + 224)
    var a17 = load(acc + 240)
    var a20 = load(acc + 256)
    var a21 = load(acc + 272)
    var a22 = load(acc + 288)
    var a23 = load(acc + 304)
    var a24 = load(acc + 320)
    var a25 = load(acc + 336)
    var a26 = load(acc + 352)
    var a27 = load(acc + 368)
    for oy in 0..<s.outH {
        let iy = oy * s.strideH - s.padH + ky
        if iy < 0 || iy >= s.height { continue }
        let xr = x + iy * inW * 16, dr = dy + oy * outW * dyPixel
        var ox = 0
        while ox < outW {
            if ox == lo && lo < hi {
                // Interior: all three taps inside.
                while ox < hi {
                    let xp = xr + (ox * sx - padL) * 16, d = dr + ox * dyPixel
                    let x0 = load(xp), x1 = load(xp + 16), x2 = load(xp + 32)
                    do { let b = Vec(repeating: d[0])
                        a00 = a00.addingProduct(x0, b); a10 = a10.addingProduct(x1, b); a20 = a20.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[1])
                        a01 = a01.addingProduct(x0, b); a11 = a11.addingProduct(x1, b); a21 = a21.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[2])
                        a02 = a02.addingProduct(x0, b); a12 = a12.addingProduct(x1, b); a22 = a22.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[3])
                        a03 = a03.addingProduct(x0, b); a13 = a13.addingProduct(x1, b); a23 = a23.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[4])
                        a04 = a04.addingProduct(x0, b); a14 = a14.addingProduct(x1, b); a24 = a24.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[5])
                        a05 = a05.addingProduct(x0, b); a15 = a15.addingProduct(x1, b); a25 = a25.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[6])
                        a06 = a06.addingProduct(x0, b); a16 = a16.addingProduct(x1, b); a26 = a26.addingProduct(x2, b) }
                    do { let b = Vec(repeating: d[7])
                        a07 = a07.addingProduct(x0, b); a17 = a17.addingProduct(x1, b); a27 = a27.addingProduct(x2, b) }
                    ox += 1
                }
                continue
            }
            // Edge column: only the taps that land inside the input.
            let ix = ox * sx - padL, d = dr + ox * dyPixel
            let v0 = ix >= 0 && ix < inW, v1 = ix + 1 >= 0 && ix + 1 < inW, v2 = ix + 2 >= 0 && ix + 2 < inW
            let x0 = v0 ? load(xr + ix * 16) : Vec(), x1 = v1 ? load(xr + (ix + 1) * 16) : Vec()
            let x2 = v2 ? load(xr + (ix + 2) * 16) : Vec()
            do { let b = Vec(repeating: d[0])
                if v0 { a00 = a00.addingProduct(x0, b) }
                if v1 { a10 = a10.addingProduct(x1, b) }
                if v2 { a20 = a20.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[1])
                if v0 { a01 = a01.addingProduct(x0, b) }
                if v1 { a11 = a11.addingProduct(x1, b) }
                if v2 { a21 = a21.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[2])
                if v0 { a02 = a02.addingProduct(x0, b) }
                if v1 { a12 = a12.addingProduct(x1, b) }
                if v2 { a22 = a22.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[3])
                if v0 { a03 = a03.addingProduct(x0, b) }
                if v1 { a13 = a13.addingProduct(x1, b) }
                if v2 { a23 = a23.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[4])
                if v0 { a04 = a04.addingProduct(x0, b) }
                if v1 { a14 = a14.addingProduct(x1, b) }
                if v2 { a24 = a24.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[5])
                if v0 { a05 = a05.addingProduct(x0, b) }
                if v1 { a15 = a15.addingProduct(x1, b) }
                if v2 { a25 = a25.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[6])
                if v0 { a06 = a06.addingProduct(x0, b) }
                if v1 { a16 = a16.addingProduct(x1, b) }
                if v2 { a26 = a26.addingProduct(x2, b) } }
            do { let b = Vec(repeating: d[7])
                if v0 { a07 = a07.addingProduct(x0, b) }
                if v1 { a17 = a17.addingProduct(x1, b) }
                if v2 { a27 = a27.addingProduct(x2, b) } }
            ox += 1
        }
    }
    store(a00, acc + 0)
    store(a01, acc + 16)
    store(a02, acc + 32)
    store(a03, acc + 48)
    store(a04, acc + 64)
    store(a05, acc + 80)
    store(a06, acc + 96)
    store(a07, acc + 112)
    store(a10, acc + 128)
    store(a11, acc + 144)
    store(a12, acc + 160)
    store(a13, acc + 176)
    store(a14, acc + 192)
    store(a15, acc + 208)
    store(a16, acc + 224)
    store(a17, acc + 240)
    store(a20, acc + 256)
    store(a21, acc + 272)
    store(a22, acc + 288)
    store(a23, acc + 304)
    store(a24, acc + 320)
    store(a25, acc + 336)
    store(a26, acc + 352)
    store(a27, acc + 368)
}
