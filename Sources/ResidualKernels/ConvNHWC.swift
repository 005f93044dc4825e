// Convolution on channels-last (NHWC) activations: the engine's layout for 4-D activations.
//
// Shapes use `Conv2dShape` (batch, channels, height, width as in PyTorch); in memory the input is
// `[N, H, W, C]`, the output `[N, OH, OW, O]` and the weight keeps PyTorch's `[O, C/groups, kh, kw]`
// at the API (every algorithm packs it into its own layout). `groups > 1` goes through the NCHW
// im2col path (transposing around it); the zoo never uses groups.

/// How a convolution pass is computed. `ConvAlgorithm.choose` picks one per shape and pass from the
/// measurements in docs/Kernels.md; every algorithm computes every shape it accepts exactly (within
/// floating-point rounding), so the choice only affects speed.
public enum ConvAlgorithm: String, Sendable, CaseIterable {
    /// Register-blocked direct convolution on NHWC (any kernel size, stride and padding).
    case direct
    /// 1x1 convolutions without padding as SGEMM over pixels (stride > 1 subsamples first).
    case gemm
    /// groups > 1: transpose to NCHW and use im2col + GEMM per group.
    case grouped
    /// Winograd F(4x4, 3x3) (ConvWinograd.swift) for 3x3 stride-1 convolutions, forward and
    /// backward-data; its backward-weight is the direct kernel's. Not exact to the direct kernel's
    /// rounding bound: its error is a few times larger (the transforms amplify rounding).
    case winograd

    /// The three computations of a convolution layer.
    public enum Pass: String, Sendable, CaseIterable { case forward, backwardData, backwardWeight }

    /// Whether this algorithm can compute the given shape.
    public func supports(_ s: Conv2dShape) -> Bool {
        switch self {
        case .grouped: return true
        case .direct: return s.groups == 1
        case .gemm:
            return s.groups == 1 && s.kernelH == 1 && s.kernelW == 1 && s.padH == 0 && s.padW == 0
        case .winograd:
            return s.groups == 1 && s.kernelH == 3 && s.kernelW == 3 && s.strideH == 1 && s.strideW == 1
                && (0...2).contains(s.padH) && (0...2).contains(s.padW)
        }
    }
}

// MARK: - Public entry points

/// `output[N, OH, OW, O] = conv(input[N, H, W, C], weight[O, C/groups, kh, kw]) (+ bias[O])`, NHWC.
///
/// - Parameters:
///   - algorithm: `nil` chooses by shape (`ConvAlgorithm.choose`); an explicit algorithm must
///     `supports` the shape.
///   - threads: override of `Threading.threadCount`; results do not depend on it.
public func conv2dForwardNHWC(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                              bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>,
                              algorithm: ConvAlgorithm? = nil, threads: Int? = nil) {
    if s.batch == 0 || s.outChannels == 0 || s.outH <= 0 || s.outW <= 0 { return }
    let alg = algorithm ?? ConvAlgorithm.choose(s, .forward)
    precondition(alg.supports(s), "conv2dForwardNHWC: \(alg) does not support \(s)")
    switch alg {
    case .grouped: groupedNHWC(s, .forward, a: input, b: weight, out: output, bias: bias, threads: threads)
    case .gemm: gemmForward(s, input: input, weight: weight, output: output, threads: threads)
    case .direct: directForward(s, input: input, weight: weight, output: output, threads: threads)
    case .winograd:
        winogradForward(s, input: input, weight: weight, output: output, bias: bias, threads: threads)
        return
    }
    if let bias, alg != .grouped { addBias(s.batch * s.outH * s.outW, s.outChannels, bias, output) }
}

