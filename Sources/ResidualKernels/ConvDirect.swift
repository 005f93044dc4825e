// Direct ("implicit GEMM") convolution on NHWC data: no im2col matrix is ever built. The inner loop is
// `convTileV` (ConvMicrokernels.swift): R output pixels of one output row x V*16 output channels in
// registers, one broadcast of an input value per pixel and V vector loads of packed weights per step.
//
// In NHWC the (kx, c) entries one kernel row touches form one contiguous run of kw*C floats of an
// input row, so a kernel row is a single run of kw*C microkernel steps (the 7x7 stem with C = 3 runs
// 21-step segments, not 3-step ones). Tiles whose window hangs over the left or right edge copy their
// few input rows into a small zero-bordered scratch first; rows above or below the image are skipped
// (with the matching weight rows), so interior tiles read the input in place and nothing is padded
// globally. Large kernels are split into channel blocks whose packed weights stay in L2 while a job
// sweeps all of its pixels.

/// Register block of the convolution microkernels: `rows` pixels (or weight rows) by `vectors` x 16
/// channels.
public struct ConvTile: Sendable, Equatable, CustomStringConvertible {
    public var rows: Int, vectors: Int
    public init(rows: Int, vectors: Int) { self.rows = rows; self.vectors = vectors }
    public var description: String { "\(rows)x\(vectors * 16)" }
    var lanes: Int { vectors * 16 }
}

