import Testing
import ResidualKernels

/// The NCHW <-> NHWC transpose against its scalar reference: exact, at sizes around the 16x16 tile.
@Suite struct LayoutKernelTests {
    static let sizes = [1, 3, 15, 16, 17, 32, 37]

    @Test(arguments: [1, 2])
    func transposeMatchesReference(threads: Int) {
        for batch in [1, 3] {
            for rows in Self.sizes {
                for columns in Self.sizes + [0] {
                    let n = batch * rows * columns
                    let src = Buffer(n, seed: UInt64(rows * 100 + columns))
                    let out = Buffer(zeros: n), ref = Buffer(zeros: n)
                    transposeBatched(batch: batch, rows: rows, columns: columns, source: src.pointer,
                                     destination: out.pointer, threads: threads)
                    referenceTransposeBatched(batch: batch, rows: rows, columns: columns, source: src.pointer,
                                              destination: ref.pointer)
                    #expect(out.values == ref.values, "batch \(batch), \(rows)x\(columns)")
                }
            }
        }
    }

    /// Transposing twice is the identity (NCHW -> NHWC -> NCHW), and the reference agrees with a
    /// hand-checked case.
    @Test func roundTripAndKnownValues() {
        let (c, hw) = (19, 33)
        let x = Buffer(2 * c * hw, seed: 7)
        let nhwc = Buffer(zeros: x.count), back = Buffer(zeros: x.count)
        transposeBatched(batch: 2, rows: c, columns: hw, source: x.pointer, destination: nhwc.pointer)
        transposeBatched(batch: 2, rows: hw, columns: c, source: nhwc.pointer, destination: back.pointer)
        #expect(back.values == x.values)
        // element (n=1, c=5, p=7) of NCHW sits at (1, 7, 5) of NHWC
        #expect(nhwc[(1 * hw + 7) * c + 5] == x[(1 * c + 5) * hw + 7])
    }
}
