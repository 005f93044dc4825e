// Winograd F(4x4, 3x3) convolution for 3x3 stride-1 layers on NHWC activations.
//
// Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A per 6x6 input tile d and 4x4 output tile (Lavin & Gray 2015,
// "Fast Algorithms for Convolutional Neural Networks"): 36 multiplications per output tile and
// channel pair instead of 144, so the arithmetic is a quarter of the direct count (plus transforms).
// Across channels the element-wise products become 36 independent GEMMs
// `M_ξ[tiles, K] = V_ξ[tiles, C] · U_ξ[C, K]`, which is where the time goes.
//
// Layout of one call:
// - `U` (the transformed weight, ``WinogradWeights``) is `[ξ][panel][c][32]`: for each of the 36
//   positions ξ, the K output channels in panels of 32 (zero-padded), each panel a `C x 32` strip
//   read sequentially by the microkernel.
// - Tiles are processed in blocks of `rows` tiles (a multiple of 8). Per block, `V[ξ][tile][c]` (the
//   transformed inputs, rows `C` floats apart) and `M[ξ][tile][k]` live in per-thread scratch sized
//   to stay in L2 for the deep layers' per-ξ slices.
// - The microkernel computes 8 tiles x 32 output channels: 16 zmm accumulators, one broadcast of
//   V and two vector loads of U per channel step.
// - The output transform writes straight to NHWC, cropping the edge tiles, and applies the
//   epilogue (accumulate into the existing values, bias, residual, ReLU) while the tile is in
//   registers.
//
// Determinism: every output element is the same sequence of floating-point operations whatever block
// its tile falls in and whichever thread computes it (the sum over C runs in channel order inside
// the microkernel; rows and lanes never mix), so the thread count and the job split never change the
// bits.
//
// Accuracy: the transforms scale values by up to ~10 (Bᵀ's entries 4 and 5 in both directions, A's
// 8), so float32 rounding in V, U and M is amplified relative to the direct sum; the measured error
// against a Double reference is a few times the direct kernel's (see the Winograd tests for the
// bound and its justification).

/// The transformed weights `U = G g Gᵀ` of a 3x3 convolution, packed `[36][panels][inC][32]`.
struct WinogradWeights {
    let u: UnsafeMutablePointer<Float>
    /// Input channels of the (equivalent) convolution: the GEMM's inner dimension.
    let inC: Int
    /// Output channels of the (equivalent) convolution.
    let outC: Int
    var panels: Int { (outC + 31) / 32 }

    func deallocate() { UnsafeMutableRawPointer(u).deallocate() }
}

/// The shape of one Winograd pass: a 3x3 stride-1 correlation of `input[N, inH, inW, inC]` with
/// padding `padT`/`padL` producing `output[N, outH, outW, outC]`.
struct WinogradPass {
    var batch, inH, inW, inC, outH, outW, outC, padT, padL: Int
    var tilesH: Int { (outH + 3) / 4 }
    var tilesW: Int { (outW + 3) / 4 }
    var tiles: Int { batch * tilesH * tilesW }
}

/// What the output transform does with each result `y` at element `i` of the output:
/// `out[i] = relu((accumulate ? out[i] : 0) + y + bias[o] + residual[i])`, each term optional, in that
/// order (``applyConvEpilogue(_:pixels:channels:_:threads:)``'s order, so a fused plan is
/// bit-identical to the unfused pass followed by the epilogue).
struct WinogradEpilogue {
    var accumulate = false
    var bias: UnsafePointer<Float>? = nil
    var residual: UnsafePointer<Float>? = nil
    var relu = false
}

// MARK: - Weight transform