/// `gradInput[N, H, W, C]` (overwritten, or with `accumulate` added to) from `gradOutput[N, OH, OW, O]`
/// and `weight[O, C/groups, kh, kw]`.
///
/// - Parameter accumulate: `gradInput += convᵀ(gradOutput)` (GEMM's `beta = 1`): the residual
///   input's gradient is summed in the direct kernel's epilogue, while the tile is in registers,
///   instead of in a separate pass over memory. For a direct pass whose input channels fit one
///   channel block (every CIFAR layer) each element is `old + full sum`, the same bits as computing
///   the sum and adding it afterwards.
public func conv2dBackwardDataNHWC(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                   gradInput: UnsafeMutablePointer<Float>, accumulate: Bool = false,
                                   algorithm: ConvAlgorithm? = nil, threads: Int? = nil) {
    let inputCount = s.batch * s.height * s.width * s.inChannels
    if inputCount == 0 { return }
    if s.outChannels == 0 || s.outH <= 0 || s.outW <= 0 {
        if !accumulate { gradInput.update(repeating: 0, count: inputCount) }
        return
    }
    let alg = algorithm ?? ConvAlgorithm.choose(s, .backwardData)
    precondition(alg.supports(s), "conv2dBackwardDataNHWC: \(alg) does not support \(s)")
    if accumulate && alg != .direct && alg != .winograd {
        // Direct and Winograd accumulate in their epilogues: the others go through a scratch buffer.
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: inputCount)
        defer { scratch.deallocate() }
        conv2dBackwardDataNHWC(s, gradOutput: gradOutput, weight: weight, gradInput: scratch, algorithm: alg,
                               threads: threads)
        ResidualKernels.accumulate(inputCount, scratch, into: gradInput, threads: threads)
        return
    }
    switch alg {
    case .grouped: groupedNHWC(s, .backwardData, a: gradOutput, b: weight, out: gradInput, bias: nil, threads: threads)
    case .gemm: gemmBackwardData(s, gradOutput: gradOutput, weight: weight, gradInput: gradInput, threads: threads)
    case .direct:
        directBackwardData(s, gradOutput: gradOutput, weight: weight, gradInput: gradInput, accumulate: accumulate,
                           threads: threads)
    case .winograd:
        winogradBackwardData(s, gradOutput: gradOutput, weight: weight, gradInput: gradInput, accumulate: accumulate,
                             threads: threads)
    }
}

/// `gradWeight[O, C/groups, kh, kw]` and `gradBias[O]` (both overwritten) from the forward input and
/// `gradOutput`. Sums over the batch in an order fixed by the shape, never by the thread count, so the
/// result is bit-identical for any `threads`.
public func conv2dBackwardWeightNHWC(_ s: Conv2dShape, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                                     gradWeight: UnsafeMutablePointer<Float>, gradBias: UnsafeMutablePointer<Float>?,
                                     algorithm: ConvAlgorithm? = nil, threads: Int? = nil) {
    let weightCount = s.outChannels * (s.inChannels / max(1, s.groups)) * s.kernelH * s.kernelW
    let pixels = s.batch * max(0, s.outH) * max(0, s.outW)
    if let gradBias { biasGradient(pixels, s.outChannels, gradOutput, gradBias) }
    if weightCount == 0 { return }
    if pixels == 0 {
        gradWeight.update(repeating: 0, count: weightCount)
        return
    }
    let alg = algorithm ?? ConvAlgorithm.choose(s, .backwardWeight)
    precondition(alg.supports(s), "conv2dBackwardWeightNHWC: \(alg) does not support \(s)")
    switch alg {
    case .grouped: groupedNHWC(s, .backwardWeight, a: input, b: gradOutput, out: gradWeight, bias: nil, threads: threads)
    case .gemm: gemmBackwardWeight(s, input: input, gradOutput: gradOutput, gradWeight: gradWeight, threads: threads)
    case .direct, .winograd:
        // Winograd's weight gradient would need the transform of dY per tile; the direct kernel does it.
        directBackwardWeight(s, input: input, gradOutput: gradOutput, gradWeight: gradWeight, threads: threads)
    }
}

/// `gradBias[O] = Σ_pixels gradOutput[N, OH, OW, O]` (overwritten), in pixel order: the bias
/// gradient when the weight gradient is not needed.
public func conv2dBiasGradientNHWC(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>,
                                   gradBias: UnsafeMutablePointer<Float>) {
    biasGradient(s.batch * max(0, s.outH) * max(0, s.outW), s.outChannels, gradOutput, gradBias)
}

// MARK: - Bias

/// `y[p, o] += bias[o]` over `pixels` rows of `channels`.
func addBias(_ pixels: Int, _ channels: Int, _ bias: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
    for p in 0..<pixels {
        let row = y + p * channels
        var o = 0
        while o + 16 <= channels { store(load(row + o) + load(bias + o), row + o); o += 16 }
        while o < channels { row[o] += bias[o]; o += 1 }
    }
}

