// Inference-time convolution: a forward pass planned once for fixed weights, and the epilogue
// (bias, residual addition, ReLU) that a folded conv + BN (+ shortcut) + ReLU needs after it.
//
// Why a plan: the direct kernel packs the weight `[O, C, kh, kw]` into its blocked layout on every
// call. For training that is a small share of the work (the packed weight serves a whole batch of
// large maps), but at batch 1 on the deep layers of an ImageNet network each weight is used only
// 49-196 times per call, and the pack (a strided gather over the whole weight, 9.4 MB for a 512x512
// 3x3) costs about as much as the arithmetic. A plan packs once and keeps the packed copy.

/// What to apply to a convolution's output, in one pass over it, in this order:
/// `y = relu(y + bias[o] + residual[p, o])` (each step optional). All pointers are NHWC like the
/// output (`residual` has the output's shape; `bias` has one value per output channel).
public struct ConvEpilogue {
    public var bias: UnsafePointer<Float>?
    public var residual: UnsafePointer<Float>?
    public var relu: Bool

    public init(bias: UnsafePointer<Float>? = nil, residual: UnsafePointer<Float>? = nil, relu: Bool = false) {
        self.bias = bias; self.residual = residual; self.relu = relu
    }

    var isEmpty: Bool { bias == nil && residual == nil && !relu }
}

/// `y[p, o] = relu(y[p, o] + bias[o] + residual[p, o])` over `pixels` rows of `channels` (each term
/// optional, see ``ConvEpilogue``), in place. Element-wise, so any thread split gives the same bits;
/// rows are split across threads only when each thread gets at least `elementwiseBlock` floats
/// (below that, waking a worker costs more than the pass).
public func applyConvEpilogue(_ e: ConvEpilogue, pixels: Int, channels: Int, _ y: UnsafeMutablePointer<Float>,
                              threads: Int? = nil) {
    if e.isEmpty || pixels <= 0 || channels <= 0 { return }
    let out = UncheckedSendable(y)
    let rowsPerBlock = max(1, elementwiseBlock / channels)
    parallelFor(pixels, minimumPerThread: rowsPerBlock, threads: threads) { rows in
        let y = out.value
        for p in rows { epilogueSpan(e, channels, y + p * channels, bias: e.bias, residual: e.residual.map { $0 + p * channels }) }
    }
}

/// The epilogue on one tile of a direct pass, right after its last channel block (so the tile is
/// still in L1): `rows` pixels `pixelStride` floats apart starting at `y`, output channels
/// `channels`; `offset` is `y`'s element offset in the output (and so in the residual).
@inline(__always)
func applyConvEpilogueTile(_ e: ConvEpilogue, rows: Int, pixelStride: Int, channels: Range<Int>,
                           _ y: UnsafeMutablePointer<Float>, offset: Int) {
    let o0 = channels.lowerBound, n = channels.count
    for r in 0..<rows {
        let at = r * pixelStride + o0
        epilogueSpan(e, n, y + at, bias: e.bias.map { $0 + o0 }, residual: e.residual.map { $0 + offset + at })
    }
}

/// `y[i] = relu(y[i] + bias[i] + residual[i])` for `i < n` (pointers already offset; nil terms are
/// skipped, so each combination compiles to its own loop). Bias first, then the residual: the
/// order the unfused ops used (conv bias, then the shortcut addition).
@inline(__always)
private func epilogueSpan(_ e: ConvEpilogue, _ n: Int, _ y: UnsafeMutablePointer<Float>,
                          bias: UnsafePointer<Float>?, residual: UnsafePointer<Float>?) {
    switch (bias, residual) {
    case let (b?, r?):
        epilogueLoop(n, y, e.relu, { load(b + $0) }, { load(r + $0) }, { b[$0] }, { r[$0] })
    case let (b?, nil):
        epilogueLoop(n, y, e.relu, { load(b + $0) }, { _ in Vec() }, { b[$0] }, { _ in 0 })
    case let (nil, r?):
        epilogueLoop(n, y, e.relu, { _ in Vec() }, { load(r + $0) }, { _ in 0 }, { r[$0] })
    case (nil, nil):
        epilogueLoop(n, y, e.relu, { _ in Vec() }, { _ in Vec() }, { _ in 0 }, { _ in 0 })
    }
}

@inline(__always)
private func epilogueLoop(_ n: Int, _ y: UnsafeMutablePointer<Float>, _ relu: Bool,
                          _ bias: (Int) -> Vec, _ residual: (Int) -> Vec,
                          _ biasScalar: (Int) -> Float, _ residualScalar: (Int) -> Float) {
    var i = 0
    while i + 16 <= n {
        var v = load(y + i) + bias(i) + residual(i)
        if relu { v = v.replacing(with: 0, where: v .< 0) }
        store(v, y + i)
        i += 16
    }
    while i < n {
        let v = y[i] + biasScalar(i) + residualScalar(i)
        y[i] = relu ? max(v, 0) : v
        i += 1
    }
}