/// `U[ξ][k][c] = (G g_{k,c} Gᵀ)[ξ]` for every output channel `k` and input channel `c`, with
/// `g_{k,c} = weight[k][c]` (PyTorch `[O, C, 3, 3]`) or, with `flip`, the kernel backward-data needs:
/// `g_{k,c} = weight[c][k]` rotated by 180 degrees (so `k` runs over the original input channels
/// and `c` over the original output channels).
///
/// Vectorised over 16 output channels `k` (lanes), so each 16-lane result is one contiguous store
/// into its panel. G's rows: (1/4, 0, 0), -(1, 1, 1)/6, -(1, -1, 1)/6, (1/24, 1/12, 1/6),
/// (1/24, -1/12, 1/6), (0, 0, 1).
func winogradTransformWeights(_ weight: UnsafePointer<Float>, outC: Int, inC: Int, flip: Bool,
                              threads: Int?) -> WinogradWeights {
    let count = winogradWeightFloats(outC: outC, inC: inC)
    // Cache-line aligned: each (ξ, panel, c) row of 32 floats is two whole lines, written at once.
    let u = UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64)
        .bindMemory(to: Float.self, capacity: count)
    return winogradTransformWeights(weight, outC: outC, inC: inC, flip: flip, into: u, threads: threads)
}

/// Floats of a transformed weight (either orientation): `36 · ⌈K/32⌉ · 32 · C`.
func winogradWeightFloats(outC: Int, inC: Int) -> Int {
    max(1, 36 * ((outC + 31) / 32) * 32 * inC, 36 * ((inC + 31) / 32) * 32 * outC)
}

/// The transform into caller-provided, 64-byte aligned memory of at least
/// ``winogradWeightFloats(outC:inC:)`` floats. Every element of the packed layout (the zero
/// padding of the last panel included) is written, so the memory may hold anything beforehand.
/// The returned value does not own `u`.
func winogradTransformWeights(_ weight: UnsafePointer<Float>, outC: Int, inC: Int, flip: Bool,
                              into u: UnsafeMutablePointer<Float>, threads: Int?) -> WinogradWeights {
    // Equivalent convolution: K outputs, C inputs.
    let k = flip ? inC : outC, c = flip ? outC : inC
    let panels = (k + 31) / 32
    let box = UncheckedSendable(u)
    parallelFor(panels, minimumPerThread: k * c < 2048 ? Int.max : 1, threads: threads) { range in
        let u = box.value
        // taps[t] (16 lanes each), then G·g as 6 rows of 3 (on the stack: no allocation per job).
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 9 * 16) { tapsBuffer in
        withUnsafeTemporaryAllocation(of: Vec.self, capacity: 18) { ggBuffer in
        let taps = tapsBuffer.baseAddress!, gg = ggBuffer.baseAddress!
        let q = Vec(repeating: 0.25), s = Vec(repeating: 1.0 / 6), a = Vec(repeating: 1.0 / 24),
            b = Vec(repeating: 1.0 / 12)
        @inline(__always) func gcol(_ x0: Vec, _ x1: Vec, _ x2: Vec) -> (Vec, Vec, Vec, Vec, Vec, Vec) {
            let sum = x0 + x2
            return (x0 * q, -(sum + x1) * s, -(sum - x1) * s,
                    x0 * a + x1 * b + x2 * s, x0 * a - x1 * b + x2 * s, x2)
        }
        let xs = panels * c * 32
        for panel in range {
            for ci in 0..<c {
              for half in stride(from: 0, to: 32, by: 16) {
                let k0 = panel * 32 + half, lanes = min(16, max(0, k - k0))
                // Gather the 9 taps of 16 output channels (zero beyond k).
                if lanes < 16 { taps.update(repeating: 0, count: 9 * 16) }
                for l in 0..<lanes {
                    let kk = k0 + l
                    for tap in 0..<9 {
                        taps[tap * 16 + l] = flip ? weight[(ci * inC + kk) * 9 + 8 - tap] : weight[(kk * inC + ci) * 9 + tap]
                    }
                }
                // g's rows are (t0 t1 t2), (t3 t4 t5), (t6 t7 t8): G · g column by column.
                for j in 0..<3 {
                    let r = gcol(load(taps + j * 16), load(taps + (3 + j) * 16), load(taps + (6 + j) * 16))
                    gg[j] = r.0; gg[3 + j] = r.1; gg[6 + j] = r.2; gg[9 + j] = r.3; gg[12 + j] = r.4; gg[15 + j] = r.5
                }
                // (G g) Gᵀ row by row.
                for i in 0..<6 {
                    let r = gcol(gg[i * 3], gg[i * 3 + 1], gg[i * 3 + 2])
                    let dst = u + ((i * 6 * panels + panel) * c + ci) * 32 + half
                    store(r.0, dst); store(r.1, dst + xs); store(r.2, dst + 2 * xs)
                    store(r.3, dst + 3 * xs); store(r.4, dst + 4 * xs); store(r.5, dst + 5 * xs)
                }
              }
            }
        }
        }
        }
    }
    return WinogradWeights(u: u, inC: c, outC: k)
}