/// Runs the `R x V` block of `convTileV` for `t`, dispatched on literal sizes so that each call site
/// inlines exactly the register blocks of `supportedConvTiles` (callers handle row tails themselves).
@inline(__always)
func convTile(_ t: ConvTile, outer: Int, aOuter: Int, bOuter: Int, inner: Int, aInner: Int, length: Int,
              a: UnsafePointer<Float>, rowStride: Int, kStride: Int, b: UnsafePointer<Float>, bStride: Int,
              c: UnsafeMutablePointer<Float>, cStride: Int, accumulate: Bool) {
    switch (t.vectors, t.rows) {
    case (1, 28):
        convTile1(28, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (1, 24):
        convTile1(24, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (1, 16):
        convTile1(16, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (1, 8):
        convTile1(8, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (1, 4):
        convTile1(4, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (1, 1):
        convTile1(1, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (2, 14):
        convTile2(14, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (2, 12):
        convTile2(12, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (2, 8):
        convTile2(8, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (2, 7):
        convTile2(7, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (2, 4):
        convTile2(4, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (3, 9):
        convTile3(9, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (3, 8):
        convTile3(8, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (4, 6):
        convTile4(6, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    case (4, 4):
        convTile4(4, outer: outer, aOuter: aOuter, bOuter: bOuter, inner: inner, aInner: aInner, length: length,
                  a: a, rowStride: rowStride, kStride: kStride, b: b, bStride: bStride, c: c, cStride: cStride,
                  accumulate: accumulate)
    default:
        fatalError("convTile: unsupported register block \(t)")
    }
}

/// The register blocks `convTile` instantiates.
let supportedConvTiles: [ConvTile] = [
    ConvTile(rows: 28, vectors: 1),
    ConvTile(rows: 24, vectors: 1),
    ConvTile(rows: 16, vectors: 1),
    ConvTile(rows: 8, vectors: 1),
    ConvTile(rows: 4, vectors: 1),
    ConvTile(rows: 1, vectors: 1),
    ConvTile(rows: 14, vectors: 2),
    ConvTile(rows: 12, vectors: 2),
    ConvTile(rows: 8, vectors: 2),
    ConvTile(rows: 7, vectors: 2),
    ConvTile(rows: 4, vectors: 2),
    ConvTile(rows: 9, vectors: 3),
    ConvTile(rows: 8, vectors: 3),
    ConvTile(rows: 6, vectors: 4),
    ConvTile(rows: 4, vectors: 4),
]

/// One direct pass over NHWC data:
/// `out[n, oy, ox, :] = Σ in[n, oy*sy - padT + ky, ox*sx - padL + kx, c] * w[ky, kx, c, :]`, reads
/// outside the input being zero, into an output with arbitrary strides (backward-data writes one
/// stride phase of the input gradient per pass, and its `pad` may be negative).
struct DirectPass {
    var batch, inH, inW, inC: Int
    var outH, outW, outC: Int
    var kh, kw, sy, sx, padT, padL: Int
    var outImage, outRow, outPixel: Int

    var flops: Int { 2 * batch * outH * outW * outC * kh * kw * inC }
}

/// Weights packed for a direct pass: `[output block][channel block][ky][kx][c][lanes]`, zero beyond the
/// output channels. A job runs a group of `group` output blocks on each pixel tile while the tile's
/// input is in L1, one channel block (`kc` channels) at a time, so that the group's weights for one
/// channel block (kh*kw*kc*lanes*group floats) stay in L2 while the job sweeps its pixels.
struct DirectWeights {
    var lanes: Int, kc: Int, blocks: Int, group: Int
    var blockStride: Int
    let data: UnsafeMutablePointer<Float>

    init(_ p: DirectPass, lanes: Int) {
        self.lanes = lanes
        let taps = p.kh * p.kw
        blocks = (p.outC + lanes - 1) / lanes
        let budget = 512 * 1024 / 4, perChannel = taps * lanes
        group = min(blocks, max(1, budget / (perChannel * min(p.inC, 64))))
        let fit = max(16, budget / (perChannel * group))
        let parts = (p.inC + fit - 1) / fit
        kc = parts == 1 ? p.inC : ((p.inC + parts - 1) / parts + 15) / 16 * 16
        blockStride = taps * p.inC * lanes
        data = .allocate(capacity: blocks * blockStride)
    }

    func deallocate() { data.deallocate() }

    /// Packs the weight element for output `o`, input `c`, packed tap `t` from
    /// `w[o * oStride + c * cStride + tapIndex[t]]`, so forward and backward-data (transposed, flipped)
    /// share the loop. The innermost loop fills one 16-lane vector from 16 source rows read
    /// sequentially.
    func pack(_ p: DirectPass, _ w: UnsafePointer<Float>, oStride: Int, cStride: Int, tapIndex: [Int]) {
        let taps = p.kh * p.kw
        tapIndex.withUnsafeBufferPointer { tap in
            for blk in 0..<blocks {
                for c0 in stride(from: 0, to: p.inC, by: kc) {
                    let kcb = min(kc, p.inC - c0)
                    let base = data + blk * blockStride + taps * c0 * lanes
                    for l0 in stride(from: 0, to: lanes, by: 16) {
                        let oBase = blk * lanes + l0, valid = max(0, min(16, p.outC - oBase))
                        for c in 0..<kcb {
                            let src = w + oBase * oStride + (c0 + c) * cStride
                            for t in 0..<taps {
                                let d = base + (t * kcb + c) * lanes + l0
                                let s = src + tap[t]
                                if valid == 16 {
                                    for l in 0..<16 { d[l] = s[l * oStride] }
                                } else {
                                    for l in 0..<16 { d[l] = l < valid ? s[l * oStride] : 0 }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Runs a direct pass split into jobs of (group of output-channel blocks, chunk of pixel tiles). For
/// each channel block a job sweeps its tiles; on each tile it runs every output block of its group.
/// Every output element sees the same sequence of FMAs whatever the split, so results do not depend on
/// the thread count.
func runDirectPass(_ p: DirectPass, x: UnsafePointer<Float>, weights w: DirectWeights, tile: ConvTile,
                   out: UnsafeMutablePointer<Float>, threads: Int?) {
    let lanes = tile.lanes, R = tile.rows
    let colTiles = (p.outW + R - 1) / R
    let tiles = p.batch * p.outH * colTiles
    let t = p.flops < 2_000_000 ? 1 : (threads ?? Threading.threadCount)
    let groups = (w.blocks + w.group - 1) / w.group
    var chunks = max(1, (2 * t + groups - 1) / groups)
    while (groups * chunks) % t != 0 && chunks < 4 * t { chunks += 1 }
    chunks = min(chunks, tiles)
    let scratchWidth = (R - 1) * p.sx + p.kw
    let box = UncheckedSendable((x, out))
    parallelFor(groups * chunks, threads: t) { range in
        let (x, out) = box.value
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: p.kh * scratchWidth * w.kc + 16)
        let result = UnsafeMutablePointer<Float>.allocate(capacity: R * lanes)
        defer { scratch.deallocate(); result.deallocate() }
        for job in range {
            let grp = job / chunks, chunk = job % chunks
            let t0 = tiles * chunk / chunks, t1 = tiles * (chunk + 1) / chunks
            let b0 = grp * w.group, b1 = min(w.blocks, b0 + w.group)
            for c0 in stride(from: 0, to: p.inC, by: w.kc) {
                let kcb = min(w.kc, p.inC - c0)
                let first = c0 == 0
                for tl in t0..<t1 {
                    let n = tl / (p.outH * colTiles), rest = tl % (p.outH * colTiles)
                    let oy = rest / colTiles, ox0 = (rest % colTiles) * R
                    let iyTop = oy * p.sy - p.padT
                    let kyLo = max(0, -iyTop), kyHi = max(kyLo, min(p.kh, p.inH - iyTop))
                    let ixLo = ox0 * p.sx - p.padL, ixHi = ixLo + scratchWidth
                    var a: UnsafePointer<Float>, aOuter: Int, pixel: Int
                    if ixLo >= 0 && ixHi <= p.inW {
                        a = x + ((n * p.inH + iyTop + kyLo) * p.inW + ixLo) * p.inC + c0
                        aOuter = p.inW * p.inC
                        pixel = p.inC
                    } else {
                        // Edge tile: its rows, zero-bordered, channels c0..<c0+kcb.
                        let lo = max(0, -ixLo), hi = max(lo, min(scratchWidth, p.inW - ixLo))
                        for r in 0..<(kyHi - kyLo) {
                            let dst = scratch + r * scratchWidth * kcb
                            let src = x + ((n * p.inH + iyTop + kyLo + r) * p.inW + ixLo) * p.inC + c0
                            if lo > 0 { dst.update(repeating: 0, count: lo * kcb) }
                            if kcb == p.inC {
                                (dst + lo * kcb).update(from: src + lo * p.inC, count: (hi - lo) * kcb)
                            } else {
                                for col in lo..<hi { (dst + col * kcb).update(from: src + col * p.inC, count: kcb) }
                            }
                            if hi < scratchWidth {
                                (dst + hi * kcb).update(repeating: 0, count: (scratchWidth - hi) * kcb)
                            }
                        }
                        a = UnsafePointer(scratch)
                        aOuter = scratchWidth * kcb
                        pixel = kcb
                    }
                    // One contiguous run per kernel row when a pixel holds exactly the block's channels.
                    let run = pixel == kcb
                    let inner = run ? 1 : p.kw, length = run ? p.kw * kcb : kcb
                    let fullRow = ox0 + R <= p.outW
                    for blk in b0..<b1 {
                        let o0 = blk * lanes, validLanes = min(lanes, p.outC - o0)
                        let b = UnsafePointer(w.data + blk * w.blockStride + p.kh * p.kw * c0 * lanes
                                              + kyLo * p.kw * kcb * lanes)
                        let dst = out + n * p.outImage + oy * p.outRow + ox0 * p.outPixel + o0
                        if fullRow && validLanes == lanes {
                            convTile(tile, outer: kyHi - kyLo, aOuter: aOuter, bOuter: p.kw * kcb * lanes,
                                     inner: inner, aInner: pixel, length: length, a: a, rowStride: p.sx * pixel,
                                     kStride: 1, b: b, bStride: lanes, c: dst, cStride: p.outPixel,
                                     accumulate: !first)
                        } else {
                            convTile(tile, outer: kyHi - kyLo, aOuter: aOuter, bOuter: p.kw * kcb * lanes,
                                     inner: inner, aInner: pixel, length: length, a: a, rowStride: p.sx * pixel,
                                     kStride: 1, b: b, bStride: lanes, c: result, cStride: lanes, accumulate: false)
                            for r in 0..<min(R, p.outW - ox0) {
                                let d = dst + r * p.outPixel, s = result + r * lanes
                                if first {
                                    d.update(from: s, count: validLanes)
                                } else {
                                    for l in 0..<validLanes { d[l] += s[l] }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Share of the FMA peak each register block sustains inside the direct forward pass (one core,
/// ResNet layer shapes without wasted rows or lanes; docs/Kernels.md has the sweep). One-vector
/// blocks run at about half the peak: this core issues about one broadcast load per cycle and every
/// FMA of a 16-lane block needs its own broadcast. R x 4 blocks beyond 6 rows would need 33 registers.
func directEfficiency(_ t: ConvTile) -> Double {
    switch (t.rows, t.vectors) {
    case (14, 2), (4, 4): return 0.93
    case (12, 2), (8, 2), (9, 3), (8, 3): return 0.90
    case (7, 2): return 0.88
    case (6, 4): return 0.85
    case (4, 2): return 0.75
    case (1, _): return 0.15
    default: return t.vectors == 1 ? 0.48 : 0.7
    }
}

/// Chooses the register block for a direct forward-type pass: the least FMA issue slots, counting the
/// wasted columns of row tails and channel lanes beyond `outC`, divided by the block's efficiency.
func directTile(outC: Int, outW: Int) -> ConvTile {
    let vecs = (outC + 15) / 16
    var best = ConvTile(rows: 1, vectors: 1), bestCost = Double.infinity
    for c in supportedConvTiles {
        let blocks = (vecs + c.vectors - 1) / c.vectors
        let tiles = (outW + c.rows - 1) / c.rows
        let cost = Double(blocks * tiles * c.rows * c.vectors) / directEfficiency(c)
        if cost < bestCost { best = c; bestCost = cost }
    }
    return best
}

/// Packs the forward weight `[O, C, kh, kw]` for a direct pass.
func packForwardWeights(_ p: DirectPass, _ weight: UnsafePointer<Float>, lanes: Int) -> DirectWeights {
    let w = DirectWeights(p, lanes: lanes)
    let taps = p.kh * p.kw
    w.pack(p, weight, oStride: p.inC * taps, cStride: taps, tapIndex: Array(0..<taps))
    return w
}

// MARK: - Backward-weight

/// Backward-weight of a direct pass into `grad[ky][j][o]` (`kh x jStride x oPad`, overwritten),
/// where `j = kx*C + c` indexes one kernel row's contiguous (kx, c) run:
/// `grad[ky][kx*C + c][o] += Σ_pixels in[pixel moved by (ky, kx), c] * dy[pixel, o]`.
///
/// Jobs are (kernel row, block of R consecutive j, block of output lanes). When R divides C
/// (`perTap`), a job's j block lies within one tap and its pixel range is the one where that tap
/// lands inside the input, so the input is read in place. Otherwise the caller passes an input padded
/// so every tap of every pixel is inside (`perTap == false`, `pad == 0`), and j blocks run across taps
/// (the 7x7 stem's 21-float (kx, c) runs). Each thread sweeps the batch in chunks of output rows small
/// enough to stay in L2 and runs all of its jobs on each chunk; every gradient element is summed over
/// the pixels in the same order whatever the thread count.
func runDirectWeightPass(_ p: DirectPass, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dyPixel: Int,
                         tile: ConvTile, perTap: Bool, grad: UnsafeMutablePointer<Float>, jStride: Int,
                         oPad: Int, threads: Int?) {
    let lanes = tile.lanes, R = tile.rows
    let jTiles = jStride / R, oBlocks = oPad / lanes
    let jobs = p.kh * jTiles * oBlocks
    let rowBytes = 4 * (p.outW * dyPixel + p.sy * p.inW * p.inC)
    let chunkRows = max(1, min(p.outH, 256 * 1024 / max(1, rowBytes)))
    let t = p.flops < 2_000_000 ? 1 : (threads ?? Threading.threadCount)
    let box = UncheckedSendable((x, dy, grad))
    parallelFor(jobs, threads: t) { range in
        let (x, dy, grad) = box.value
        // A job's first tile call overwrites its block of `grad`; blocks never visited are zeroed.
        var visited = [Bool](repeating: false, count: range.count)
        defer {
            for job in range where !visited[job - range.lowerBound] {
                let ky = job / (jTiles * oBlocks), rest = job % (jTiles * oBlocks)
                let j0 = (rest / oBlocks) * R, o0 = (rest % oBlocks) * lanes
                for r in 0..<R { (grad + (ky * jStride + j0 + r) * oPad + o0).update(repeating: 0, count: lanes) }
            }
        }
        for n in 0..<p.batch {
            for r0 in stride(from: 0, to: p.outH, by: chunkRows) {
                let r1 = min(p.outH, r0 + chunkRows)
                for job in range {
                    let ky = job / (jTiles * oBlocks), rest = job % (jTiles * oBlocks)
                    let j0 = (rest / oBlocks) * R, o0 = (rest % oBlocks) * lanes
                    let kx = perTap ? j0 / p.inC : 0
                    let rows = validRange(p.outH, p.inH, p.sy, p.padT, ky).clamped(to: r0..<r1)
                    let cols = validRange(p.outW, p.inW, p.sx, p.padL, kx)
                    if rows.isEmpty || cols.isEmpty { continue }
                    let iy = rows.lowerBound * p.sy - p.padT + ky, ix = cols.lowerBound * p.sx - p.padL
                    convTile(tile, outer: rows.count, aOuter: p.sy * p.inW * p.inC, bOuter: p.outW * dyPixel,
                             inner: 1, aInner: 0, length: cols.count,
                             a: x + ((n * p.inH + iy) * p.inW + ix) * p.inC + j0, rowStride: 1,
                             kStride: p.sx * p.inC,
                             b: dy + ((n * p.outH + rows.lowerBound) * p.outW + cols.lowerBound) * dyPixel + o0,
                             bStride: dyPixel, c: grad + (ky * jStride + j0) * oPad + o0, cStride: oPad,
                             accumulate: visited[job - range.lowerBound])
                    visited[job - range.lowerBound] = true
                }
            }
        }
    }
}

/// Register block for backward-weight over `run` weight rows (C when `divisible`, else kw*C). Here
/// the vector operand is the output gradient, re-read from L2 by every job, so wide blocks cost
/// bandwidth: measured best are 8 x 48 for 128+ output channels, 4 x 64 for 64, 8 x 32 otherwise
/// (docs/Kernels.md). Without a divisible choice, the forward cost model decides.
func weightTile(run: Int, outC: Int, divisible: Bool) -> ConvTile? {
    if divisible {
        let preferred: [ConvTile] = outC >= 128 ? [ConvTile(rows: 8, vectors: 3), ConvTile(rows: 8, vectors: 2)]
            : outC % 64 == 0 ? [ConvTile(rows: 4, vectors: 4), ConvTile(rows: 8, vectors: 2)]
            : outC % 32 == 0 ? [ConvTile(rows: 8, vectors: 2)] : [ConvTile(rows: 8, vectors: 1)]
        return preferred.first { run % $0.rows == 0 }
    }
    let vecs = (outC + 15) / 16
    var best: ConvTile? = nil, bestCost = Double.infinity
    for c in supportedConvTiles where c.rows >= 4 {
        let blocks = (vecs + c.vectors - 1) / c.vectors
        let cost = Double(blocks * ((run + c.rows - 1) / c.rows) * c.rows * c.vectors) / directEfficiency(c)
        if cost < bestCost { best = c; bestCost = cost }
    }
    return best
}
