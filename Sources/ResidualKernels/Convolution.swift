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

/// output[N, O, outH, outW] = conv(input) (+ bias[O]); im2col + GEMM per image and group.
public func conv2dForward(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          bias: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let g = s.geometryPerGroup, spatial = s.outH * s.outW
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    let col = UnsafeMutablePointer<Float>.allocate(capacity: max(1, g.patchSize * spatial))
    defer { col.deallocate() }
    for n in 0..<s.batch {
        for gi in 0..<s.groups {
            let x = input + (n * s.inChannels + gi * cg) * s.height * s.width
            im2col(g, x, col)
            sgemm(transA: false, transB: false, m: og, n: spatial, k: g.patchSize,
                  a: weight + gi * og * g.patchSize, lda: g.patchSize, b: col, ldb: spatial,
                  c: output + (n * s.outChannels + gi * og) * spatial, ldc: spatial, threads: threads)
        }
        if let bias {
            for o in 0..<s.outChannels {
                let y = output + (n * s.outChannels + o) * spatial
                for i in 0..<spatial { y[i] += bias[o] }
            }
        }
    }
}

/// gradInput[N, C, H, W] = convᵀ(gradOutput), overwritten.
public func conv2dBackwardData(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                               gradInput: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    let g = s.geometryPerGroup, spatial = s.outH * s.outW
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    let col = UnsafeMutablePointer<Float>.allocate(capacity: max(1, g.patchSize * spatial))
    defer { col.deallocate() }
    gradInput.update(repeating: 0, count: s.batch * s.inChannels * s.height * s.width)
    for n in 0..<s.batch {
        for gi in 0..<s.groups {
            sgemm(transA: true, transB: false, m: g.patchSize, n: spatial, k: og,
                  a: weight + gi * og * g.patchSize, lda: g.patchSize,
                  b: gradOutput + (n * s.outChannels + gi * og) * spatial, ldb: spatial,
                  c: col, ldc: spatial, threads: threads)
            col2im(g, col, gradInput + (n * s.inChannels + gi * cg) * s.height * s.width)
        }
    }
}

/// gradWeight[O, C/groups, kh, kw] and gradBias[O], overwritten.
public func conv2dBackwardWeight(_ s: Conv2dShape, input: UnsafePointer<Float>, gradOutput: UnsafePointer<Float>,
                                 gradWeight: UnsafeMutablePointer<Float>, gradBias: UnsafeMutablePointer<Float>?,
                                 threads: Int? = nil) {
    let g = s.geometryPerGroup, spatial = s.outH * s.outW
    let cg = s.inChannels / s.groups, og = s.outChannels / s.groups
    let col = UnsafeMutablePointer<Float>.allocate(capacity: max(1, g.patchSize * spatial))
    defer { col.deallocate() }
    gradWeight.update(repeating: 0, count: s.outChannels * g.patchSize)
    for n in 0..<s.batch {
        for gi in 0..<s.groups {
            im2col(g, input + (n * s.inChannels + gi * cg) * s.height * s.width, col)
            sgemm(transA: false, transB: true, m: og, n: g.patchSize, k: spatial,
                  a: gradOutput + (n * s.outChannels + gi * og) * spatial, lda: spatial,
                  b: col, ldb: spatial, beta: 1, c: gradWeight + gi * og * g.patchSize, ldc: g.patchSize,
                  threads: threads)
        }
    }
    if let gradBias {
        for o in 0..<s.outChannels {
            var acc: Float = 0
            for n in 0..<s.batch { acc += sum(spatial, gradOutput + (n * s.outChannels + o) * spatial) }
            gradBias[o] = acc
        }
    }
}
