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
/// per step of k by two SIMD16 loads of packed op(B) and eight broadcasts of op(A). op(B) is packed
/// into `kc x 32` micro-panels (zero-padded, so every transpose becomes the same contiguous case);
/// a non-transposed A is read in place (its rows are the broadcast streams, no packing), a
/// transposed A is packed into `kc x 8` micro-panels with contiguous copies.
///
/// Determinism: every element of C is computed by the same sequence of operations whatever the
/// thread count: the k dimension is cut into the same blocks (they depend on `k` only), each
/// block is one chain of FMAs in increasing k, blocks are added to C in increasing order, and the
/// edge tiles use the same arithmetic as full tiles. Threads only decide *which* thread computes a
/// tile, so `threads: 1` and `threads: 2` give bit-identical results.
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
    typealias B = GEMMBlocking
    let flops = 2 * m * n * k
    let t = flops < 2_000_000 ? 1 : max(1, threads ?? Threading.threadCount)
    let rowTiles = (m + B.mr - 1) / B.mr, colTiles = (n + B.nr - 1) / B.nr
    let box = UncheckedSendable(g)
    // Split the larger dimension (in tiles): each thread then packs op(B) for its own columns
    // (column split) or for all columns (row split; packing is cheap next to the product).
    if rowTiles >= colTiles * 4 || colTiles < t {
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
///   (`kc x nc = 256 x 512` floats = 512 KiB) share L2.
/// - The k dimension is cut into `ceil(k / 256)` blocks of equal size (rounded up), so that no
///   tiny last block pays the cost of a pass over C.
public enum GEMMBlocking {
    public static let mr = 8, nr = 32
    public static let kc = 256, mc = 128, nc = 512

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

    private static let bFloats = B.kc * B.nc, aFloats = (B.mc + B.mr) * B.kc, tileFloats = B.mr * B.nr

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

struct GEMMOperands {
    let transA: Bool, transB: Bool
    let m: Int, n: Int, k: Int
    let alpha: Float
    let a: UnsafePointer<Float>, lda: Int
    let b: UnsafePointer<Float>, ldb: Int
    let beta: Float
    let c: UnsafeMutablePointer<Float>, ldc: Int

    /// Computes `C[rows, columns]`. `rows` and `columns` start on multiples of MR and NR (tiles
    /// never straddle two threads).
    func run(rows: Range<Int>, columns: Range<Int>, _ ws: GEMMWorkspace) {
        typealias B = GEMMBlocking
        let kb = B.kBlock(k)
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nc = min(B.nc, columns.upperBound - jc)
            var pc = 0
            while pc < k {
                let kc = min(kb, k - pc)
                // The first k-block applies beta; later ones accumulate.
                let betaHere: Float = pc == 0 ? beta : 1
                packB(ws.packedB, pc, kc, jc, nc)
                var ic = rows.lowerBound
                while ic < rows.upperBound {
                    let mc = min(B.mc, rows.upperBound - ic)
                    let fullRows = mc - mc % B.mr
                    // op(A) block: transposed A is packed; plain A is read in place, except a partial
                    // last row panel, which is copied zero-padded so the kernel never reads past row m.
                    if transA {
                        packA(ws.packedA, ic, mc, pc, kc)
                    } else if fullRows < mc {
                        packRows(ws.packedA, ic + fullRows, mc - fullRows, pc, kc)
                    }
                    var jr = 0
                    while jr < nc {
                        let nr = min(B.nr, nc - jr)
                        let bp = UnsafePointer(ws.packedB + jr * kc)
                        var ir = 0
                        while ir < mc {
                            let mr = min(B.mr, mc - ir)
                            let cp = c + (ic + ir) * ldc + jc + jr
                            let packed = transA || mr < B.mr
                            let ap: UnsafePointer<Float>
                            if transA {
                                ap = UnsafePointer(ws.packedA + ir * kc)
                            } else if mr < B.mr {
                                ap = UnsafePointer(ws.packedA)
                            } else {
                                ap = a + (ic + ir) * lda + pc
                            }
                            if mr == B.mr && nr == B.nr {
                                if packed {
                                    kernelPacked(kc, ap, bp, cp, ldc, alpha, betaHere)
                                } else {
                                    kernelRows(kc, ap, lda, bp, cp, ldc, alpha, betaHere)
                                }
                            } else {
                                // Edge tile: the same kernel into scratch (beta 0), then the same
                                // fused `tile + beta * C` a full tile does, for the valid part only.
                                if packed {
                                    kernelPacked(kc, ap, bp, ws.tile, B.nr, alpha, 0)
                                } else {
                                    kernelRows(kc, ap, lda, bp, ws.tile, B.nr, alpha, 0)
                                }
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

    /// Transposed A (stored `k x m`): op(A)[ic..<ic+mc, pc..<pc+kc] as `kc x MR` micro-panels,
    /// each step's MR values contiguous in A already, so packing is a run of short copies.
    @inline(__always)
    func packA(_ dst: UnsafeMutablePointer<Float>, _ ic: Int, _ mc: Int, _ pc: Int, _ kc: Int) {
        let mr = GEMMBlocking.mr
        var ir = 0
        while ir < mc {
            let rows = min(mr, mc - ir)
            let panel = dst + ir * kc
            var s = a + pc * lda + ic + ir
            if rows == mr {
                for p in 0..<kc {
                    UnsafeMutableRawPointer(panel + p * mr).storeBytes(
                        of: UnsafeRawPointer(s).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                    s += lda
                }
            } else {
                for p in 0..<kc {
                    let d = panel + p * mr
                    for i in 0..<rows { d[i] = s[i] }
                    for i in rows..<mr { d[i] = 0 }
                    s += lda
                }
            }
            ir += mr
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
        var jr = 0
        while jr < nc {
            let cols = min(nr, nc - jr)
            let panel = dst + jr * kc
            if !transB {
                // B row-major k x n: the panel's rows are contiguous runs of B's rows.
                for p in 0..<kc {
                    let d = panel + p * nr, s = b + (pc + p) * ldb + jc + jr
                    if cols == nr {
                        store(load(s), d)
                        store(load(s + 16), d + 16)
                    } else {
                        for j in 0..<cols { d[j] = s[j] }
                        for j in cols..<nr { d[j] = 0 }
                    }
                }
            } else {
                // B stored n x k: element (p, j) at b[j*ldb + p].
                for j in 0..<nr {
                    if j < cols {
                        let s = b + (jc + jr + j) * ldb + pc
                        for p in 0..<kc { panel[p * nr + j] = s[p] }
                    } else {
                        for p in 0..<kc { panel[p * nr + j] = 0 }
                    }
                }
            }
            jr += nr
        }
    }
}

/// The 8x32 kernel on a packed op(A) micro-panel (`kc x 8`, k-major).
@inline(never)
func kernelPacked(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                  _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
    microkernel8x32(kc, a, 1, GEMMBlocking.mr, b, c, ldc, alpha, beta)
}

/// The 8x32 kernel on eight rows of a plain row-major A (`lda` apart), read in place.
@inline(never)
func kernelRows(_ kc: Int, _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>,
                _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
    microkernel8x32(kc, a, lda, 1, b, c, ldc, alpha, beta)
}

/// The register-blocked inner loop: an 8x32 tile of C from op(A) (element `(i, p)` at
/// `a[i*rowStride + p*stepStride]`) and a packed op(B) micro-panel (`kc x 32`):
/// `C = alpha * acc + beta * C` (with `beta == 0`, C is not read).
@inline(__always)
func microkernel8x32(_ kc: Int, _ a: UnsafePointer<Float>, _ rowStride: Int, _ stepStride: Int,
                     _ b: UnsafePointer<Float>, _ c: UnsafeMutablePointer<Float>, _ ldc: Int,
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
        ap += stepStride; bp += 32
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