/// `gradBias[o] = Σ_p dy[p, o]`, in pixel order (deterministic).
func biasGradient(_ pixels: Int, _ channels: Int, _ dy: UnsafePointer<Float>, _ gradBias: UnsafeMutablePointer<Float>) {
    gradBias.update(repeating: 0, count: channels)
    for p in 0..<pixels {
        let row = dy + p * channels
        var o = 0
        while o + 16 <= channels { store(load(gradBias + o) + load(row + o), gradBias + o); o += 16 }
        while o < channels { gradBias[o] += row[o]; o += 1 }
    }
}

// MARK: - Direct

func directForward(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                   output: UnsafeMutablePointer<Float>, threads: Int?) {
    let p = DirectPass(batch: s.batch, inH: s.height, inW: s.width, inC: s.inChannels,
                       outH: s.outH, outW: s.outW, outC: s.outChannels,
                       kh: s.kernelH, kw: s.kernelW, sy: s.strideH, sx: s.strideW, padT: s.padH, padL: s.padW,
                       outImage: s.outH * s.outW * s.outChannels, outRow: s.outW * s.outChannels,
                       outPixel: s.outChannels)
    let tile = directTile(p)
    let w = packForwardWeights(p, weight, lanes: tile.lanes, threads: threads)
    defer { w.deallocate() }
    runDirectPass(p, x: input, weights: w, tile: tile, out: output, threads: threads)
}

/// One stride phase of the input gradient along one axis: input positions `phase + stride * a`
/// receive the kernel taps `first + stride * m`, which makes them a stride-1 correlation of the
/// output gradient with `taps` taps (reversed) and leading padding `pad` (negative: cropping).
struct DataPhase {
    var count: Int, first: Int, taps: Int, pad: Int

    init(phase: Int, size: Int, kernel: Int, stride: Int, padding: Int) {
        count = phase < size ? (size - phase + stride - 1) / stride : 0
        first = (phase + padding) % stride
        taps = first < kernel ? (kernel - 1 - first) / stride + 1 : 0
        let q = (phase + padding - first) / stride
        pad = taps - 1 - q
    }

    /// Source kernel index of packed tap `m` (taps are reversed: correlation, not convolution).
    func sourceTap(_ m: Int, stride: Int) -> Int { first + stride * (taps - 1 - m) }
}

/// Backward-data as direct passes over the output gradient: one stride-1 correlation with the flipped,
/// transposed kernel per stride phase (sy x sx phases; a phase that no tap reaches is zero).
func directBackwardData(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                        gradInput: UnsafeMutablePointer<Float>, accumulate: Bool = false, threads: Int?) {
    let c = s.inChannels, taps = s.kernelH * s.kernelW
    for py in 0..<s.strideH {
        let ph = DataPhase(phase: py, size: s.height, kernel: s.kernelH, stride: s.strideH, padding: s.padH)
        for px in 0..<s.strideW {
            let pw = DataPhase(phase: px, size: s.width, kernel: s.kernelW, stride: s.strideW, padding: s.padW)
            if ph.count == 0 || pw.count == 0 { continue }
            let base = gradInput + (py * s.width + px) * c
            let p = DirectPass(batch: s.batch, inH: s.outH, inW: s.outW, inC: s.outChannels,
                               outH: ph.count, outW: pw.count, outC: c,
                               kh: ph.taps, kw: pw.taps, sy: 1, sx: 1, padT: ph.pad, padL: pw.pad,
                               outImage: s.height * s.width * c, outRow: s.strideH * s.width * c,
                               outPixel: s.strideW * c)
            if p.kh == 0 || p.kw == 0 {
                if accumulate { continue }
                // In parallel: a strided 1x1's backward-data zeroes 3/4 of dX here (ResNet-18
                // conv3_x.proj at batch 16: 2.4 M floats, as long as its whole 2-thread pass).
                let box = UncheckedSendable(base)
                parallelFor(s.batch * p.outH, minimumPerThread: max(1, 16_384 / max(1, p.outW * c)),
                            threads: threads) { rows in
                    for row in rows {
                        let rowBase = box.value + (row / p.outH) * p.outImage + (row % p.outH) * p.outRow
                        for b in 0..<p.outW { (rowBase + b * p.outPixel).update(repeating: 0, count: c) }
                    }
                }
                continue
            }
            let tile = directTile(p)
            let w = DirectWeights(p, lanes: tile.lanes)
            defer { w.deallocate() }
            var tapIndex: [Int] = []
            for my in 0..<p.kh {
                for mx in 0..<p.kw {
                    tapIndex.append(ph.sourceTap(my, stride: s.strideH) * s.kernelW + pw.sourceTap(mx, stride: s.strideW))
                }
            }
            // Output channel of this pass = input channel ci of the layer; its input = layer output o.
            w.pack(p, weight, oStride: taps, cStride: c * taps, tapIndex: tapIndex, threads: threads)
            runDirectPass(p, x: gradOutput, weights: w, tile: tile, out: base, accumulate: accumulate, threads: threads)
        }
    }
}