// MARK: - Input and output transforms

/// One 6-point column of `Bᵀ d`: Bᵀ's rows (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0),
/// (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1).
@inline(__always)
private func inputColumn(_ d0: Vec, _ d1: Vec, _ d2: Vec, _ d3: Vec, _ d4: Vec, _ d5: Vec)
    -> (Vec, Vec, Vec, Vec, Vec, Vec) {
    let four = Vec(repeating: 4), five = Vec(repeating: 5), two = Vec(repeating: 2)
    let t0 = d4 - four * d2          // d4 - 4 d2
    let t1 = d3 - four * d1          // d3 - 4 d1
    let t2 = d4 - d2                 // d4 - d2
    let t3 = two * (d3 - d1)         // 2 (d3 - d1)
    return ((four * d0).addingProduct(-five, d2) + d4,
            t0 + t1, t0 - t1, t2 + t3, t2 - t3,
            (four * d1).addingProduct(-five, d3) + d5)
}

/// One 4-point column of `Aᵀ m`: Aᵀ's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0),
/// (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1).
@inline(__always)
private func outputColumn(_ m0: Vec, _ m1: Vec, _ m2: Vec, _ m3: Vec, _ m4: Vec, _ m5: Vec)
    -> (Vec, Vec, Vec, Vec) {
    let s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4
    return (m0 + s12 + s34, d12.addingProduct(Vec(repeating: 2), d34),
            s12.addingProduct(Vec(repeating: 4), s34), d12.addingProduct(Vec(repeating: 8), d34) + m5)
}

/// `V[ξ][r][c0 ..< c0 + lanes]` for the tile whose input origin is (`iy0`, `ix0`) of image `x`:
/// `Bᵀ d B` over 16 channels, zero outside the image.
@inline(__always)
private func inputTile(_ p: WinogradPass, _ x: UnsafePointer<Float>, iy0: Int, ix0: Int, c0: Int, lanes: Int,
                       _ tmp: UnsafeMutablePointer<Vec>, _ v: UnsafeMutablePointer<Float>, xiStride: Int) {
    let inside = iy0 >= 0 && ix0 >= 0 && iy0 + 6 <= p.inH && ix0 + 6 <= p.inW && lanes == 16
    @inline(__always) func d(_ i: Int, _ j: Int) -> Vec {
        let iy = iy0 + i, ix = ix0 + j
        if inside { return load(x + (iy * p.inW + ix) * p.inC + c0) }
        if iy < 0 || iy >= p.inH || ix < 0 || ix >= p.inW { return Vec() }
        return loadPartial(x + (iy * p.inW + ix) * p.inC + c0, lanes)
    }
    // Columns first: tmp[i][j] = (Bᵀ d)[i][j].
    for j in 0..<6 {
        let t = inputColumn(d(0, j), d(1, j), d(2, j), d(3, j), d(4, j), d(5, j))
        tmp[j] = t.0; tmp[6 + j] = t.1; tmp[12 + j] = t.2; tmp[18 + j] = t.3; tmp[24 + j] = t.4; tmp[30 + j] = t.5
    }
    // Then rows: V[i][j] = (tmp B)[i][j] = (B ᵀ tmpᵀ)ᵀ.
    for i in 0..<6 {
        let r = tmp + i * 6
        let t = inputColumn(r[0], r[1], r[2], r[3], r[4], r[5])
        let base = v + i * 6 * xiStride
        if lanes == 16 {
            store(t.0, base); store(t.1, base + xiStride); store(t.2, base + 2 * xiStride)
            store(t.3, base + 3 * xiStride); store(t.4, base + 4 * xiStride); store(t.5, base + 5 * xiStride)
        } else {
            storePartial(t.0, base, lanes); storePartial(t.1, base + xiStride, lanes)
            storePartial(t.2, base + 2 * xiStride, lanes); storePartial(t.3, base + 3 * xiStride, lanes)
            storePartial(t.4, base + 4 * xiStride, lanes); storePartial(t.5, base + 5 * xiStride, lanes)
        }
    }
}

