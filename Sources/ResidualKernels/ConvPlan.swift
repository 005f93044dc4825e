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
        switch (e.bias, e.residual) {
        case let (b?, r?):
            epilogueRows(rows, channels, y, e.relu, bias: { load(b + $0) }, residual: { load(r + $0) },
                         biasScalar: { b[$0] }, residualScalar: { r[$0] })
        case let (b?, nil):
            epilogueRows(rows, channels, y, e.relu, bias: { load(b + $0) }, residual: { _ in Vec() },
                         biasScalar: { b[$0] }, residualScalar: { _ in 0 })
        case let (nil, r?):
            epilogueRows(rows, channels, y, e.relu, bias: { _ in Vec() }, residual: { load(r + $0) },
                         biasScalar: { _ in 0 }, residualScalar: { r[$0] })
        case (nil, nil):
            epilogueRows(rows, channels, y, e.relu, bias: { _ in Vec() }, residual: { _ in Vec() },
                         biasScalar: { _ in 0 }, residualScalar: { _ in 0 })
        }
    }
}

/// The epilogue's loop for one combination of terms (the closures inline, so each combination
/// compiles to its own loop with no per-element branches but the ReLU's select).
@inline(__always)
private func epilogueRows(_ rows: Range<Int>, _ c: Int, _ y: UnsafeMutablePointer<Float>, _ relu: Bool,
                          bias: (Int) -> Vec, residual: (Int) -> Vec,
                          biasScalar: (Int) -> Float, residualScalar: (Int) -> Float) {
    for p in rows {
        let row = p * c
        var o = 0
        while o + 16 <= c {
            var v = load(y + row + o) + bias(o) + residual(row + o)
            if relu { v = v.replacing(with: 0, where: v .< 0) }
            store(v, y + row + o)
            o += 16
        }
        while o < c {
            let v = y[row + o] + biasScalar(o) + residualScalar(row + o)
            y[row + o] = relu ? max(v, 0) : v
            o += 1
        }
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

    public init(_ s: Conv2dShape, weight: UnsafePointer<Float>, algorithm: ConvAlgorithm? = nil) {
        shape = s
        let alg = algorithm ?? ConvAlgorithm.choose(s, .forward)
        precondition(alg.supports(s), "ConvForwardPlan: \(alg) does not support \(s)")
        self.algorithm = alg
        if alg == .direct {
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
            runDirectPass(Self.directPass(s, batch: batch), x: input, weights: packed!, tile: tile!, out: output,
                          threads: threads)
        case .gemm:
            gemmForward(s, input: input, weight: weightCopy!, output: output, threads: threads)
        case .grouped:
            groupedNHWC(s, .forward, a: input, b: weightCopy!, out: output, bias: nil, threads: threads)
        }
        applyConvEpilogue(epilogue, pixels: batch * s.outH * s.outW, channels: s.outChannels, output,
                          threads: threads)
    }
}