/// A convolution forward pass prepared for repeated calls with the same weights: the weight is
/// packed (or, for the algorithms that pack per call, copied) once at construction, so a plan holds
/// no pointer into the caller's memory. Valid for any batch size with the planned per-image shape;
/// results are bit-identical to ``conv2dForwardNHWC(_:input:weight:bias:output:algorithm:threads:)``
/// with the same algorithm followed by ``applyConvEpilogue(_:pixels:channels:_:threads:)``.
///
/// Immutable after construction, so one plan may run on several threads at once.
public final class ConvForwardPlan: @unchecked Sendable {
    /// The planned shape (its `batch` is the one given at construction; `run` takes any batch).
    public let shape: Conv2dShape
    public let algorithm: ConvAlgorithm
    private let packed: DirectWeights?
    private let tile: ConvTile?
    /// The weight as given (`gemm` and `grouped` pack inside their GEMMs on every call).
    private let weightCopy: UnsafeMutablePointer<Float>?
    /// Winograd's transformed weight `G g Gᵀ`, computed once.
    private let winograd: WinogradWeights?

    public init(_ s: Conv2dShape, weight: UnsafePointer<Float>, algorithm: ConvAlgorithm? = nil) {
        shape = s
        let alg = algorithm ?? ConvAlgorithm.chooseForPlan(s)
        precondition(alg.supports(s), "ConvForwardPlan: \(alg) does not support \(s)")
        self.algorithm = alg
        winograd = alg == .winograd
            ? winogradTransformWeights(weight, outC: s.outChannels, inC: s.inChannels, flip: false, threads: nil)
            : nil
        if alg == .winograd {
            packed = nil
            tile = nil
            weightCopy = nil
        } else if alg == .direct {
            let p = Self.directPass(s, batch: max(1, s.batch))
            let t = directTile(p)
            tile = t
            packed = packForwardWeights(p, weight, lanes: t.lanes)
            weightCopy = nil
        } else {
            let count = s.outChannels * (s.inChannels / s.groups) * s.kernelH * s.kernelW
            let copy = UnsafeMutablePointer<Float>.allocate(capacity: max(1, count))
            copy.update(from: weight, count: count)
            weightCopy = copy
            packed = nil
            tile = nil
        }
    }

    deinit {
        packed?.deallocate()
        weightCopy?.deallocate()
        winograd?.deallocate()
    }

    static func directPass(_ s: Conv2dShape, batch: Int) -> DirectPass {
        DirectPass(batch: batch, inH: s.height, inW: s.width, inC: s.inChannels,
                   outH: s.outH, outW: s.outW, outC: s.outChannels,
                   kh: s.kernelH, kw: s.kernelW, sy: s.strideH, sx: s.strideW, padT: s.padH, padL: s.padW,
                   outImage: s.outH * s.outW * s.outChannels, outRow: s.outW * s.outChannels,
                   outPixel: s.outChannels)
    }

    /// `output[batch, OH, OW, O] = conv(input[batch, H, W, C])`, then `epilogue`.
    public func run(batch: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                    epilogue: ConvEpilogue = ConvEpilogue(), threads: Int? = nil) {
        var s = shape
        s.batch = batch
        if batch == 0 || s.outChannels == 0 || s.outH <= 0 || s.outW <= 0 { return }
        switch algorithm {
        case .direct:
            // The epilogue runs inside the pass, on each tile as it is finished.
            runDirectPass(Self.directPass(s, batch: batch), x: input, weights: packed!, tile: tile!, out: output,
                          epilogue: epilogue.isEmpty ? nil : epilogue, threads: threads)
            return
        case .winograd:
            // Bias, residual and ReLU in the output transform, while the tile is in registers.
            runWinogradPass(WinogradPass(forward: s), input: input, weights: winograd!, output: output,
                            epilogue: WinogradEpilogue(bias: epilogue.bias, residual: epilogue.residual,
                                                       relu: epilogue.relu),
                            threads: threads)
            return
        case .gemm:
            gemmForward(s, input: input, weight: weightCopy!, output: output, threads: threads)
        case .grouped:
            groupedNHWC(s, .forward, a: input, b: weightCopy!, out: output, bias: nil, threads: threads)
        }
        applyConvEpilogue(epilogue, pixels: batch * s.outH * s.outW, channels: s.outChannels, output,
                          threads: threads)
    }
}
