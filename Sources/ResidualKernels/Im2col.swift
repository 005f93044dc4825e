/// Geometry of a 2-D convolution or pooling window over one NCHW image.
public struct ConvGeometry: Sendable, Equatable {
    public var channels, height, width: Int
    public var kernelH, kernelW: Int
    public var strideH, strideW: Int
    public var padH, padW: Int

    public init(channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int,
                strideH: Int = 1, strideW: Int = 1, padH: Int = 0, padW: Int = 0) {
        self.channels = channels; self.height = height; self.width = width
        self.kernelH = kernelH; self.kernelW = kernelW
        self.strideH = strideH; self.strideW = strideW
        self.padH = padH; self.padW = padW
    }

    public var outH: Int { (height + 2 * padH - kernelH) / strideH + 1 }
    public var outW: Int { (width + 2 * padW - kernelW) / strideW + 1 }
    /// Rows of the im2col matrix: `channels * kernelH * kernelW`.
    public var patchSize: Int { channels * kernelH * kernelW }
}

/// Unfolds one image `x[C, H, W]` into `col[C*kh*kw, outH*outW]` (zeros where the window hangs over
/// the padding), so a convolution becomes one GEMM with the `[O, C*kh*kw]` weight matrix.
public func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
    let oh = g.outH, ow = g.outW
    var row = 0
    for c in 0..<g.channels {
        let xc = x + c * g.height * g.width
        for ky in 0..<g.kernelH {
            for kx in 0..<g.kernelW {
                let dst = col + row * oh * ow
                for oy in 0..<oh {
                    let iy = oy * g.strideH - g.padH + ky
                    let d = dst + oy * ow
                    if iy < 0 || iy >= g.height {
                        d.update(repeating: 0, count: ow)
                        continue
                    }
                    let src = xc + iy * g.width
                    for ox in 0..<ow {
                        let ix = ox * g.strideW - g.padW + kx
                        d[ox] = (ix >= 0 && ix < g.width) ? src[ix] : 0
                    }
                }
                row += 1
            }
        }
    }
}

/// The adjoint of `im2col`: adds each column entry back into the image position it was read from.
/// `x` is accumulated into, not overwritten.
public func col2im(_ g: ConvGeometry, _ col: UnsafePointer<Float>, _ x: UnsafeMutablePointer<Float>) {
    let oh = g.outH, ow = g.outW
    var row = 0
    for c in 0..<g.channels {
        let xc = x + c * g.height * g.width
        for ky in 0..<g.kernelH {
            for kx in 0..<g.kernelW {
                let src = col + row * oh * ow
                for oy in 0..<oh {
                    let iy = oy * g.strideH - g.padH + ky
                    if iy < 0 || iy >= g.height { continue }
                    let d = xc + iy * g.width
                    let s = src + oy * ow
                    for ox in 0..<ow {
                        let ix = ox * g.strideW - g.padW + kx
                        if ix >= 0 && ix < g.width { d[ix] += s[ox] }
                    }
                }
                row += 1
            }
        }
    }
}