func directBackwardWeight(_ s: Conv2dShape, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                          gradWeight: UnsafeMutablePointer<Float>, threads: Int?) {
    if usesBackwardWeightC16(s) {   // CIFAR's 16-channel stage (ConvCIFAR.swift)
        return backwardWeightC16(s, input: input, gradOutput: gradOutput, gradWeight: gradWeight, threads: threads)
    }
    var p = DirectPass(batch: s.batch, inH: s.height, inW: s.width, inC: s.inChannels,
                       outH: s.outH, outW: s.outW, outC: s.outChannels,
                       kh: s.kernelH, kw: s.kernelW, sy: s.strideH, sx: s.strideW, padT: s.padH, padL: s.padW,
                       outImage: 0, outRow: 0, outPixel: 0)
    let c = p.inC, run = p.kw * c
    // Per-tap jobs read the input in place when a good register block divides C; otherwise (the stem's
    // C = 3, odd channel counts) pad the input once and let blocks run across the (kx, c) entries.
    var perTap = c % 8 == 0
    var tile = perTap ? weightTile(run: c, outC: p.outC, divisible: true) : nil
    if tile == nil {
        perTap = false
        tile = weightTile(run: run, outC: p.outC, divisible: false)
    }
    let tl = tile!
    let jStride = perTap ? run : (run + tl.rows - 1) / tl.rows * tl.rows
    let oPad = (p.outC + tl.lanes - 1) / tl.lanes * tl.lanes
    // The microkernel reads whole 16-lane vectors of dY: give it a padded copy when O is not a multiple.
    var dy = gradOutput, dyPixel = p.outC
    var paddedDy: UnsafeMutablePointer<Float>? = nil
    if oPad != p.outC {
        let pixels = p.batch * p.outH * p.outW
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: pixels * oPad)
        // In parallel: at 2 threads a serial copy was ~10% of ResNet-18 conv3_x's backward-weight.
        let box = UncheckedSendable((buffer, gradOutput))
        parallelFor(pixels, minimumPerThread: 2048, threads: threads) { range in
            let (buffer, gradOutput) = box.value
            for q in range {
                (buffer + q * oPad).update(from: gradOutput + q * p.outC, count: p.outC)
                (buffer + q * oPad + p.outC).update(repeating: 0, count: oPad - p.outC)
            }
        }
        paddedDy = buffer
        dy = UnsafePointer(buffer)
        dyPixel = oPad
    }
    defer { paddedDy?.deallocate() }
    var x = input
    var paddedX: UnsafeMutablePointer<Float>? = nil
    if !perTap {
        // Every window inside: rows/cols (out - 1) * stride + k, plus R floats of slack for the
        // last block of the last pixel.
        let hp = (p.outH - 1) * p.sy + p.kh, wp = (p.outW - 1) * p.sx + p.kw
        let image = hp * wp * c
        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: p.batch * image + tl.rows + 16)
        (buffer + p.batch * image).update(repeating: 0, count: tl.rows + 16)
        let box = UncheckedSendable((buffer, input))
        parallelFor(p.batch, minimumPerThread: image < 65_536 ? 8 : 1, threads: threads) { range in
            let (buffer, input) = box.value
            for n in range { fillBand(p, input, n: n, rows: hp, width: wp, buffer + n * image) }
        }
        paddedX = buffer
        x = UnsafePointer(buffer)
        p.inH = hp; p.inW = wp; p.padT = 0; p.padL = 0
    }
    defer { paddedX?.deallocate() }
    let grad = UnsafeMutablePointer<Float>.allocate(capacity: p.kh * jStride * oPad)
    defer { grad.deallocate() }
    runDirectWeightPass(p, x: x, dy: dy, dyPixel: dyPixel, tile: tl, perTap: perTap, grad: grad,
                        jStride: jStride, oPad: oPad, threads: threads)
    unpackWeightGradient(grad, jStride: jStride, oPad: oPad, outC: p.outC, inC: c, kh: p.kh, kw: p.kw,
                         into: gradWeight, threads: threads)
}