/// Writes one output element vector with the epilogue (see ``WinogradEpilogue``).
@inline(__always)
private func emit(_ y: Vec, _ e: WinogradEpilogue, _ out: UnsafeMutablePointer<Float>, at i: Int, k: Int,
                  lanes: Int) {
    var v = y
    if lanes == 16 {
        if e.accumulate { v = load(out + i) + v }
        if let b = e.bias { v = v + load(b + k) }
        if let r = e.residual { v = v + load(r + i) }
        if e.relu { v = v.replacing(with: 0, where: v .< 0) }
        store(v, out + i)
    } else {
        if e.accumulate { v = loadPartial(out + i, lanes) + v }
        if let b = e.bias { v = v + loadPartial(b + k, lanes) }
        if let r = e.residual { v = v + loadPartial(r + i, lanes) }
        if e.relu { v = v.replacing(with: 0, where: v .< 0) }
        storePartial(v, out + i, lanes)
    }
}

/// `Aᵀ M A` for one tile and 16 output channels from `m` (ξ-stride `xiStride`), written to the
/// output tile at (`oy0`, `ox0`) of image `n`, cropped to the output.
@inline(__always)
private func outputTile(_ p: WinogradPass, _ m: UnsafePointer<Float>, xiStride: Int, n: Int, oy0: Int, ox0: Int,
                        k: Int, lanes: Int, _ tmp: UnsafeMutablePointer<Vec>, _ out: UnsafeMutablePointer<Float>,
                        _ e: WinogradEpilogue) {
    @inline(__always) func mv(_ xi: Int) -> Vec {
        lanes == 16 ? load(m + xi * xiStride) : loadPartial(m + xi * xiStride, lanes)
    }
    for j in 0..<6 {
        let t = outputColumn(mv(j), mv(6 + j), mv(12 + j), mv(18 + j), mv(24 + j), mv(30 + j))
        tmp[j] = t.0; tmp[6 + j] = t.1; tmp[12 + j] = t.2; tmp[18 + j] = t.3
    }
    let rows = min(4, p.outH - oy0), cols = min(4, p.outW - ox0)
    for i in 0..<rows {
        let r = tmp + i * 6
        let t = outputColumn(r[0], r[1], r[2], r[3], r[4], r[5])
        let pixel = (n * p.outH + oy0 + i) * p.outW + ox0
        let at = pixel * p.outC + k
        emit(t.0, e, out, at: at, k: k, lanes: lanes)
        if cols > 1 { emit(t.1, e, out, at: at + p.outC, k: k, lanes: lanes) }
        if cols > 2 { emit(t.2, e, out, at: at + 2 * p.outC, k: k, lanes: lanes) }
        if cols > 3 { emit(t.3, e, out, at: at + 3 * p.outC, k: k, lanes: lanes) }
    }
}

// MARK: - GEMM microkernel

