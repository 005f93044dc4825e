import Synchronization

/// Single-precision general matrix multiply, row-major:
/// `C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C`.
///
/// `op(A)` is `A` (stored `m x k`, leading dimension `lda >= k`) or, with `transA`, `Aᵀ` where `A`
/// is stored `k x m` (`lda >= m`). Likewise for `B` (`k x n`, `ldb >= n`; with `transB`, `n x k`,
/// `ldb >= k`). `C` is `m x n` with `ldc >= n`. With `beta == 0`, `C` is overwritten without being
/// read (it may hold NaN). The operands must not overlap `C`.
///
/// Design (docs/Kernels.md, "GEMM"): an 8x32 register tile of C held in 16 zmm accumulators, fed
/// per step of k by two SIMD16 loads of op(B) and eight broadcasts of op(A). op(B) is packed into
/// `kc x 32` micro-panels (zero-padded, so every transpose becomes the same contiguous case),
/// except a plain B feeding few rows of A, which is read in place; a plain A is read in place (its
/// rows are the broadcast streams), a transposed A is packed into `kc x 8` micro-panels, or read in
/// place when few columns of C reuse it. Threads split the tiles of C by rows or by columns,
/// whichever makes the busiest thread read and pack least; products with a small C and a long
/// reduction (weight gradients) are cut along k instead (`GEMMBlocking.kChunks`).
///
/// Determinism: every element of C is computed by the same sequence of operations whatever the
/// thread count: the k dimension is cut into the same chunks and blocks (they depend on the shape
/// only), each block is one chain of FMAs in increasing k, blocks are added in increasing order,
/// the partial products of a K-split are added to C in increasing chunk order, and the edge tiles
/// use the same arithmetic as full tiles. Threads only decide *which* thread computes a tile or a
/// chunk, so `threads: 1` and `threads: 2` give bit-identical results.
///
/// - Parameter threads: worker threads (default `Threading.threadCount`); small products
///   (under 2 MFLOP) run on the calling thread.
public func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int? = nil
) {
    precondition(m >= 0 && n >= 0 && k >= 0, "sgemm: negative size \(m)x\(n)x\(k)")
    precondition(lda >= (transA ? m : k) && ldb >= (transB ? k : n) && ldc >= n,
                 "sgemm: leading dimensions lda \(lda), ldb \(ldb), ldc \(ldc) too small for \(m)x\(n)x\(k)")
    if m == 0 || n == 0 { return }
    if k == 0 || alpha == 0 {
        for i in 0..<m { scaleRow(c + i * ldc, n, beta) }
        return
    }
    let g = GEMMOperands(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                         b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    let flops = 2 * m * n * k
    let t = flops < 2_000_000 ? 1 : max(1, threads ?? Threading.threadCount)
    let chunks = GEMMBlocking.kChunks(m: m, n: n, k: k)
    if chunks > 1 {
        g.runKSplit(chunks: chunks, threads: t)
    } else {
        g.runSplit(threads: t)
    }
}

@inline(__always)
func scaleRow(_ row: UnsafeMutablePointer<Float>, _ n: Int, _ beta: Float) {
    if beta == 0 { row.update(repeating: 0, count: n) } else if beta != 1 { for j in 0..<n { row[j] *= beta } }
}

/// Blocking parameters for Zen 5 (48 KiB L1d, 1 MiB L2 per core).
///
/// - `mr x nr = 8 x 32`: 16 zmm accumulators, 2 for op(B), 1 for the broadcast, out of 32.
/// - `kc <= 256`: a packed op(B) micro-panel (`kc x 32` floats = 32 KiB) stays in L1 while the
///   microkernel walks down the `mc` rows of A (the loop over rows is the inner one).
/// - `mc = 128`: the A block (`128 x 256` floats = 128 KiB) and the packed op(B) block
///   (`kc x nc`) share L2.
/// - `nc = 512` when op(A) is packed (a transposed A): every column block repacks the A block, so
///   wide blocks amortise that copy. `ncInPlaceA = 256` when op(A) is read in place (plain A, or a
///   transposed A with few columns): the packed op(B) block is then 256 KiB instead of 512, which
///   leaves L2 room for the A block and the C tiles the k-blocks revisit; measured on 2 threads
///   (`1024³`, 11 same-minute pairs, each thread owning 512 columns) 1-2 % faster in every pair,
///   and the same on 1 thread within the noise (docs/Kernels.md, "Blocking").
/// - The k dimension is cut into `ceil(k / 256)` blocks of equal size (rounded up), so that no
///   tiny last block pays the cost of a pass over C.
public enum GEMMBlocking {
    public static let mr = 8, nr = 32
    public static let kc = 256, mc = 128, nc = 512, ncInPlaceA = 256

    /// Number of k-chunks for a K-split (1: no split). Depends on the shape only, never on the
    /// thread count, so the result does not either. A K-split pays for `chunks - 1` partial
    /// products of `m x n` and their reduction, which is cheap only when C is small next to the
    /// reduction: the weight-gradient GEMMs (`64 x 147 x 200704`), whose few tiles of C cannot be
    /// shared evenly between threads otherwise and whose operands would be packed (or streamed from
    /// memory) by every thread.
    @inline(__always)
    public static func kChunks(m: Int, n: Int, k: Int) -> Int {
        // C at most 256K floats: the partials (up to 3 more of them) stay small next to the operands.
        guard k >= 4096, k >= 16 * max(m, n), m * n <= 1 << 18 else { return 1 }
        return k >= 32768 ? 4 : 2
    }

    /// The k-block size used for a product with inner dimension `k` (depends on `k` only).
    @inline(__always)
    public static func kBlock(_ k: Int) -> Int {
        let blocks = (k + kc - 1) / kc
        return (k + blocks - 1) / blocks
    }
}

/// Per-thread packing buffers, 64-byte aligned, kept in a small pool and reused across calls
/// (no allocation in the steady state).
final class GEMMWorkspace: @unchecked Sendable {
    typealias B = GEMMBlocking
    /// Packed op(B) block, `kc x nc`.
    let packedB: UnsafeMutablePointer<Float>
    /// Packed op(A) block for transposed A, `mc x kc`; also the zero-padded edge panel.
    let packedA: UnsafeMutablePointer<Float>
    /// Scratch tile for edge tiles.
    let tile: UnsafeMutablePointer<Float>
    private let raw: UnsafeMutableRawPointer

    private static let bFloats = B.kc * max(B.nc, B.ncInPlaceA), aFloats = (B.mc + B.mr) * B.kc, tileFloats = B.mr * B.nr

    private init() {
        let total = Self.bFloats + Self.aFloats + Self.tileFloats
        raw = .allocate(byteCount: total * 4, alignment: 64)
        packedB = raw.bindMemory(to: Float.self, capacity: total)
        packedA = packedB + Self.bFloats
        tile = packedA + Self.aFloats
    }

    deinit { raw.deallocate() }

    private static let pool = LockedState<[GEMMWorkspace]>([])

    /// Runs `body` with a workspace taken from the pool (or a new one) and returns it afterwards.
    static func with(_ body: (GEMMWorkspace) -> Void) {
        let ws = pool.withLock { $0.popLast() } ?? GEMMWorkspace()
        body(ws)
        pool.withLock { if $0.count < 8 { $0.append(ws) } }
    }
}

/// Scratch for the partial products of a K-split: one buffer per call in flight, reused across
/// calls (grown when a larger product needs more).
final class GEMMScratch: @unchecked Sendable {
    private(set) var pointer: UnsafeMutablePointer<Float>
    private(set) var capacity: Int

    private init(_ capacity: Int) {
        self.capacity = capacity
        pointer = .allocate(capacity: capacity)
    }

    deinit { pointer.deallocate() }

    private static let pool = LockedState<[GEMMScratch]>([])

    static func with(count: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        let s = pool.withLock { $0.popLast() } ?? GEMMScratch(count)
        if s.capacity < count {
            s.pointer.deallocate()
            s.pointer = .allocate(capacity: count)
            s.capacity = count
        }
        body(s.pointer)
        pool.withLock { if $0.count < 4 { $0.append(s) } }
    }
}

struct GEMMOperands {
    let transA: Bool, transB: Bool
    let m: Int, n: Int, k: Int
    let alpha: Float
    let a: UnsafePointer<Float>, lda: Int
    let b: UnsafePointer<Float>, ldb: Int
    let beta: Float
    let c: UnsafeMutablePointer<Float>, ldc: Int

    typealias B = GEMMBlocking

    /// Splits the tiles of C between `threads` along rows or columns, whichever costs the busiest
    /// thread least (`splitCost`), and runs each part.
    func runSplit(threads t: Int) {
        let rowTiles = (m + B.mr - 1) / B.mr, colTiles = (n + B.nr - 1) / B.nr
        let byRows = colTiles < t
            || (rowTiles >= t && splitCost(rowTiles: (rowTiles + t - 1) / t, colTiles: colTiles, byRows: true)
                < splitCost(rowTiles: rowTiles, colTiles: (colTiles + t - 1) / t, byRows: false))
        let box = UncheckedSendable(self)
        if byRows {
            parallelFor(rowTiles, threads: t) { range in
                let rows = range.lowerBound * B.mr..<min(m, range.upperBound * B.mr)
                GEMMWorkspace.with { box.value.run(rows: rows, columns: 0..<n, $0) }
            }
        } else {
            parallelFor(colTiles, threads: t) { range in
                let cols = range.lowerBound * B.nr..<min(n, range.upperBound * B.nr)
                GEMMWorkspace.with { box.value.run(rows: 0..<m, columns: cols, $0) }
            }
        }
    }

    /// A model of one thread's time, in multiply-adds, for a part of `rowTiles x colTiles` tiles:
    /// the padded product, plus, per element of an operand the thread reads, ~4 when it comes from
    /// cache or ~24 when the operand is too large for the caches and streams from memory, plus
    /// ~12 more when the element is copied into a packed panel. Row splits make every thread read
    /// all of op(B); column splits, all of op(A).
    func splitCost(rowTiles: Int, colTiles: Int, byRows: Bool) -> Double {
        let rows = min(m, rowTiles * B.mr), cols = min(n, colTiles * B.nr)
        let product = Double(rowTiles * B.mr) * Double(colTiles * B.nr) * Double(k)
        @inline(__always) func read(_ elements: Int) -> Double { elements * 4 > 8 << 20 ? 24 : 4 }
        let bCost = Double(k * cols) * (read(k * n) + (packsB(rows: rows) ? 12 : 0))
        let nb = columnBlock(cols: cols)
        let aPasses = Double((cols + nb - 1) / nb)
        let aCost = Double(k * rows) * aPasses * (read(m * k) + (transA && !transAInPlace(cols: cols) ? 12 : 0))
        return product + bCost + aCost
    }

    /// op(B) is read in place (no packing) when it is not transposed and few rows of A reuse each
    /// packed element: copying a panel then costs more than the product it feeds (the
    /// weight-gradient and small-batch shapes). Only partial 32-column panels are then packed.
    @inline(__always)
    func packsB(rows: Int) -> Bool { transB || rows > 64 }

    /// A transposed A is read in place when few columns of C reuse each packed element.
    @inline(__always)
    func transAInPlace(cols: Int) -> Bool { transA && cols <= 256 }

    /// Width of the column blocks (`nc`) for a part of C `cols` wide: narrower when op(A) is read
    /// in place, since no A packing then needs amortising (`GEMMBlocking`). Only which columns
    /// share a packed B block changes, never the arithmetic of an element.
    @inline(__always)
    func columnBlock(cols: Int) -> Int { transA && !transAInPlace(cols: cols) ? B.nc : B.ncInPlaceA }

    /// K-split: `chunks` contiguous ranges of k (a function of the shape only). Chunk 0 is
    /// computed into C with beta; every other chunk into its own `m x n` partial (beta 0); then C
    /// adds the partials in increasing chunk order. Threads take whole chunks, so the arithmetic of
    /// every element is the same whatever the thread count.
    func runKSplit(chunks: Int, threads t: Int) {
        let chunk = (k + chunks - 1) / chunks
        let parts = (k + chunk - 1) / chunk
        GEMMScratch.with(count: (parts - 1) * m * n) { scratch in
            let box = UncheckedSendable((self, scratch))
            parallelFor(parts, threads: t) { range in
                let (g, scratch) = box.value
                for s in range {
                    let k0 = s * chunk, kc = min(chunk, g.k - k0)
                    let part = GEMMOperands(
                        transA: g.transA, transB: g.transB, m: g.m, n: g.n, k: kc, alpha: g.alpha,
                        a: g.a + (g.transA ? k0 * g.lda : k0), lda: g.lda,
                        b: g.b + (g.transB ? k0 : k0 * g.ldb), ldb: g.ldb,
                        beta: s == 0 ? g.beta : 0,
                        c: s == 0 ? g.c : scratch + (s - 1) * g.m * g.n, ldc: s == 0 ? g.ldc : g.n)
                    GEMMWorkspace.with { part.run(rows: 0..<g.m, columns: 0..<g.n, $0) }
                }
            }
            parallelFor(m, minimumPerThread: max(1, 16384 / max(1, n)), threads: t) { rows in
                let (g, scratch) = box.value
                for i in rows {
                    let crow = g.c + i * g.ldc
                    for s in 1..<parts { add(g.n, scratch + (s - 1) * g.m * g.n + i * g.n, crow) }
                }
            }
        }
    }

    /// `y += x` over `count` floats.
    @inline(__always)
    func add(_ count: Int, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>) {
        var j = 0
        while j + 16 <= count { store(load(y + j) + load(x + j), y + j); j += 16 }
        while j < count { y[j] += x[j]; j += 1 }
    }

    /// Computes `C[rows, columns]`. `rows` and `columns` start on multiples of MR and NR (tiles
    /// never straddle two threads).
    func run(rows: Range<Int>, columns: Range<Int>, _ ws: GEMMWorkspace) {
        let kb = B.kBlock(k)
        let bPacked = packsB(rows: rows.count), aInPlaceT = transAInPlace(cols: columns.count)
        let ncBlock = columnBlock(cols: columns.count)
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nc = min(ncBlock, columns.upperBound - jc)
            let fullCols = nc - nc % B.nr
            var pc = 0
            while pc < k {
                let kc = min(kb, k - pc)
                // The first k-block applies beta; later ones accumulate.
                let betaHere: Float = pc == 0 ? beta : 1
                // op(B) block: packed, or read in place except a partial last column panel.
                if bPacked {
                    packB(ws.packedB, pc, kc, jc, nc)
                } else if fullCols < nc {
                    packB(ws.packedB + fullCols * kc, pc, kc, jc + fullCols, nc - fullCols)
                }
                var ic = rows.lowerBound
                while ic < rows.upperBound {
                    let mc = min(B.mc, rows.upperBound - ic)
                    let fullRows = mc - mc % B.mr
                    // op(A) block: a transposed A is packed (or read in place, its partial last
                    // row panel packed); a plain A is read in place, except a partial last row
                    // panel, which is copied zero-padded so the kernel never reads past row m.
                    if transA {
                        if !aInPlaceT {
                            packA(ws.packedA, ic, mc, pc, kc)
                        } else if fullRows < mc {
                            packA(ws.packedA + fullRows * kc, ic + fullRows, mc - fullRows, pc, kc)
                        }
                    } else if fullRows < mc {
                        packRows(ws.packedA, ic + fullRows, mc - fullRows, pc, kc)
                    }
                    var jr = 0
                    while jr < nc {
                        let nr = min(B.nr, nc - jr)
                        let bp: UnsafePointer<Float>, bStep: Int
                        if bPacked || nr < B.nr {
                            bp = UnsafePointer(ws.packedB + jr * kc); bStep = B.nr
                        } else {
                            bp = b + pc * ldb + jc + jr; bStep = ldb
                        }
                        var ir = 0
                        while ir < mc {
                            let mr = min(B.mr, mc - ir)
                            let cp = c + (ic + ir) * ldc + jc + jr
                            // Where this tile's op(A) rows come from, and how they are laid out.
                            let ap: UnsafePointer<Float>, rowStride: Int, stepStride: Int
                            if transA {
                                if aInPlaceT && mr == B.mr {
                                    ap = a + pc * lda + ic + ir; rowStride = 1; stepStride = lda
                                } else {
                                    ap = UnsafePointer(ws.packedA + ir * kc); rowStride = 1; stepStride = B.mr
                                }
                            } else if mr < B.mr {
                                ap = UnsafePointer(ws.packedA); rowStride = 1; stepStride = B.mr
                            } else {
                                ap = a + (ic + ir) * lda + pc; rowStride = lda; stepStride = 1
                            }
                            let full = mr == B.mr && nr == B.nr
                            let out = full ? cp : ws.tile, ldo = full ? ldc : B.nr
                            let betaTile: Float = full ? betaHere : 0
                            if mr < B.mr {
                                kernelEdgeRows(mr, kc, ap, rowStride, stepStride, bp, bStep, out, ldo, alpha)
                            } else if stepStride == B.mr && bStep == B.nr {
                                kernelPacked(kc, ap, bp, out, ldo, alpha, betaTile)
                            } else if stepStride == 1 && bStep == B.nr {
                                kernelRows(kc, ap, rowStride, bp, out, ldo, alpha, betaTile)
                            } else {
                                kernelStrided(kc, ap, rowStride, stepStride, bp, bStep, out, ldo, alpha, betaTile)
                            }
                            if !full {
                                // Edge tile: the same kernel into scratch (beta 0), then the same
                                // fused `tile + beta * C` a full tile does, for the valid part only.
                                for i in 0..<mr {
                                    let crow = cp + i * ldc, trow = ws.tile + i * B.nr
                                    if betaHere == 0 {
                                        for j in 0..<nr { crow[j] = trow[j] }
                                    } else {
                                        for j in 0..<nr { crow[j] = trow[j].addingProduct(betaHere, crow[j]) }
                                    }
                                }
                            }
                            ir += B.mr
                        }
                        jr += B.nr
                    }
                    ic += B.mc
                }
                pc += kc
            }
            jc += nc
        }
    }

    /// Transposed A (stored `k x m`): op(A)[ic..<ic+mc, pc..<pc+kc] as `kc x MR` micro-panels.
    /// Each step's MR values are contiguous in A already; the outer loop walks the rows of the
    /// stored A, so memory is read sequentially.
    @inline(__always)
    func packA(_ dst: UnsafeMutablePointer<Float>, _ ic: Int, _ mc: Int, _ pc: Int, _ kc: Int) {
        let mr = GEMMBlocking.mr
        let full = mc - mc % mr
        for p in 0..<kc {
            let s = a + (pc + p) * lda + ic
            var ir = 0
            while ir < full {
                UnsafeMutableRawPointer(dst + ir * kc + p * mr).storeBytes(
                    of: UnsafeRawPointer(s + ir).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                ir += mr
            }
            if full < mc {
                let d = dst + full * kc + p * mr
                for i in 0..<(mc - full) { d[i] = s[full + i] }
                for i in (mc - full)..<mr { d[i] = 0 }
            }
        }
    }

    /// Plain A: the `rows < MR` rows from `i0` as one zero-padded `kc x MR` micro-panel.
    @inline(__always)
    func packRows(_ dst: UnsafeMutablePointer<Float>, _ i0: Int, _ rows: Int, _ pc: Int, _ kc: Int) {
        let mr = GEMMBlocking.mr
        dst.update(repeating: 0, count: kc * mr)
        for i in 0..<rows {
            let s = a + (i0 + i) * lda + pc
            for p in 0..<kc { dst[p * mr + i] = s[p] }
        }
    }

    /// op(B)[pc..<pc+kc, jc..<jc+nc] as NR-column micro-panels, each `kc x NR`, zero-padded.
    @inline(__always)
    func packB(_ dst: UnsafeMutablePointer<Float>, _ pc: Int, _ kc: Int, _ jc: Int, _ nc: Int) {
        let nr = GEMMBlocking.nr
        if !transB {
            // B row-major k x n: walk B's rows (sequential reads), each feeding every panel.
            let full = nc - nc % nr
            for p in 0..<kc {
                let s = b + (pc + p) * ldb + jc
                var jr = 0
                while jr < full {
                    let d = dst + jr * kc + p * nr
                    store(load(s + jr), d)
                    store(load(s + jr + 16), d + 16)
                    jr += nr
                }
                if full < nc {
                    let d = dst + full * kc + p * nr
                    for j in 0..<(nc - full) { d[j] = s[full + j] }
                    for j in (nc - full)..<nr { d[j] = 0 }
                }
            }
            return
        }
        // B stored n x k: element (p, j) at b[j*ldb + p]. Blocks of 16 columns x 16 steps are
        // transposed in registers (`transpose16x16`); the rest, element by element.
        var jr = 0
        while jr < nc {
            let cols = min(nr, nc - jr)
            let panel = dst + jr * kc
            var j0 = 0
            while j0 + 16 <= cols {
                let src = b + (jc + jr + j0) * ldb + pc
                var p0 = 0
                while p0 + 16 <= kc {
                    transpose16x16(src + p0, ldb, panel + p0 * nr + j0, nr)
                    p0 += 16
                }
                if p0 < kc {
                    for j in 0..<16 {
                        let s = src + j * ldb
                        for p in p0..<kc { panel[p * nr + j0 + j] = s[p] }
                    }
                }
                j0 += 16
            }
            for j in j0..<nr {
                if j < cols {
                    let s = b + (jc + jr + j) * ldb + pc
                    for p in 0..<kc { panel[p * nr + j] = s[p] }
                } else {
                    for p in 0..<kc { panel[p * nr + j] = 0 }
                }
            }
            jr += nr
        }
    }
}

/// Copies the 16x16 block at `s` (rows `ld` apart) transposed to `d` (rows `ldd` apart).
///
/// Four rounds of "unshuffle": the block is 256 values whose index bits are `i3…i0 j3…j0`; taking
/// the even then the odd elements of every pair of rows rotates those 8 bits right by one, so four
/// rounds give `j3…j0 i3…i0`, the transpose. Each half is one `vpermi2ps`: 64 shuffles for 256
/// values instead of 256 scalar loads and stores.
@inline(__always)
func transpose16x16(_ s: UnsafePointer<Float>, _ ld: Int, _ d: UnsafeMutablePointer<Float>, _ ldd: Int) {
    @inline(__always) func ev(_ x: Vec, _ y: Vec) -> Vec { SIMD32(lowHalf: x, highHalf: y).evenHalf }
    @inline(__always) func od(_ x: Vec, _ y: Vec) -> Vec { SIMD32(lowHalf: x, highHalf: y).oddHalf }
    var r0 = load(s), r1 = load(s + ld), r2 = load(s + 2 * ld), r3 = load(s + 3 * ld)
    var r4 = load(s + 4 * ld), r5 = load(s + 5 * ld), r6 = load(s + 6 * ld), r7 = load(s + 7 * ld)
    var r8 = load(s + 8 * ld), r9 = load(s + 9 * ld), r10 = load(s + 10 * ld), r11 = load(s + 11 * ld)
    var r12 = load(s + 12 * ld), r13 = load(s + 13 * ld), r14 = load(s + 14 * ld), r15 = load(s + 15 * ld)
    for _ in 0..<4 {
        (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15) =
            (ev(r0, r1), ev(r2, r3), ev(r4, r5), ev(r6, r7), ev(r8, r9), ev(r10, r11), ev(r12, r13), ev(r14, r15),
             od(r0, r1), od(r2, r3), od(r4, r5), od(r6, r7), od(r8, r9), od(r10, r11), od(r12, r13), od(r14, r15))
    }
    store(r0, d); store(r1, d + ldd); store(r2, d + 2 * ldd); store(r3, d + 3 * ldd)
    store(r4, d + 4 * ldd); store(r5, d + 5 * ldd); store(r6, d + 6 * ldd); store(r7, d + 7 * ldd)
    store(r8, d + 8 * ldd); store(r9, d + 9 * ldd); store(r10, d + 10 * ldd); store(r11, d + 11 * ldd)
    store(r12, d + 12 * ldd); store(r13, d + 13 * ldd); store(r14, d + 14 * ldd); store(r15, d + 15 * ldd)
}

/// The 8x32 kernel on a packed op(A) micro-panel (`kc x 8`, k-major) and a packed op(B) panel.
@inline(never)
func kernelPacked(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                  _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
    microkernel8x32(kc, a, 1, GEMMBlocking.mr, b, GEMMBlocking.nr, c, ldc, alpha, beta)
}

/// The 8x32 kernel on eight rows of a plain row-major A (`lda` apart), read in place.
@inline(never)
func kernelRows(_ kc: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
    microkernel8x32(kc, a, lda, 1, b, GEMMBlocking.nr, c, ldc, alpha, beta)
}

/// The 8x32 kernel with both operands in place: op(A) element `(i, p)` at
/// `a[i*rowStride + p*stepStride]`, op(B) row `p` at `b + p*bStep`.
@inline(never)
func kernelStrided(_ kc: Int, _ a: UnsafePointer<Float>, _ rowStride: Int, _ stepStride: Int,
                   _ b: UnsafePointer<Float>, _ bStep: Int,
                   _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
    microkernel8x32(kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha, beta)
}

/// The register-blocked inner loop: an 8x32 tile of C from op(A) (element `(i, p)` at
/// `a[i*rowStride + p*stepStride]`) and op(B) rows of 32 values `bStep` apart (a packed
/// micro-panel, `bStep = 32`, or B in place, `bStep = ldb`):
/// `C = alpha * acc + beta * C` (with `beta == 0`, C is not read).
@inline(__always)
func microkernel8x32(_ kc: Int, _ a: UnsafePointer<Float>, _ rowStride: Int, _ stepStride: Int,
                     _ b: UnsafePointer<Float>, _ bStep: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     _ alpha: Float, _ beta: Float) {
    var c00 = Vec(), c01 = Vec(), c10 = Vec(), c11 = Vec(), c20 = Vec(), c21 = Vec(), c30 = Vec(), c31 = Vec()
    var c40 = Vec(), c41 = Vec(), c50 = Vec(), c51 = Vec(), c60 = Vec(), c61 = Vec(), c70 = Vec(), c71 = Vec()
    let r = rowStride
    var ap = a, bp = b
    for _ in 0..<kc {
        let b0 = load(bp), b1 = load(bp + 16)
        var x = Vec(repeating: ap[0]); c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        x = Vec(repeating: ap[r]); c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
        x = Vec(repeating: ap[2 * r]); c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
        x = Vec(repeating: ap[3 * r]); c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
        x = Vec(repeating: ap[4 * r]); c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
        x = Vec(repeating: ap[5 * r]); c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
        x = Vec(repeating: ap[6 * r]); c60 = c60.addingProduct(x, b0); c61 = c61.addingProduct(x, b1)
        x = Vec(repeating: ap[7 * r]); c70 = c70.addingProduct(x, b0); c71 = c71.addingProduct(x, b1)
        ap += stepStride; bp += bStep
    }
    let va = Vec(repeating: alpha)
    @inline(__always) func put(_ row: Int, _ v0: Vec, _ v1: Vec) {
        let p = c + row * ldc
        if beta == 0 {
            store(v0 * va, p); store(v1 * va, p + 16)
        } else {
            let vb = Vec(repeating: beta)
            store((v0 * va).addingProduct(vb, load(p)), p)
            store((v1 * va).addingProduct(vb, load(p + 16)), p + 16)
        }
    }
    put(0, c00, c01); put(1, c10, c11); put(2, c20, c21); put(3, c30, c31)
    put(4, c40, c41); put(5, c50, c51); put(6, c60, c61); put(7, c70, c71)
}

/// The kernel for an edge tile of `rows < 8` rows (into scratch, `beta = 0`): only the valid rows
/// are computed (a 49-row product no longer spends 7/8 of its last tile on padding). Each row is
/// the same FMA chain as in the full kernel, so the result is bit-identical to it.
@inline(never)
func kernelEdgeRows(_ rows: Int, _ kc: Int, _ a: UnsafePointer<Float>, _ rowStride: Int, _ stepStride: Int,
                    _ b: UnsafePointer<Float>, _ bStep: Int,
                    _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float) {
    switch rows {
    case 1: microkernelRows(1, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    case 2: microkernelRows(2, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    case 3: microkernelRows(3, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    case 4: microkernelRows(4, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    case 5: microkernelRows(5, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    case 6: microkernelRows(6, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    default: microkernelRows(7, kc, a, rowStride, stepStride, b, bStep, c, ldc, alpha)
    }
}

/// `microkernel8x32` for the first `rows` rows only (`rows` a constant after inlining, so the
/// unused accumulators and loads disappear), `C = alpha * acc`.
@inline(__always)
func microkernelRows(_ rows: Int, _ kc: Int, _ a: UnsafePointer<Float>, _ rowStride: Int, _ stepStride: Int,
                     _ b: UnsafePointer<Float>, _ bStep: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
                     _ alpha: Float) {
    var c00 = Vec(), c01 = Vec(), c10 = Vec(), c11 = Vec(), c20 = Vec(), c21 = Vec()
    var c30 = Vec(), c31 = Vec(), c40 = Vec(), c41 = Vec(), c50 = Vec(), c51 = Vec(), c60 = Vec(), c61 = Vec()
    let r = rowStride
    var ap = a, bp = b
    for _ in 0..<kc {
        let b0 = load(bp), b1 = load(bp + 16)
        var x = Vec(repeating: ap[0]); c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        if rows > 1 { x = Vec(repeating: ap[r]); c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1) }
        if rows > 2 { x = Vec(repeating: ap[2 * r]); c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1) }
        if rows > 3 { x = Vec(repeating: ap[3 * r]); c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1) }
        if rows > 4 { x = Vec(repeating: ap[4 * r]); c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1) }
        if rows > 5 { x = Vec(repeating: ap[5 * r]); c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1) }
        if rows > 6 { x = Vec(repeating: ap[6 * r]); c60 = c60.addingProduct(x, b0); c61 = c61.addingProduct(x, b1) }
        ap += stepStride; bp += bStep
    }
    let va = Vec(repeating: alpha)
    @inline(__always) func put(_ row: Int, _ v0: Vec, _ v1: Vec) {
        store(v0 * va, c + row * ldc); store(v1 * va, c + row * ldc + 16)
    }
    put(0, c00, c01)
    if rows > 1 { put(1, c10, c11) }
    if rows > 2 { put(2, c20, c21) }
    if rows > 3 { put(3, c30, c31) }
    if rows > 4 { put(4, c40, c41) }
    if rows > 5 { put(5, c50, c51) }
    if rows > 6 { put(6, c60, c61) }
}

/// Plain triple loop, the oracle for `sgemm` in tests. Accumulates in Double.
public func referenceSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
) {
    for i in 0..<m {
        for j in 0..<n {
            var s = 0.0
            for p in 0..<k {
                let x = transA ? a[p * lda + i] : a[i * lda + p]
                let y = transB ? b[j * ldb + p] : b[p * ldb + j]
                s += Double(x) * Double(y)
            }
            let prior: Double = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
            c[i * ldc + j] = Float(Double(alpha) * s + prior)
        }
    }
}