/// `[ky][kx*C + c][o]` (row stride `jStride`, lane stride `oPad`) to PyTorch's `[o][c][ky][kx]`: 16
/// output channels at a time, one vector load scattered to 16 destination rows written sequentially.
func unpackWeightGradient(_ grad: UnsafePointer<Float>, jStride: Int, oPad: Int, outC: Int, inC: Int,
                          kh: Int, kw: Int, into dst: UnsafeMutablePointer<Float>, threads: Int?) {
    let taps = kh * kw
    let box = UncheckedSendable(dst)
    parallelFor((outC + 15) / 16, minimumPerThread: outC * inC * taps < 200_000 ? Int.max : 1,
                threads: threads) { range in
        let dst = box.value
        for ob in range {
            let o0 = ob * 16, valid = min(16, outC - o0)
            for c in 0..<inC {
                for ky in 0..<kh {
                    for kx in 0..<kw {
                        let src = grad + (ky * jStride + kx * inC + c) * oPad + o0
                        let d = dst + (o0 * inC + c) * taps + ky * kw + kx
                        for l in 0..<valid { d[l * inC * taps] = src[l] }
                    }
                }
            }
        }
    }
}

/// Copies image `n` into `dst` (`rows x width x C`) with zero borders: row `r` is input row
/// `r - padT`, column `j` input column `j - padL`.
func fillBand(_ p: DirectPass, _ x: UnsafePointer<Float>, n: Int, rows: Int, width: Int,
              _ dst: UnsafeMutablePointer<Float>) {
    let c = p.inC
    let lo = min(width, max(0, p.padL)), hi = max(lo, min(width, p.inW + p.padL))
    for r in 0..<rows {
        let iy = r - p.padT
        let d = dst + r * width * c
        if iy < 0 || iy >= p.inH {
            d.update(repeating: 0, count: width * c)
            continue
        }
        if lo > 0 { d.update(repeating: 0, count: lo * c) }
        (d + lo * c).update(from: x + ((n * p.inH + iy) * p.inW + (lo - p.padL)) * c, count: (hi - lo) * c)
        if hi < width { (d + hi * c).update(repeating: 0, count: (width - hi) * c) }
    }
}

// MARK: - 1x1 as GEMM

/// `[N, OH, OW, C]` copy of the pixels a strided 1x1 convolution reads (nil when stride is 1).
/// Rows are copied in parallel: the copy is memory-bound and would otherwise be a serial part of the
/// 2-thread pass (ResNet-18 conv3_x.proj backward-weight at batch 16 copies 3 MB).
func subsampledInput(_ s: Conv2dShape, _ x: UnsafePointer<Float>, threads: Int?) -> UnsafeMutablePointer<Float>? {
    if s.strideH == 1 && s.strideW == 1 { return nil }
    let c = s.inChannels, oh = s.outH, ow = s.outW
    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: s.batch * oh * ow * c)
    let box = UncheckedSendable((buffer, x))
    parallelFor(s.batch * oh, minimumPerThread: max(1, 32_768 / max(1, ow * c)), threads: threads) { rows in
        let (buffer, x) = box.value
        for row in rows {
            let n = row / oh, oy = row % oh
            for ox in 0..<ow {
                (buffer + (row * ow + ox) * c)
                    .update(from: x + ((n * s.height + oy * s.strideH) * s.width + ox * s.strideW) * c, count: c)
            }
        }
    }
    return buffer
}

func gemmForward(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                 output: UnsafeMutablePointer<Float>, threads: Int?) {
    let sub = subsampledInput(s, input, threads: threads)
    defer { sub?.deallocate() }
    let pixels = s.batch * s.outH * s.outW
    // Y[P, O] = X[P, C] · Wᵀ, W stored [O, C].
    sgemm(transA: false, transB: true, m: pixels, n: s.outChannels, k: s.inChannels,
          a: sub.map { UnsafePointer($0) } ?? input, lda: s.inChannels, b: weight, ldb: s.inChannels,
          c: output, ldc: s.outChannels, threads: threads)
}