/// `m[r][0 ..< 16 * W] = Σ_c v[r][c] · u[c][0 ..< 16 * W]` for 8 rows `r` (`v` rows `ldv` apart,
/// `u` rows 32 apart, `m` rows `ldm` apart), W = 2 (`wide`) or 1. Sums in channel order.
@inline(__always)
private func winogradKernel8(_ c: Int, _ v: UnsafePointer<Float>, ldv: Int, _ u: UnsafePointer<Float>,
                             _ m: UnsafeMutablePointer<Float>, ldm: Int, wide: Bool) {
    if wide {
        var a0 = Vec(), a1 = Vec(), a2 = Vec(), a3 = Vec(), a4 = Vec(), a5 = Vec(), a6 = Vec(), a7 = Vec()
        var b0 = Vec(), b1 = Vec(), b2 = Vec(), b3 = Vec(), b4 = Vec(), b5 = Vec(), b6 = Vec(), b7 = Vec()
        var up = u, vp = v
        for _ in 0..<c {
            let u0 = load(up), u1 = load(up + 16)
            var x = Vec(repeating: vp[0]); a0 = a0.addingProduct(x, u0); b0 = b0.addingProduct(x, u1)
            x = Vec(repeating: vp[ldv]); a1 = a1.addingProduct(x, u0); b1 = b1.addingProduct(x, u1)
            x = Vec(repeating: vp[2 * ldv]); a2 = a2.addingProduct(x, u0); b2 = b2.addingProduct(x, u1)
            x = Vec(repeating: vp[3 * ldv]); a3 = a3.addingProduct(x, u0); b3 = b3.addingProduct(x, u1)
            x = Vec(repeating: vp[4 * ldv]); a4 = a4.addingProduct(x, u0); b4 = b4.addingProduct(x, u1)
            x = Vec(repeating: vp[5 * ldv]); a5 = a5.addingProduct(x, u0); b5 = b5.addingProduct(x, u1)
            x = Vec(repeating: vp[6 * ldv]); a6 = a6.addingProduct(x, u0); b6 = b6.addingProduct(x, u1)
            x = Vec(repeating: vp[7 * ldv]); a7 = a7.addingProduct(x, u0); b7 = b7.addingProduct(x, u1)
            up += 32; vp += 1
        }
        store(a0, m); store(b0, m + 16); store(a1, m + ldm); store(b1, m + ldm + 16)
        store(a2, m + 2 * ldm); store(b2, m + 2 * ldm + 16); store(a3, m + 3 * ldm); store(b3, m + 3 * ldm + 16)
        store(a4, m + 4 * ldm); store(b4, m + 4 * ldm + 16); store(a5, m + 5 * ldm); store(b5, m + 5 * ldm + 16)
        store(a6, m + 6 * ldm); store(b6, m + 6 * ldm + 16); store(a7, m + 7 * ldm); store(b7, m + 7 * ldm + 16)
    } else {
        var a0 = Vec(), a1 = Vec(), a2 = Vec(), a3 = Vec(), a4 = Vec(), a5 = Vec(), a6 = Vec(), a7 = Vec()
        var up = u, vp = v
        for _ in 0..<c {
            let u0 = load(up)
            a0 = a0.addingProduct(Vec(repeating: vp[0]), u0)
            a1 = a1.addingProduct(Vec(repeating: vp[ldv]), u0)
            a2 = a2.addingProduct(Vec(repeating: vp[2 * ldv]), u0)
            a3 = a3.addingProduct(Vec(repeating: vp[3 * ldv]), u0)
            a4 = a4.addingProduct(Vec(repeating: vp[4 * ldv]), u0)
            a5 = a5.addingProduct(Vec(repeating: vp[5 * ldv]), u0)
            a6 = a6.addingProduct(Vec(repeating: vp[6 * ldv]), u0)
            a7 = a7.addingProduct(Vec(repeating: vp[7 * ldv]), u0)
            up += 32; vp += 1
        }
        store(a0, m); store(a1, m + ldm); store(a2, m + 2 * ldm); store(a3, m + 3 * ldm)
        store(a4, m + 4 * ldm); store(a5, m + 5 * ldm); store(a6, m + 6 * ldm); store(a7, m + 7 * ldm)
    }
}

// MARK: - The pass

/// Tiles per block: small, so the block's V (36 x rows x C) and M (36 x rows x K) stay in L1/L2
/// while the transformed weight streams past. Measured (1 thread, forward, ms at 8 / 16 / 32 / 64
/// rows): CIFAR 32ch 16x16 b128 1.24 / 1.23 / 1.56 / 2.12, 64ch 8x8 0.98 / 1.07 / 1.44 / 1.52;
/// ResNet-18 b16 64ch 7.78 / 8.11 / 9.16 / 10.3, 128ch 6.56 / 6.17 / 6.99 / 7.07, 256ch
/// 7.69 / 7.44 / 8.49 / 8.38.
func winogradBlockRows(inC: Int, outC: Int) -> Int {
    let kp = (outC + 31) / 32 * 32
    return inC + kp <= 128 ? 8 : 16
}

