/// Shape of a 2-D convolution over an NCHW batch with weight `[O, C/groups, kh, kw]`.
public struct Conv2dShape: Sendable, Equatable {
    public var batch, inChannels, height, width, outChannels: Int
    public var kernelH, kernelW, strideH, strideW, padH, padW, groups: Int

    public init(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int,
                kernelH: Int, kernelW: Int, strideH: Int = 1, strideW: Int = 1,
                padH: Int = 0, padW: Int = 0, groups: Int = 1) {
        self.batch = batch; self.inChannels = inChannels; self.height = height; self.width = width
        self.outChannels = outChannels; self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW; self.padH = padH; self.padW = padW
        self.groups = groups
    }

    public var outH: Int { (height + 2 * padH - kernelH) / strideH + 1 }
    public var outW: Int { (width + 2 * padW - kernelW) / strideW + 1 }

    var geometryPerGroup: ConvGeometry {
        ConvGeometry(channels: inChannels / groups, height: height, width: width, kernelH: kernelH,
                     kernelW: kernelW, strideH: strideH, strideW: strideW, padH: padH, padW: padW)
    }
}

/// Splits a convolution over the batch: with enough images every thread takes whole images and runs
/// single-threaded GEMMs (no synchronisation inside a layer); with fewer images than threads the
/// images run one by one and the GEMM itself is parallel.
@inline(__always)
func forEachImage(_ s: Conv2dShape, threads: Int?, _ body: (_ images: Range<Int>, _ gemmThreads: Int, _ worker: Int) -> Void) {
    let t = threads ?? Threading.threadCount
    if s.batch >= t && t > 1 {
        let workers = t
        withoutActuallyEscaping(body) { body in
            let counter = UncheckedSendable(body)
            parallelFor(workers, threads: t) { range in
                for w in range {
                    let lo = s.batch * w / workers, hi = s.batch * (w + 1) / workers
                    counter.value(lo..<hi, 1, w)
                }
            }
        }
    } else {
        body(0..<s.batch, t, 0)
    }
}

/// output[N, O, outH, outW] = conv(input) (+ bias[O]); im2col + GEMM per image and group
/// (a 1x1 stride-1 convolution needs no im2col: the image itself is the GEMM's right operand).
public func conv2dForward(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let g = s.geometryPerGroup, spatial = s.outH * s.outW
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    let direct = s.kernelH == 1 && s.kernelW == 1 && s.strideH == 1 && s.strideW == 1 && s.padH == 0 && s.padW == 0
    let out = UncheckedSendable(output)
    forEachImage(s, threads: threads) { images, gemmThreads, _ in
        let col = UnsafeMutablePointer<Float>.allocate(capacity: direct ? 1 : max(1, g.patchSize * spatial))
        defer { col.deallocate() }
        for n in images {
            for gi in 0..<s.groups {
                let x = input + (n * s.inChannels + gi * cg) * s.height * s.width
                if !direct { im2col(g, x, col) }
                sgemm(transA: false, transB: false, m: og, n: spatial, k: g.patchSize,
                      a: weight + gi * og * g.patchSize, lda: g.patchSize, b: direct ? x : UnsafePointer(col), ldb: spatial,
                      c: out.value + (n * s.outChannels + gi * og) * spatial, ldc: spatial, threads: gemmThreads)
            }
            if let bias {
                for o in 0..<s.outChannels {
                    let y = out.value + (n * s.outChannels + o) * spatial
                    let v = bias[o]
                    for i in 0..<spatial { y[i] += v }
                }
            }
        }
    }
}

/// gradInput[N, C, H, W] = convᵀ(gradOutput), overwritten.
public func conv2dBackwardData(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               gradInput: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let g = s.geometryPerGroup, spatial = s.outH * s.outW
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    let direct = s.kernelH == 1 && s.kernelW == 1 && s.strideH == 1 && s.strideW == 1 && s.padH == 0 && s.padW == 0
    let gin = UncheckedSendable(gradInput)
    forEachImage(s, threads: threads) { images, gemmThreads, _ in
        let col = UnsafeMutablePointer<Float>.allocate(capacity: direct ? 1 : max(1, g.patchSize * spatial))
        defer { col.deallocate() }
        for n in images {
            let gx = gin.value + n * s.inChannels * s.height * s.width
            if !direct { gx.update(repeating: 0, count: s.inChannels * s.height * s.width) }
            for gi in 0..<s.groups {
                let dst = gx + gi * cg * s.height * s.width
                sgemm(transA: true, transB: false, m: g.patchSize, n: spatial, k: og,
                      a: weight + gi * og * g.patchSize, lda: g.patchSize,
                      b: gradOutput + (n * s.outChannels + gi * og) * spatial, ldb: spatial,
                      c: direct ? dst : col, ldc: spatial, threads: gemmThreads)
                if !direct { col2im(g, col, dst) }
            }
        }
    }
}

/// gradWeight[O, C/groups, kh, kw] and gradBias[O], overwritten. The batch is cut into a fixed number
/// of image chunks (set by the batch size, never by the thread count); each chunk sums its images into
/// a private partial and the partials are added in chunk order, so the result is bit-identical for any
/// thread count.
public func conv2dBackwardWeight(_ s: Conv2dShape, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                                 gradWeight: UnsafeMutablePointer<Float>, gradBias: UnsafeMutablePointer<Float>?,
                                 threads: Int? = nil) {
    let g = s.geometryPerGroup, spatial = s.outH * s.outW
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    let direct = s.kernelH == 1 && s.kernelW == 1 && s.strideH == 1 && s.strideW == 1 && s.padH == 0 && s.padW == 0
    let wsize = s.outChannels * g.patchSize
    let chunks = max(1, min(s.batch, 8))
    let t = threads ?? Threading.threadCount
    let partials = UnsafeMutablePointer<Float>.allocate(capacity: chunks * wsize)
    defer { partials.deallocate() }
    let box = UncheckedSendable(partials)
    // With fewer chunks than threads, the chunks run one by one with a parallel GEMM inside.
    let gemmThreads = chunks >= t ? 1 : t
    parallelFor(chunks, threads: chunks >= t ? t : 1) { range in
        let col = UnsafeMutablePointer<Float>.allocate(capacity: direct ? 1 : max(1, g.patchSize * spatial))
        defer { col.deallocate() }
        for chunk in range {
            let acc = box.value + chunk * wsize
            acc.update(repeating: 0, count: wsize)
            for n in (s.batch * chunk / chunks)..<(s.batch * (chunk + 1) / chunks) {
                for gi in 0..<s.groups {
                    let x = input + (n * s.inChannels + gi * cg) * s.height * s.width
                    if !direct { im2col(g, x, col) }
                    sgemm(transA: false, transB: true, m: og, n: g.patchSize, k: spatial,
                          a: gradOutput + (n * s.outChannels + gi * og) * spatial, lda: spatial,
                          b: direct ? x : UnsafePointer(col), ldb: spatial, beta: 1, c: acc + gi * og * g.patchSize,
                          ldc: g.patchSize, threads: gemmThreads)
                }
            }
        }
    }
    gradWeight.update(from: partials, count: wsize)
    for w in 1..<chunks { axpy(wsize, 1, partials + w * wsize, gradWeight) }
    if let gradBias {
        for o in 0..<s.outChannels {
            var acc: Float = 0
            for n in 0..<s.batch { acc += sum(spatial, gradOutput + (n * s.outChannels + o) * spatial) }
            gradBias[o] = acc
        }
    }
}