func gemmBackwardData(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                      gradInput: UnsafeMutablePointer<Float>, threads: Int?) {
    let pixels = s.batch * s.outH * s.outW, c = s.inChannels
    if s.strideH == 1 && s.strideW == 1 {
        sgemm(transA: false, transB: false, m: pixels, n: c, k: s.outChannels, a: gradOutput, lda: s.outChannels,
              b: weight, ldb: c, c: gradInput, ldc: c, threads: threads)
        return
    }
    // dX is zero except at the pixels the strided convolution read.
    let dense = UnsafeMutablePointer<Float>.allocate(capacity: pixels * c)
    defer { dense.deallocate() }
    sgemm(transA: false, transB: false, m: pixels, n: c, k: s.outChannels, a: gradOutput, lda: s.outChannels,
          b: weight, ldb: c, c: dense, ldc: c, threads: threads)
    gradInput.update(repeating: 0, count: s.batch * s.height * s.width * c)
    for n in 0..<s.batch {
        for oy in 0..<s.outH {
            for ox in 0..<s.outW {
                (gradInput + ((n * s.height + oy * s.strideH) * s.width + ox * s.strideW) * c)
                    .update(from: dense + ((n * s.outH + oy) * s.outW + ox) * c, count: c)
            }
        }
    }
}

func gemmBackwardWeight(_ s: Conv2dShape, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                        gradWeight: UnsafeMutablePointer<Float>, threads: Int?) {
    let sub = subsampledInput(s, input, threads: threads)
    defer { sub?.deallocate() }
    let pixels = s.batch * s.outH * s.outW
    // dW[O, C] = dYᵀ[O, P] · X[P, C]. SGEMM never splits k, so the pixel sum order is fixed.
    sgemm(transA: true, transB: false, m: s.outChannels, n: s.inChannels, k: pixels,
          a: gradOutput, lda: s.outChannels, b: sub.map { UnsafePointer($0) } ?? input, ldb: s.inChannels,
          c: gradWeight, ldc: s.inChannels, threads: threads)
}

// MARK: - groups > 1

/// Transposes `[N, H, W, C]` to `[N, C, H, W]` (or back with `toNHWC`).
func transposeNHWC(_ n: Int, _ h: Int, _ w: Int, _ c: Int, _ src: UnsafePointer<Float>,
                   _ dst: UnsafeMutablePointer<Float>, toNHWC: Bool) {
    let hw = h * w
    for i in 0..<n {
        let s = src + i * hw * c, d = dst + i * hw * c
        for p in 0..<hw {
            for ch in 0..<c {
                if toNHWC { d[p * c + ch] = s[ch * hw + p] } else { d[ch * hw + p] = s[p * c + ch] }
            }
        }
    }
}

/// groups > 1 through the NCHW kernels of Convolution.swift.
func groupedNHWC(_ s: Conv2dShape, _ pass: ConvAlgorithm.Pass, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                 out: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, threads: Int?) {
    let inCount = s.batch * s.height * s.width * s.inChannels
    let outCount = s.batch * s.outH * s.outW * s.outChannels
    switch pass {
    case .forward:
        let x = UnsafeMutablePointer<Float>.allocate(capacity: inCount), y = UnsafeMutablePointer<Float>.allocate(capacity: outCount)
        defer { x.deallocate(); y.deallocate() }
        transposeNHWC(s.batch, s.height, s.width, s.inChannels, a, x, toNHWC: false)
        conv2dForward(s, input: x, weight: b, bias: bias, output: y, threads: threads)
        transposeNHWC(s.batch, s.outH, s.outW, s.outChannels, y, out, toNHWC: true)
    case .backwardData:
        let dy = UnsafeMutablePointer<Float>.allocate(capacity: outCount), dx = UnsafeMutablePointer<Float>.allocate(capacity: inCount)
        defer { dy.deallocate(); dx.deallocate() }
        transposeNHWC(s.batch, s.outH, s.outW, s.outChannels, a, dy, toNHWC: false)
        conv2dBackwardData(s, gradOutput: dy, weight: b, gradInput: dx, threads: threads)
        transposeNHWC(s.batch, s.height, s.width, s.inChannels, dx, out, toNHWC: true)
    case .backwardWeight:
        let x = UnsafeMutablePointer<Float>.allocate(capacity: inCount), dy = UnsafeMutablePointer<Float>.allocate(capacity: outCount)
        defer { x.deallocate(); dy.deallocate() }
        transposeNHWC(s.batch, s.height, s.width, s.inChannels, a, x, toNHWC: false)
        transposeNHWC(s.batch, s.outH, s.outW, s.outChannels, b, dy, toNHWC: false)
        conv2dBackwardWeight(s, input: x, gradOutput: dy, gradWeight: out, gradBias: nil, threads: threads)
    }
}

