/// Single-precision general matrix multiply, row-major:
/// `C[m x n] = alpha * op(A)[m x k] * op(B)[k x n] + beta * C`.
///
/// `op(A)` is `A` (stored `m x k`, leading dimension `lda`) or, with `transA`, `Aᵀ` where `A` is stored
/// `k x m`. Likewise for `B`. With `beta == 0`, `C` is overwritten without being read (it may hold NaN).
///
/// Structure (BLIS/GotoBLAS): the columns of C are split among threads; each thread packs panels of
/// op(B) (`kc x NR`, contiguous) and of op(A) (`MR x kc`) into private buffers and runs an 8x32
/// register-blocked microkernel (16 zmm accumulators, two SIMD16 loads of B and eight broadcasts of
/// A per step). Packing makes every transpose the same fast case and pads edges with zeros, so the
/// microkernel never branches; partial tiles go through a small scratch tile.
public func sgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int? = nil
) {
    if m == 0 || n == 0 { return }
    if k == 0 || alpha == 0 {
        for i in 0..<m { scaleRow(c + i * ldc, n, beta) }
        return
    }
    let g = GEMMOperands(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                         b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    // Split columns in multiples of NR; small problems stay on one thread.
    let flops = 2 * m * n * k
    let t = flops < 2_000_000 ? 1 : (threads ?? Threading.threadCount)
    let panels = (n + GEMMBlocking.nr - 1) / GEMMBlocking.nr
    let box = UncheckedSendable(g)
    parallelFor(panels, minimumPerThread: 1, threads: t) { range in
        let lo = range.lowerBound * GEMMBlocking.nr, hi = min(n, range.upperBound * GEMMBlocking.nr)
        box.value.run(columns: lo..<hi)
    }
}

@inline(__always)
func scaleRow(_ row: UnsafeMutablePointer<Float>, _ n: Int, _ beta: Float) {
    if beta == 0 { row.update(repeating: 0, count: n) } else if beta != 1 { for j in 0..<n { row[j] *= beta } }
}

/// Blocking parameters for Zen 5 (48 KiB L1d, 1 MiB L2 per core): a packed B micro-panel
/// (KC x NR = 256 x 32 floats = 32 KiB) stays in L1 across the MC/MR microkernel calls; the packed
/// A block (MC x KC = 128 x 256 = 128 KiB) and B block (KC x NC = 256 x 512 = 512 KiB) live in L2.
public enum GEMMBlocking {
    public static let mr = 8, nr = 32
    public static let kc = 256, mc = 128, nc = 512
}

struct GEMMOperands {
    let transA: Bool, transB: Bool
    let m: Int, n: Int, k: Int
    let alpha: Float
    let a: UnsafePointer<Float>, lda: Int
    let b: UnsafePointer<Float>, ldb: Int
    let beta: Float
    let c: UnsafeMutablePointer<Float>, ldc: Int

    func run(columns: Range<Int>) {
        typealias B = GEMMBlocking
        let packedA = UnsafeMutablePointer<Float>.allocate(capacity: B.mc * B.kc + 64)
        let packedB = UnsafeMutablePointer<Float>.allocate(capacity: B.kc * B.nc + 64)
        let tile = UnsafeMutablePointer<Float>.allocate(capacity: B.mr * B.nr)
        defer { packedA.deallocate(); packedB.deallocate(); tile.deallocate() }
        var jc = columns.lowerBound
        while jc < columns.upperBound {
            let nc = min(B.nc, columns.upperBound - jc)
            var pc = 0
            while pc < k {
                let kc = min(B.kc, k - pc)
                // The first k-block applies beta; later ones accumulate.
                let betaHere: Float = pc == 0 ? beta : 1
                packB(packedB, pc, kc, jc, nc)
                var ic = 0
                while ic < m {
                    let mc = min(B.mc, m - ic)
                    packA(packedA, ic, mc, pc, kc)
                    var jr = 0
                    while jr < nc {
                        let nr = min(B.nr, nc - jr)
                        var ir = 0
                        while ir < mc {
                            let mr = min(B.mr, mc - ir)
                            let cp = c + (ic + ir) * ldc + jc + jr
                            let ap = packedA + ir * kc, bp = packedB + jr * kc
                            if mr == B.mr && nr == B.nr {
                                microkernel8x32(kc, ap, bp, cp, ldc, alpha, betaHere)
                            } else {
                                // Edge tile: compute a full tile into scratch, write the valid part.
                                microkernel8x32(kc, ap, bp, tile, B.nr, alpha, 0)
                                for i in 0..<mr {
                                    let crow = cp + i * ldc, trow = tile + i * B.nr
                                    if betaHere == 0 {
                                        for j in 0..<nr { crow[j] = trow[j] }
                                    } else {
                                        for j in 0..<nr { crow[j] = trow[j] + betaHere * crow[j] }
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

    /// op(A)[ic..<ic+mc, pc..<pc+kc] as MR-row micro-panels, each `kc x MR` (k-major), zero-padded.
    @inline(__always)
    func packA(_ dst: UnsafeMutablePointer<Float>, _ ic: Int, _ mc: Int, _ pc: Int, _ kc: Int) {
        let mr = GEMMBlocking.mr
        var ir = 0
        while ir < mc {
            let rows = min(mr, mc - ir)
            let panel = dst + ir * kc
            if !transA {
                // A row-major m x k: element (i, p) at a[i*lda + p].
                for p in 0..<kc {
                    let d = panel + p * mr
                    for i in 0..<rows { d[i] = a[(ic + ir + i) * lda + pc + p] }
                    for i in rows..<mr { d[i] = 0 }
                }
            } else {
                // A stored k x m: element (i, p) at a[p*lda + i]: rows of the panel are contiguous.
                for p in 0..<kc {
                    let d = panel + p * mr, s = a + (pc + p) * lda + ic + ir
                    for i in 0..<rows { d[i] = s[i] }
                    for i in rows..<mr { d[i] = 0 }
                }
            }
            ir += mr
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

/// The register-blocked inner loop: an 8x32 tile of C from packed `a` (`kc x 8`) and `b` (`kc x 32`).
@inline(__always)
func microkernel8x32(_ kc: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                     _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ alpha: Float, _ beta: Float) {
    var c00 = Vec(), c01 = Vec(), c10 = Vec(), c11 = Vec(), c20 = Vec(), c21 = Vec(), c30 = Vec(), c31 = Vec()
    var c40 = Vec(), c41 = Vec(), c50 = Vec(), c51 = Vec(), c60 = Vec(), c61 = Vec(), c70 = Vec(), c71 = Vec()
    var ap = a, bp = b
    for _ in 0..<kc {
        let b0 = load(bp), b1 = load(bp + 16)
        var x = Vec(repeating: ap[0]); c00 = c00.addingProduct(x, b0); c01 = c01.addingProduct(x, b1)
        x = Vec(repeating: ap[1]); c10 = c10.addingProduct(x, b0); c11 = c11.addingProduct(x, b1)
        x = Vec(repeating: ap[2]); c20 = c20.addingProduct(x, b0); c21 = c21.addingProduct(x, b1)
        x = Vec(repeating: ap[3]); c30 = c30.addingProduct(x, b0); c31 = c31.addingProduct(x, b1)
        x = Vec(repeating: ap[4]); c40 = c40.addingProduct(x, b0); c41 = c41.addingProduct(x, b1)
        x = Vec(repeating: ap[5]); c50 = c50.addingProduct(x, b0); c51 = c51.addingProduct(x, b1)
        x = Vec(repeating: ap[6]); c60 = c60.addingProduct(x, b0); c61 = c61.addingProduct(x, b1)
        x = Vec(repeating: ap[7]); c70 = c70.addingProduct(x, b0); c71 = c71.addingProduct(x, b1)
        ap += 8; bp += 32
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
            let prior: Float = beta == 0 ? 0 : beta * c[i * ldc + j]
            c[i * ldc + j] = Float(Double(alpha) * s) + prior
        }
    }
}