/// Runs a Winograd pass: `output = conv3x3(input)` (stride 1, the pass's padding) with weights `w`,
/// then the epilogue.
func runWinogradPass(_ p: WinogradPass, input: UnsafePointer<Float>, weights w: WinogradWeights,
                     output: UnsafeMutablePointer<Float>, epilogue e: WinogradEpilogue, threads: Int?) {
    let c = p.inC, k = p.outC
    let panels = w.panels
    let t = max(1, threads ?? Threading.threadCount)
    let flops = 2 * p.tiles * 36 * c * panels * 32
    let workers = flops < 4_000_000 ? 1 : t
    var rows = winogradBlockRows(inC: c, outC: k)
    // A transformed weight larger than the L3 share (16 MB; 38 MB at 512 x 512 channels) is streamed
    // from DRAM once per block of tiles: take up to 64 tiles per block, so ResNet-18 conv5_x at batch
    // 16 (64 tiles) reads it once per call (at 2 threads the panels split, each thread reading half).
    if 36 * c * panels * 32 * 4 > 16 << 20 {
        rows = max(rows, min(64, (p.tiles + 7) / 8 * 8))
    }
    // Few tiles (batch 1, small maps): smaller blocks first, then split the output channels.
    if (p.tiles + rows - 1) / rows < workers {
        rows = max(8, min(rows, ((p.tiles + workers - 1) / workers + 7) / 8 * 8))
    }
    let blocks = (p.tiles + rows - 1) / rows
    let kChunks = blocks >= workers ? 1 : min(panels, (workers + blocks - 1) / blocks)
    let jobs = blocks * kChunks
    // Output-channel panels per M chunk: 1 below 128 input channels (M is read back by the output
    // transform from L1/L2 right after its GEMMs wrote it), all of the job's panels from 128 (each
    // V_ξ slice then serves every panel while in L1 instead of the whole V being re-read per
    // panel). Measured, ms per forward pass, 1 thread, 1 panel / all panels: CIFAR 16ch 32x32 b128
    // 2.78 / 3.28, 32ch 1.24 / 1.29; ResNet-18 b16 64ch 7.66 / 7.43, 128ch 6.37 / 6.10, 256ch
    // 7.72 / 7.74 (loaded machine: differences under ~5 % are noise).
    let group = c >= 128 ? (panels + kChunks - 1) / kChunks : 1
    let tilesPerImage = p.tilesH * p.tilesW
    let box = UncheckedSendable((input, output, w.u))
    parallelFor(jobs, threads: workers) { range in
        let (x, out, u) = box.value
        // The 36 ξ slices are `rows · C (+ skew)` floats apart: without the 64-byte skew the stride is
        // a multiple of 4 KiB (e.g. 16 x 128 floats = 8 KiB), so the 36 vectors one tile transform
        // stores (and the output transform loads) fall in one L1 set (12 ways) and 4K-alias. (No
        // measurable effect on this machine, where the 36 stores are not the bottleneck.)
        let skew = 16
        let xiV = rows * c + skew
        // V, M and the tile temporary: allocated per thread and call. (Taking V and M from
        // ScratchPool.winograd measured ~8 % slower on ResNet-20 training, 1 thread, alternating runs;
        // these blocks are small (<= 1 MiB), so malloc serves them from the heap without page faults.)
        let v = UnsafeMutablePointer<Float>.allocate(capacity: 36 * xiV)
        let m = UnsafeMutablePointer<Float>.allocate(capacity: 36 * (rows * 32 * group + skew))
        let tmp = UnsafeMutablePointer<Vec>.allocate(capacity: 36)
        defer { v.deallocate(); m.deallocate(); tmp.deallocate() }
        for job in range {
            let block = job / kChunks, kc = job % kChunks
            let p0 = panels * kc / kChunks, p1 = panels * (kc + 1) / kChunks
            let g0 = block * rows, g1 = min(p.tiles, g0 + rows)
            // Input transform.
            for g in g0..<g1 {
                let n = g / tilesPerImage, tt = g % tilesPerImage
                let iy0 = (tt / p.tilesW) * 4 - p.padT, ix0 = (tt % p.tilesW) * 4 - p.padL
                let xn = x + n * p.inH * p.inW * c
                var c0 = 0
                while c0 < c {
                    inputTile(p, xn, iy0: iy0, ix0: ix0, c0: c0, lanes: min(16, c - c0), tmp,
                              v + (g - g0) * c + c0, xiStride: xiV)
                    c0 += 16
                }
            }
            // Rows past the last tile: zero, so the microkernel reads defined values.
            let used = (g1 - g0 + 7) / 8 * 8
            if g1 - g0 < used {
                for xi in 0..<36 {
                    (v + xi * xiV + (g1 - g0) * c).update(repeating: 0, count: (used - (g1 - g0)) * c)
                }
            }
            var q0 = p0
            while q0 < p1 {
                let q1 = min(p1, q0 + group), width = (q1 - q0) * 32, xiM = rows * width + skew
                // 36 GEMMs for this group's output channels (each V_ξ slice serves the group's panels
                // from L1).
                for xi in 0..<36 {
                    for panel in q0..<q1 {
                        let up = UnsafePointer(u + (xi * panels + panel) * c * 32)
                        let wide = panel * 32 + 16 < k
                        var r = 0
                        while r < used {
                            winogradKernel8(c, v + xi * xiV + r * c, ldv: c, up,
                                            m + xi * xiM + r * width + (panel - q0) * 32, ldm: width, wide: wide)
                            r += 8
                        }
                    }
                }
                // Output transform.
                let kLo = q0 * 32, kHi = min(k, q1 * 32)
                for g in g0..<g1 {
                    let n = g / tilesPerImage, tt = g % tilesPerImage
                    let oy0 = (tt / p.tilesW) * 4, ox0 = (tt % p.tilesW) * 4
                    var k0 = kLo
                    while k0 < kHi {
                        outputTile(p, m + (g - g0) * width + (k0 - kLo), xiStride: xiM, n: n, oy0: oy0,
                                   ox0: ox0, k: k0, lanes: min(16, kHi - k0), tmp, out, e)
                        k0 += 16
                    }
                }
                q0 = q1
            }
        }
    }
}