// MARK: - Scalar references (test oracles)

/// Six-loop NHWC convolution accumulated in Double: the oracle for every forward algorithm.
public func referenceConv2dForwardNHWC(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                                       bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>) {
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    for n in 0..<s.batch {
        for oy in 0..<s.outH {
            for ox in 0..<s.outW {
                for o in 0..<s.outChannels {
                    var acc = Double(bias?[o] ?? 0)
                    let g = o / og
                    for ky in 0..<s.kernelH {
                        let iy = oy * s.strideH - s.padH + ky
                        if iy < 0 || iy >= s.height { continue }
                        for kx in 0..<s.kernelW {
                            let ix = ox * s.strideW - s.padW + kx
                            if ix < 0 || ix >= s.width { continue }
                            for c in 0..<cg {
                                let xv = input[((n * s.height + iy) * s.width + ix) * s.inChannels + g * cg + c]
                                let wv = weight[((o * cg + c) * s.kernelH + ky) * s.kernelW + kx]
                                acc += Double(xv) * Double(wv)
                            }
                        }
                    }
                    output[((n * s.outH + oy) * s.outW + ox) * s.outChannels + o] = Float(acc)
                }
            }
        }
    }
}

/// The input gradient by its definition (gathering, in Double): the oracle for backward-data.
public func referenceConv2dBackwardDataNHWC(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>,
                                            weight: UnsafePointer<Float>, gradInput: UnsafeMutablePointer<Float>) {
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    for n in 0..<s.batch {
        for iy in 0..<s.height {
            for ix in 0..<s.width {
                for ci in 0..<s.inChannels {
                    let g = ci / cg, c = ci % cg
                    var acc = 0.0
                    for ky in 0..<s.kernelH {
                        let ty = iy + s.padH - ky
                        if ty < 0 || ty % s.strideH != 0 || ty / s.strideH >= s.outH { continue }
                        for kx in 0..<s.kernelW {
                            let tx = ix + s.padW - kx
                            if tx < 0 || tx % s.strideW != 0 || tx / s.strideW >= s.outW { continue }
                            let pix = (n * s.outH + ty / s.strideH) * s.outW + tx / s.strideW
                            for oo in 0..<og {
                                let o = g * og + oo
                                acc += Double(gradOutput[pix * s.outChannels + o])
                                    * Double(weight[((o * cg + c) * s.kernelH + ky) * s.kernelW + kx])
                            }
                        }
                    }
                    gradInput[((n * s.height + iy) * s.width + ix) * s.inChannels + ci] = Float(acc)
                }
            }
        }
    }
}

/// The weight and bias gradients summed in Double: the oracle for backward-weight.
public func referenceConv2dBackwardWeightNHWC(_ s: Conv2dShape, input: UnsafePointer<Float>,
                                              gradOutput: UnsafePointer<Float>,
                                              gradWeight: UnsafeMutablePointer<Float>,
                                              gradBias: UnsafeMutablePointer<Float>?) {
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    for o in 0..<s.outChannels {
        let g = o / og
        for c in 0..<cg {
            for ky in 0..<s.kernelH {
                for kx in 0..<s.kernelW {
                    var acc = 0.0
                    for n in 0..<s.batch {
                        for oy in 0..<s.outH {
                            let iy = oy * s.strideH - s.padH + ky
                            if iy < 0 || iy >= s.height { continue }
                            for ox in 0..<s.outW {
                                let ix = ox * s.strideW - s.padW + kx
                                if ix < 0 || ix >= s.width { continue }
                                acc += Double(input[((n * s.height + iy) * s.width + ix) * s.inChannels + g * cg + c])
                                    * Double(gradOutput[((n * s.outH + oy) * s.outW + ox) * s.outChannels + o])
                            }
                        }
                    }
                    gradWeight[((o * cg + c) * s.kernelH + ky) * s.kernelW + kx] = Float(acc)
                }
            }
        }
        if let gradBias {
            var acc = 0.0
            for p in 0..<(s.batch * s.outH * s.outW) { acc += Double(gradOutput[p * s.outChannels + o]) }
            gradBias[o] = Float(acc)
        }
    }
}
