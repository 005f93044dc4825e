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
    ///
    /// Output blocks are packed in parallel (each thread writes its own blocks): at batch 1 the
    /// packing of a 512-channel 3x3 weight is a sizeable share of the pass.
    func pack(_ p: DirectPass, _ w: UnsafePointer<Float>, oStride: Int, cStride: Int, tapIndex: [Int],
              threads: Int? = nil) {
        let box = UncheckedSendable(w)
        let small = blockStride * blocks < 65_536 || directThreads(p, threads) == 1
        parallelFor(blocks, minimumPerThread: small ? Int.max : 1, threads: threads) {
            pack(p, box.value, oStride: oStride, cStride: cStride, tapIndex: tapIndex, blocks: $0)
        }
    }

    func pack(_ p: DirectPass, _ w: UnsafePointer<Float>, oStride: Int, cStride: Int, tapIndex: [Int],
              blocks range: Range<Int>) {
        let taps = p.kh * p.kw
        tapIndex.withUnsafeBufferPointer { tap in
            for blk in range {
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

/// Threads for a direct forward-type pass: one below 16 MFLOP. Waking the second core and reading
/// the input into its cold caches costs tens of microseconds, more than it saves there (on the quiet
/// machine ResNet-18's 1x1 projections at batch 1, 12.8 MFLOP, took 0.06-0.09 ms on 1 thread and
/// 0.08-0.12 ms on 2).
func directThreads(_ p: DirectPass, _ threads: Int?) -> Int {
    p.flops < 16_000_000 ? 1 : (threads ?? Threading.threadCount)
}

/// How `runDirectPass` cuts its work, `blocks` output-channel blocks x `tiles` pixel tiles, into jobs:
/// `blockParts` contiguous ranges of blocks times `tileParts` contiguous ranges of tiles, job `j`
/// being (`j / tileParts`, `j % tileParts`); `parallelFor` hands each thread a contiguous run of jobs.
struct DirectSplit: Equatable, CustomStringConvertible {
    var blockParts: Int, tileParts: Int
    var description: String { "\(blockParts)x\(tileParts)" }
}

/// The split whose busiest thread gets the fewest (block, tile) units, counted exactly through
/// `parallelFor`'s contiguous cut; among equals, the one with fewer jobs (each job re-reads its
/// weights, or its input), then the one that splits blocks when `preferBlocks` (weights larger than
/// the input: each thread then reads only its share of the weights) and tiles otherwise.
///
/// Small maps have few tiles (ResNet-18 conv5_x at batch 1: 7 rows of 7 pixels) and large layers few
/// blocks (8 blocks of 32 output channels at 256): a fixed choice of either leaves one core idle for
/// part of the pass, e.g. 7 tiles on 2 threads is 4 + 3.
func directSplit(blocks: Int, tiles: Int, threads t: Int, preferBlocks: Bool) -> DirectSplit {
    var best = DirectSplit(blockParts: 1, tileParts: 1)
    if t <= 1 || blocks * tiles <= 1 { return best }
    var bestKey = (Int.max, Int.max, Int.max)
    for bp in 1...min(blocks, 4 * t) {
        for tp in 1...min(tiles, 4 * t) {
            let jobs = bp * tp, used = min(t, jobs)
            var worst = 0
            for i in 0..<used {
                var work = 0
                for j in (jobs * i / used)..<(jobs * (i + 1) / used) {
                    let bi = j / tp, ti = j % tp
                    work += (blocks * (bi + 1) / bp - blocks * bi / bp) * (tiles * (ti + 1) / tp - tiles * ti / tp)
                }
                worst = max(worst, work)
            }
            let key = (worst, jobs, preferBlocks ? tp : bp)
            if key < bestKey { bestKey = key; best = DirectSplit(blockParts: bp, tileParts: tp) }
        }
    }
    return best
}

/// Runs a direct pass split into jobs of (range of output-channel blocks, range of pixel tiles), as
/// `directSplit` chooses. A job walks its blocks in groups whose packed weights fit L2; for each
/// channel block it sweeps its tiles, and on each tile it runs every output block of the group.
/// Every output element sees the same sequence of FMAs whatever the split, so results do not depend on
/// the thread count.
func runDirectPass(_ p: DirectPass, x: UnsafePointer<Float>, weights w: DirectWeights, tile: ConvTile,
                   out: UnsafeMutablePointer<Float>, accumulate: Bool = false, epilogue: ConvEpilogue? = nil,
                   threads: Int?) {
    let lanes = tile.lanes, R = tile.rows
    let reuse = usesTapReuse(p, tile)
    let colTiles = (p.outW + R - 1) / R
    let tiles = p.batch * p.outH * colTiles
    let t = directThreads(p, threads)
    let inputFloats = p.batch * p.inH * p.inW * p.inC, weightFloats = w.blocks * w.blockStride
    let split = directSplit(blocks: w.blocks, tiles: tiles, threads: t, preferBlocks: weightFloats > inputFloats)
    let bp = split.blockParts, tp = split.tileParts
    let scratchWidth = (R - 1) * p.sx + p.kw
    let box = UncheckedSendable((x, out))
    parallelFor(bp * tp, threads: t) { range in
        let (x, out) = box.value
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: p.kh * scratchWidth * w.kc + 16)
        let result = UnsafeMutablePointer<Float>.allocate(capacity: R * lanes)
        defer { scratch.deallocate(); result.deallocate() }
        for job in range {
            let bPart = job / tp, tPart = job % tp
            let t0 = tiles * tPart / tp, t1 = tiles * (tPart + 1) / tp
            let jb0 = w.blocks * bPart / bp, jb1 = w.blocks * (bPart + 1) / bp
            // The job's blocks in L2-sized groups of equal size (8 blocks at most 7 per group: 4 + 4).
            let subgroups = (jb1 - jb0 + w.group - 1) / w.group
            for g in 0..<subgroups {
                let b0 = jb0 + (jb1 - jb0) * g / subgroups, b1 = jb0 + (jb1 - jb0) * (g + 1) / subgroups
                for c0 in stride(from: 0, to: p.inC, by: w.kc) {
                    let kcb = min(w.kc, p.inC - c0)
                    let first = c0 == 0 && !accumulate   // the first channel block stores, later ones add
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
                        let tapReuse = run && reuse
                        for blk in b0..<b1 {
                            let o0 = blk * lanes, validLanes = min(lanes, p.outC - o0)
                            let b = UnsafePointer(w.data + blk * w.blockStride + p.kh * p.kw * c0 * lanes
                                                  + kyLo * p.kw * kcb * lanes)
                            let dst = out + n * p.outImage + oy * p.outRow + ox0 * p.outPixel + o0
                            if tapReuse {
                                let full = fullRow && validLanes == lanes
                                convTap3x16(outer: kyHi - kyLo, aOuter: aOuter, bOuter: p.kw * kcb * lanes,
                                            channels: kcb, a: a, pixel: pixel, b: b, c: full ? dst : result,
                                            cStride: full ? p.outPixel : lanes, accumulate: full && !first)
                                if full { continue }
                                for r in 0..<min(R, p.outW - ox0) {
                                    let d = dst + r * p.outPixel, s = result + r * lanes
                                    if first {
                                        d.update(from: s, count: validLanes)
                                    } else {
                                        for l in 0..<validLanes { d[l] += s[l] }
                                    }
                                }
                            } else if fullRow && validLanes == lanes {
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
                        // Inference (ConvPlan.swift): bias, shortcut and ReLU on the finished tile, in L1.
                        if let epilogue, c0 + kcb == p.inC {
                            let at = n * p.outImage + oy * p.outRow + ox0 * p.outPixel
                            applyConvEpilogueTile(epilogue, rows: min(R, p.outW - ox0), pixelStride: p.outPixel,
                                                  channels: (b0 * lanes)..<min(p.outC, b1 * lanes), out + at,
                                                  offset: at)
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

/// The tile of `convTap3x16`: 3-wide kernels at stride 1 with at most 16 output channels (CIFAR
/// ResNet's 16-channel stage, forward and backward-data), where `convTile1` is broadcast-bound.
let tapReuseTile = ConvTile(rows: 16, vectors: 1)

func usesTapReuse(_ p: DirectPass, _ tile: ConvTile) -> Bool {
    tile == tapReuseTile && p.kw == 3 && p.sx == 1 && p.outC <= 16
}

/// `directTile`, except that 3-wide stride-1 passes with at most 16 output channels take the
/// tap-reuse kernel.
func directTile(_ p: DirectPass) -> ConvTile {
    p.kw == 3 && p.sx == 1 && p.outC <= 16 ? tapReuseTile : directTile(outC: p.outC, outW: p.outW)
}

/// Packs the forward weight `[O, C, kh, kw]` for a direct pass.
func packForwardWeights(_ p: DirectPass, _ weight: UnsafePointer<Float>, lanes: Int,
                        threads: Int? = nil) -> DirectWeights {
    let w = DirectWeights(p, lanes: lanes)
    let taps = p.kh * p.kw
    w.pack(p, weight, oStride: p.inC * taps, cStride: taps, tapIndex: Array(0..<taps), threads: threads)
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

/// Direct 3x3 (kw = 3), stride 1, 16 output lanes, `R = 16` output pixels of one row: each input value
/// is broadcast once and feeds all three horizontal taps (`acc[i - kx] += x[i] * w[kx]`), so a
/// broadcast carries 3 FMAs instead of 1 (the 1-vector `convTile1` is broadcast-bound at about half
/// the FMA peak). The sum runs over kernel rows (`outer`), then channels, then taps.
/// `a`: the tile's first input pixel of its first kernel row (`aOuter` per row, `pixel` per pixel);
/// `b`: packed weights `[ky][kx][c][16]` (`bOuter` per row).
@inline(__always)
func convTap3x16(outer: Int, aOuter: Int, bOuter: Int, channels: Int, a: UnsafePointer<Float>, pixel: Int,
                 b: UnsafePointer<Float>, c: UnsafeMutablePointer<Float>, cStride cs: Int, accumulate: Bool) {
    var c0 = Vec()
    var c1 = Vec()
    var c2 = Vec()
    var c3 = Vec()
    var c4 = Vec()
    var c5 = Vec()
    var c6 = Vec()
    var c7 = Vec()
    var c8 = Vec()
    var c9 = Vec()
    var c10 = Vec()
    var c11 = Vec()
    var c12 = Vec()
    var c13 = Vec()
    var c14 = Vec()
    var c15 = Vec()
    for o in 0..<outer {
        let ar = a + o * aOuter, br = b + o * bOuter
        for ci in 0..<channels {
            let ap = ar + ci
            let w0 = load(br + (0 * channels + ci) * 16)
            let w1 = load(br + (1 * channels + ci) * 16)
            let w2 = load(br + (2 * channels + ci) * 16)
            do { let x = Vec(repeating: ap[0 * pixel])
                c0 = c0.addingProduct(x, w0)
            }
            do { let x = Vec(repeating: ap[1 * pixel])
                c1 = c1.addingProduct(x, w0)
                c0 = c0.addingProduct(x, w1)
            }
            do { let x = Vec(repeating: ap[2 * pixel])
                c2 = c2.addingProduct(x, w0)
                c1 = c1.addingProduct(x, w1)
                c0 = c0.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[3 * pixel])
                c3 = c3.addingProduct(x, w0)
                c2 = c2.addingProduct(x, w1)
                c1 = c1.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[4 * pixel])
                c4 = c4.addingProduct(x, w0)
                c3 = c3.addingProduct(x, w1)
                c2 = c2.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[5 * pixel])
                c5 = c5.addingProduct(x, w0)
                c4 = c4.addingProduct(x, w1)
                c3 = c3.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[6 * pixel])
                c6 = c6.addingProduct(x, w0)
                c5 = c5.addingProduct(x, w1)
                c4 = c4.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[7 * pixel])
                c7 = c7.addingProduct(x, w0)
                c6 = c6.addingProduct(x, w1)
                c5 = c5.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[8 * pixel])
                c8 = c8.addingProduct(x, w0)
                c7 = c7.addingProduct(x, w1)
                c6 = c6.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[9 * pixel])
                c9 = c9.addingProduct(x, w0)
                c8 = c8.addingProduct(x, w1)
                c7 = c7.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[10 * pixel])
                c10 = c10.addingProduct(x, w0)
                c9 = c9.addingProduct(x, w1)
                c8 = c8.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[11 * pixel])
                c11 = c11.addingProduct(x, w0)
                c10 = c10.addingProduct(x, w1)
                c9 = c9.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[12 * pixel])
                c12 = c12.addingProduct(x, w0)
                c11 = c11.addingProduct(x, w1)
                c10 = c10.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[13 * pixel])
                c13 = c13.addingProduct(x, w0)
                c12 = c12.addingProduct(x, w1)
                c11 = c11.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[14 * pixel])
                c14 = c14.addingProduct(x, w0)
                c13 = c13.addingProduct(x, w1)
                c12 = c12.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[15 * pixel])
                c15 = c15.addingProduct(x, w0)
                c14 = c14.addingProduct(x, w1)
                c13 = c13.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[16 * pixel])
                c15 = c15.addingProduct(x, w1)
                c14 = c14.addingProduct(x, w2)
            }
            do { let x = Vec(repeating: ap[17 * pixel])
                c15 = c15.addingProduct(x, w2)
            }
        }
    }
    if accumulate {
        add(c0, c + 0 * cs)
        add(c1, c + 1 * cs)
        add(c2, c + 2 * cs)
        add(c3, c + 3 * cs)
        add(c4, c + 4 * cs)
        add(c5, c + 5 * cs)
        add(c6, c + 6 * cs)
        add(c7, c + 7 * cs)
        add(c8, c + 8 * cs)
        add(c9, c + 9 * cs)
        add(c10, c + 10 * cs)
        add(c11, c + 11 * cs)
        add(c12, c + 12 * cs)
        add(c13, c + 13 * cs)
        add(c14, c + 14 * cs)
        add(c15, c + 15 * cs)
    } else {
        store(c0, c + 0 * cs)
        store(c1, c + 1 * cs)
        store(c2, c + 2 * cs)
        store(c3, c + 3 * cs)
        store(c4, c + 4 * cs)
        store(c5, c + 5 * cs)
        store(c6, c + 6 * cs)
        store(c7, c + 7 * cs)
        store(c8, c + 8 * cs)
        store(c9, c + 9 * cs)
        store(c10, c + 10 * cs)
        store(c11, c + 11 * cs)
        store(c12, c + 12 * cs)
        store(c13, c + 13 * cs)
        store(c14, c + 14 * cs)
        store(c15, c + 15 * cs)
    }
}