// MARK: - Entry points used by ConvNHWC.swift and ConvPlan.swift

extension WinogradPass {
    /// The forward pass of a 3x3 stride-1 convolution shape.
    init(forward s: Conv2dShape, batch: Int? = nil) {
        self.init(batch: batch ?? s.batch, inH: s.height, inW: s.width, inC: s.inChannels, outH: s.outH, outW: s.outW,
                  outC: s.outChannels, padT: s.padH, padL: s.padW)
    }

    /// Backward-data as a forward pass: dY correlated with the flipped, transposed kernel, padding
    /// `2 - pad` (so `H = OH + 2 - 2 pad` outputs per axis).
    init(backwardData s: Conv2dShape) {
        self.init(batch: s.batch, inH: s.outH, inW: s.outW, inC: s.outChannels, outH: s.height, outW: s.width,
                  outC: s.inChannels, padT: 2 - s.padH, padL: 2 - s.padW)
    }
}

func winogradForward(_ s: Conv2dShape, input: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                     output: UnsafeMutablePointer<Float>, bias: UnsafePointer<Float>?, threads: Int?) {
    let buffer = ScratchPool.winograd.acquire(floats: winogradWeightFloats(outC: s.outChannels, inC: s.inChannels))
    defer { ScratchPool.winograd.release(buffer) }
    let w = winogradTransformWeights(weight, outC: s.outChannels, inC: s.inChannels, flip: false,
                                     into: buffer.floats, threads: threads)
    runWinogradPass(WinogradPass(forward: s), input: input, weights: w, output: output,
                    epilogue: WinogradEpilogue(bias: bias), threads: threads)
}

func winogradBackwardData(_ s: Conv2dShape, gradOutput: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                          gradInput: UnsafeMutablePointer<Float>, accumulate: Bool, threads: Int?) {
    let buffer = ScratchPool.winograd.acquire(floats: winogradWeightFloats(outC: s.outChannels, inC: s.inChannels))
    defer { ScratchPool.winograd.release(buffer) }
    let w = winogradTransformWeights(weight, outC: s.outChannels, inC: s.inChannels, flip: true,
                                     into: buffer.floats, threads: threads)
    runWinogradPass(WinogradPass(backwardData: s), input: gradOutput, weights: w, output: gradInput,
                    epilogue: WinogradEpilogue(accumulate: accumulate), threads: threads)
}
