/// Memory-layout conversion between NCHW (standard) and NHWC (channels-last).
///
/// Both directions are a batch of matrix transposes: per image, NCHW holds `[C, H·W]` and NHWC
/// holds `[H·W, C]`. Full 16x16 tiles are transposed in SIMD16 registers (16 cache-line loads, 64
/// shuffles, 16 cache-line stores); the edges left by sizes that are not multiples of 16 are
/// copied by a scalar loop. Work is split over (image, 16-column strip), so batch 1 still uses
/// every thread. Pure copies: the same bits for any thread count.

/// `destination[b][j][i] = source[b][i][j]` for `source` of `batch` row-major `[rows, columns]`
/// matrices. NCHW → NHWC is `rows: C, columns: H·W`; NHWC → NCHW is `rows: H·W, columns: C`.
public func transposeBatched(batch: Int, rows: Int, columns: Int, source: UnsafePointer<Float>,
                             destination: UnsafeMutablePointer<Float>, threads: Int? = nil) {
    if batch == 0 || rows == 0 || columns == 0 { return }
    if rows == 1 || columns == 1 {
        destination.update(from: source, count: batch * rows * columns)
        return
    }
    let tile = 16
    let strips = (columns + tile - 1) / tile
    let matrix = rows * columns
    let dst = UncheckedSendable(destination)
    // Each unit writes output rows j0..<j0+16 of one image: disjoint across units.
    parallelFor(batch * strips, minimumPerThread: max(1, 4096 / max(1, rows * tile)), threads: threads) { units in
        for unit in units {
            let b = unit / strips, j0 = (unit % strips) * tile
            let j1 = min(j0 + tile, columns)
            let src = source + b * matrix, out = dst.value + b * matrix
            var i0 = 0
            if j1 - j0 == tile {
                while i0 + tile <= rows {
                    transposeTile16(src + i0 * columns + j0, columns, out + j0 * rows + i0, rows)
                    i0 += tile
                }
            }
            // Partial tiles (the last C % 16 channels or H·W % 16 pixels): scalar.
            for j in j0..<j1 {
                let o = out + j * rows
                for i in i0..<rows { o[i] = src[i * columns + j] }
            }
        }
    }
}

/// Transposes one 16x16 tile in registers: `dst[j][i] = src[i][j]` (leading dimensions `ls`, `ld`).
///
/// Four rounds of the perfect shuffle: each round replaces registers `(r[p], r[p+8])` by
/// `(evens of both, odds of both)`, which rotates the 8 address bits (4 register, 4 lane) of
/// every element; four rounds swap the row and column bits, with both bit-reversed. Loading row
/// `i` into register `rev(i)` and storing register `rev(j)` to row `j` undoes the reversal.
/// The compiler turns each pair of halves into one `vpermt2ps`: 64 shuffles per 256 elements.
@inline(__always)
func transposeTile16(_ src: UnsafePointer<Float>, _ ls: Int, _ dst: UnsafeMutablePointer<Float>, _ ld: Int) {
    var r0 = load(src), r8 = load(src + ls), r4 = load(src + 2 * ls), r12 = load(src + 3 * ls)
    var r2 = load(src + 4 * ls), r10 = load(src + 5 * ls), r6 = load(src + 6 * ls), r14 = load(src + 7 * ls)
    var r1 = load(src + 8 * ls), r9 = load(src + 9 * ls), r5 = load(src + 10 * ls), r13 = load(src + 11 * ls)
    var r3 = load(src + 12 * ls), r11 = load(src + 13 * ls), r7 = load(src + 14 * ls), r15 = load(src + 15 * ls)
    @inline(__always) func even(_ a: Vec, _ b: Vec) -> Vec { Vec(lowHalf: a.evenHalf, highHalf: b.evenHalf) }
    @inline(__always) func odd(_ a: Vec, _ b: Vec) -> Vec { Vec(lowHalf: a.oddHalf, highHalf: b.oddHalf) }
    for _ in 0..<4 {
        (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, r15) =
            (even(r0, r8), odd(r0, r8), even(r1, r9), odd(r1, r9), even(r2, r10), odd(r2, r10),
             even(r3, r11), odd(r3, r11), even(r4, r12), odd(r4, r12), even(r5, r13), odd(r5, r13),
             even(r6, r14), odd(r6, r14), even(r7, r15), odd(r7, r15))
    }
    store(r0, dst); store(r8, dst + ld); store(r4, dst + 2 * ld); store(r12, dst + 3 * ld)
    store(r2, dst + 4 * ld); store(r10, dst + 5 * ld); store(r6, dst + 6 * ld); store(r14, dst + 7 * ld)
    store(r1, dst + 8 * ld); store(r9, dst + 9 * ld); store(r5, dst + 10 * ld); store(r13, dst + 11 * ld)
    store(r3, dst + 12 * ld); store(r11, dst + 13 * ld); store(r7, dst + 14 * ld); store(r15, dst + 15 * ld)
}

/// Plain reference for `transposeBatched`.
public func referenceTransposeBatched(batch: Int, rows: Int, columns: Int, source: UnsafePointer<Float>,
                                      destination: UnsafeMutablePointer<Float>) {
    for b in 0..<batch {
        for i in 0..<rows {
            for j in 0..<columns {
                destination[b * rows * columns + j * rows + i] = source[b * rows * columns + i * columns + j]
            }
        }
    }
}
