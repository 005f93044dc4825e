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

/// Output columns `ox` whose input column `ox*stride - pad + kx` lies inside `0..<width`.
@inline(__always)
func validRange(_ out: Int, _ size: Int, _ stride: Int, _ pad: Int, _ k: Int) -> Range<Int> {
    // ox*stride - pad + k >= 0  <=>  ox >= ceil((pad - k) / stride)
    let lo = max(0, (pad - k + stride - 1) / stride)
    // ox*stride - pad + k <= size - 1  <=>  ox <= floor((size - 1 + pad - k) / stride)
    let hiNumerator = size - 1 + pad - k
    let hi = hiNumerator < 0 ? 0 : min(out, hiNumerator / stride + 1)
    return lo..<max(lo, hi)
}

/// Unfolds one image `x[C, H, W]` into `col[C*kh*kw, outH*outW]` (zeros where the window hangs over
/// the padding), so a convolution becomes one GEMM with the `[O, C*kh*kw]` weight matrix. Each row of
/// `col` is a copy of (strided) input rows with zero margins: the valid column range is computed
/// once per kernel offset, so the inner loop has no bounds tests (a plain copy when stride is 1).
public func im2col(_ g: ConvGeometry, _ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>) {
    let oh = g.outH, ow = g.outW
    var row = 0
    for c in 0..<g.channels {
        let xc = x + c * g.height * g.width
        for ky in 0..<g.kernelH {
            let rows = validRange(oh, g.height, g.strideH, g.padH, ky)
            for kx in 0..<g.kernelW {
                let cols = validRange(ow, g.width, g.strideW, g.padW, kx)
                let dst = col + row * oh * ow
                if rows.lowerBound > 0 { dst.update(repeating: 0, count: rows.lowerBound * ow) }
                if rows.upperBound < oh { (dst + rows.upperBound * ow).update(repeating: 0, count: (oh - rows.upperBound) * ow) }
                for oy in rows {
                    let d = dst + oy * ow
                    let src = xc + (oy * g.strideH - g.padH + ky) * g.width + kx - g.padW
                    if cols.lowerBound > 0 { d.update(repeating: 0, count: cols.lowerBound) }
                    if cols.upperBound < ow { (d + cols.upperBound).update(repeating: 0, count: ow - cols.upperBound) }
                    if g.strideW == 1 {
                        (d + cols.lowerBound).update(from: src + cols.lowerBound, count: cols.count)
                    } else {
                        let s = g.strideW
                        for ox in cols { d[ox] = src[ox * s] }
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
            let rows = validRange(oh, g.height, g.strideH, g.padH, ky)
            for kx in 0..<g.kernelW {
                let cols = validRange(ow, g.width, g.strideW, g.padW, kx)
                let src = col + row * oh * ow
                for oy in rows {
                    let d = xc + (oy * g.strideH - g.padH + ky) * g.width + kx - g.padW
                    let sp = src + oy * ow
                    if g.strideW == 1 {
                        axpy(cols.count, 1, sp + cols.lowerBound, d + cols.lowerBound)
                    } else {
                        let s = g.strideW
                        for ox in cols { d[ox * s] += sp[ox] }
                    }
                }
                row += 1
            }
        }
    }
}
