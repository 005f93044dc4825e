import Testing
import ResidualKernels

/// `sgemm` against `referenceSgemm` (a triple loop accumulating in Double).
///
/// Tolerance, per element: `(k + 4) · u · (|α| Σ_p |a_ip| |b_pj| + |β| |c_ij|)` with `u = 2⁻²⁴`, the
/// classical worst-case bound for a k-term dot product in float (γ_k ≤ k·u/(1 − k·u) on Σ|a||b|),
/// plus a few roundings for α, the k-block additions and the β term. It is a bound, not a guess:
/// a correct kernel cannot exceed it, while a lost, doubled or misplaced term changes an element by
/// about |a||b| ≈ 1/4 (inputs uniform in [-1, 1)), orders of magnitude above it at these sizes.
/// Padding columns of C (`ldc > n`) hold a sentinel that must survive, and `beta == 0` runs over a
/// NaN-filled C (which must not leak into the result).
@Suite struct GEMMTests {
    typealias B = GEMMBlocking

    struct Case: CustomStringConvertible {
        var transA = false, transB = false
        var m: Int, n: Int, k: Int
        var alpha: Float = 1, beta: Float = 0
        /// Extra leading-dimension padding for A, B and C.
        var pad = 0
        var description: String {
            "\(transA ? "T" : "N")\(transB ? "T" : "N") \(m)x\(n)x\(k) alpha \(alpha) beta \(beta) pad \(pad)"
        }
    }

    static let sentinel: Float = 12345

    /// Seeded operands for a case; C has `sentinel` in its padding columns and NaN where beta is 0.
    static func inputs(_ t: Case) -> (a: Buffer, b: Buffer, c: Buffer, lda: Int, ldb: Int, ldc: Int) {
        let lda = (t.transA ? t.m : t.k) + t.pad, ldb = (t.transB ? t.k : t.n) + t.pad, ldc = t.n + t.pad
        let a = Buffer((t.transA ? t.k : t.m) * lda, seed: 11), b = Buffer((t.transB ? t.n : t.k) * ldb, seed: 12)
        let c = Buffer(t.m * ldc, seed: 13)
        for i in 0..<t.m {
            for j in t.n..<ldc { c.pointer[i * ldc + j] = sentinel }
            if t.beta == 0 { for j in 0..<t.n { c.pointer[i * ldc + j] = .nan } }
        }
        return (a, b, c, lda, ldb, ldc)
    }

    /// C (with padding) after `sgemm` with `threads`.
    static func run(_ t: Case, threads: Int) -> [Float] {
        let (a, b, c, lda, ldb, ldc) = inputs(t)
        sgemm(transA: t.transA, transB: t.transB, m: t.m, n: t.n, k: t.k, alpha: t.alpha,
              a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, beta: t.beta, c: c.pointer, ldc: ldc,
              threads: threads)
        return c.values
    }

    /// Runs one case with `threads`, checks every element against the reference within the bound
    /// and the padding against the sentinel, and returns C (with padding).
    @discardableResult
    static func check(_ t: Case, threads: Int, sourceLocation: SourceLocation = #_sourceLocation) -> [Float] {
        let (a, b, c, lda, ldb, ldc) = inputs(t)
        let expected = Buffer(t.m * ldc, seed: 13)
        for i in 0..<t.m { for j in t.n..<ldc { expected.pointer[i * ldc + j] = sentinel } }
        let c0 = expected.values
        sgemm(transA: t.transA, transB: t.transB, m: t.m, n: t.n, k: t.k, alpha: t.alpha,
              a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, beta: t.beta, c: c.pointer, ldc: ldc,
              threads: threads)
        referenceSgemm(transA: t.transA, transB: t.transB, m: t.m, n: t.n, k: t.k, alpha: t.alpha,
                       a: a.pointer, lda: lda, b: b.pointer, ldb: ldb, beta: t.beta, c: expected.pointer, ldc: ldc)
        let u = Double(Float.ulpOfOne) / 2
        var failures = 0
        for i in 0..<t.m {
            for j in 0..<ldc {
                let got = c[i * ldc + j], want = expected[i * ldc + j]
                if j >= t.n {
                    if got != sentinel, failures < 3 {
                        failures += 1
                        Issue.record("\(t) threads \(threads): padding C[\(i), \(j)] overwritten", sourceLocation: sourceLocation)
                    }
                    continue
                }
                var magnitude = 0.0
                for p in 0..<t.k {
                    let x = t.transA ? a[p * lda + i] : a[i * lda + p]
                    let y = t.transB ? b[j * ldb + p] : b[p * ldb + j]
                    magnitude += Double(abs(x) * abs(y))
                }
                let bound = Double(t.k + 4) * u
                    * (Double(abs(t.alpha)) * magnitude + Double(abs(t.beta)) * Double(abs(c0[i * ldc + j])))
                let err = abs(Double(got) - Double(want))
                if !(err <= bound), failures < 3 {
                    failures += 1
                    Issue.record("\(t) threads \(threads): C[\(i), \(j)] = \(got), expected \(want) (error \(err) > bound \(bound))",
                                 sourceLocation: sourceLocation)
                }
            }
        }
        return c.values
    }

    static let awkward = [1, 7, 13, 15, 16, 17, 31, 33, 97]

    /// All four transpose combinations, awkward sizes in every dimension, 1 and 2 threads.
    @Test(arguments: [(false, false), (false, true), (true, false), (true, true)])
    func transposesAtAwkwardSizes(_ trans: (Bool, Bool)) {
        for threads in [1, 2] {
            for m in Self.awkward {
                for n in [1, 15, 16, 17, 33, 97] {
                    for k in [1, 13, 17, 97] {
                        Self.check(Case(transA: trans.0, transB: trans.1, m: m, n: n, k: k), threads: threads)
                    }
                }
            }
        }
    }

    /// Sizes on both sides of every blocking boundary (MR, NR, KC, two k-blocks, MC, NC), with
    /// each transpose, alpha/beta, padded leading dimensions, and 1 and 2 threads (large enough to
    /// really split, with row and column splits).
    @Test(arguments: [1, 2])
    func blockingBoundaries(threads: Int) {
        let sizes: [(Int, Int, Int)] = [
            (B.mr - 1, B.nr - 1, 5), (B.mr, B.nr, 5), (B.mr + 1, B.nr + 1, 5),
            (9, 40, B.kc - 1), (9, 40, B.kc), (9, 40, B.kc + 1), (9, 40, 2 * B.kc + 1), (5, 3, 3 * B.kc - 1),
            (B.mc - 1, 65, 70), (B.mc, 65, 70), (B.mc + 1, 65, 70), (2 * B.mc + 3, 20, 33),
            (40, B.nc - 1, 30), (40, B.nc, 30), (17, B.nc + 1, 30), (3, 2 * B.nc + 33, 19),
            // Column blocks when op(A) is read in place (plain A: every size here runs both).
            (40, B.ncInPlaceA - 1, 30), (40, B.ncInPlaceA, 30), (17, B.ncInPlaceA + 1, 30),
            (B.mc + 9, 3 * B.ncInPlaceA + 5, 40),
            (B.mc + 1, B.nc + 1, B.kc + 1),     // every boundary at once, ~35 MFLOP: threaded
            (600, 40, 150),                     // tall: split by rows
            (20, 700, 150),                     // wide: split by columns
        ]
        for (index, (m, n, k)) in sizes.enumerated() {
            let trans = (index % 2 == 1, index % 4 >= 2)
            Self.check(Case(transA: trans.0, transB: trans.1, m: m, n: n, k: k), threads: threads)
            Self.check(Case(transA: !trans.0, transB: !trans.1, m: m, n: n, k: k, alpha: -0.75, beta: 1.5, pad: 3),
                       threads: threads)
        }
    }

    /// alpha and beta: beta 0 over NaN, 1 (accumulate), other values; alpha 0 only scales C.
    @Test func alphaBeta() {
        for (alpha, beta): (Float, Float) in [(1, 0), (2, 0), (1, 1), (0.5, -1), (-3, 0.25), (0, 2), (0, 0)] {
            for trans in [(false, false), (true, true)] {
                Self.check(Case(transA: trans.0, transB: trans.1, m: 19, n: 35, k: 23, alpha: alpha, beta: beta), threads: 1)
                Self.check(Case(transA: trans.0, transB: trans.1, m: 150, n: 70, k: 300, alpha: alpha, beta: beta, pad: 5),
                           threads: 2)
            }
        }
    }

    /// Leading dimensions larger than the width, for every operand, with primes.
    @Test func leadingDimensions() {
        for pad in [1, 16, 31] {
            for trans in [(false, false), (false, true), (true, false), (true, true)] {
                Self.check(Case(transA: trans.0, transB: trans.1, m: 13, n: 37, k: 29, beta: 0.5, pad: pad), threads: 1)
                Self.check(Case(transA: trans.0, transB: trans.1, m: 97, n: 257, k: 131, pad: pad), threads: 2)
            }
        }
    }

    /// Empty products: m or n zero leaves C alone; k zero means C = beta * C (NaN-safe for beta 0).
    @Test func emptySizes() {
        for (m, n, k) in [(0, 5, 3), (4, 0, 3), (0, 0, 0), (4, 5, 0), (1, 1, 0)] {
            for beta: Float in [0, 1, 2] {
                Self.check(Case(m: m, n: n, k: k, beta: beta, pad: 2), threads: 1)
                Self.check(Case(transA: true, transB: true, m: m, n: n, k: k, beta: beta), threads: 2)
            }
        }
    }

    /// The result of every element does not depend on the thread count: bit-identical C with
    /// 1, 2 and 3 threads, on shapes with edges in every dimension and both kinds of split.
    @Test func independentOfThreadCount() {
        for (m, n, k) in [(203, 517, 301), (1000, 45, 270), (45, 1000, 513), (B.mc + 5, B.nc + 7, 2 * B.kc + 9)] {
            for trans in [(false, false), (true, true), (false, true)] {
                let t = Case(transA: trans.0, transB: trans.1, m: m, n: n, k: k, alpha: 0.5, beta: 1, pad: 1)
                let one = Self.check(t, threads: 1)
                for threads in [2, 3] {
                    let other = Self.run(t, threads: threads)
                    #expect(one.elementsEqual(other) { $0.bitPattern == $1.bitPattern },
                            "\(t): threads \(threads) differs from 1 thread")
                }
            }
        }
    }

    /// K-split shapes (few tiles of C, a long reduction: the weight gradients) against the
    /// reference, with every transpose, alpha/beta, padding and 1, 2 and 3 threads, including a
    /// last chunk shorter than the others; and bit-identical across thread counts.
    @Test func kSplit() {
        let shapes: [(Int, Int, Int)] = [(5, 37, 4099), (9, 33, 8191), (3, 17, 32771), (16, 40, 40_000)]
        // Large C, short k, or k not long next to m and n: no split.
        #expect(B.kChunks(m: 2048, n: 2048, k: 40_000) == 1 && B.kChunks(m: 64, n: 147, k: 4000) == 1
                && B.kChunks(m: 64, n: 576, k: 8192) == 1)
        for (index, (m, n, k)) in shapes.enumerated() {
            #expect(B.kChunks(m: m, n: n, k: k) > 1, "\(m)x\(n)x\(k) should take the K-split")
            let trans = (index % 2 == 1, index >= 2)
            for (alpha, beta): (Float, Float) in [(1, 0), (-0.5, 1.5)] {
                let t = Case(transA: trans.0, transB: trans.1, m: m, n: n, k: k, alpha: alpha, beta: beta,
                             pad: beta == 0 ? 0 : 3)
                let one = Self.check(t, threads: 1)
                for threads in [2, 3] {
                    let other = Self.check(t, threads: threads)
                    #expect(one.elementsEqual(other) { $0.bitPattern == $1.bitPattern },
                            "\(t): threads \(threads) differs from 1 thread")
                }
            }
        }
    }

    /// A dropped or doubled partial product of the K-split, exactly: with A and B all ones,
    /// every element of C is k (+ beta · C) in exact float arithmetic, so losing one chunk
    /// (k/2 or k/4 of the sum) or adding one twice is visible in every element.
    @Test func kSplitSumsEveryChunkOnce() {
        for (m, n, k) in [(7, 33, 4097), (2, 3, 65_539)] {
            let chunks = B.kChunks(m: m, n: n, k: k)
            #expect(chunks > 1)
            for trans in [(false, false), (true, true), (true, false)] {
                for threads in [1, 2, 3, 4] {
                    let a = [Float](repeating: 1, count: m * k), b = [Float](repeating: 1, count: k * n)
                    var c = [Float](repeating: 5, count: m * n)
                    a.withUnsafeBufferPointer { a in
                        b.withUnsafeBufferPointer { b in
                            sgemm(transA: trans.0, transB: trans.1, m: m, n: n, k: k, a: a.baseAddress!,
                                  lda: trans.0 ? m : k, b: b.baseAddress!, ldb: trans.1 ? k : n, beta: 2,
                                  c: &c, ldc: n, threads: threads)
                        }
                    }
                    let bad = c.filter { $0 != Float(k + 10) }
                    #expect(bad.isEmpty, "\(m)x\(n)x\(k) \(trans) threads \(threads): \(bad.prefix(3)), want \(k + 10)")
                }
            }
        }
    }

    /// The column-block width follows how op(A) is read, and the blocks of both widths tile the
    /// columns exactly: wide products with plain A (narrow blocks) and a packed transposed A
    /// (wide blocks), split by columns over 2 and 3 threads, against the reference.
    @Test func columnBlocks() {
        #expect(B.ncInPlaceA < B.nc && B.nc % B.ncInPlaceA == 0 && B.ncInPlaceA % B.nr == 0)
        for (m, n, k) in [(24, 2 * B.nc + 3 * B.nr + 7, 70), (B.mc + 3, 3 * B.ncInPlaceA + 1, 33)] {
            for trans in [(false, false), (false, true), (true, false)] {
                for threads in [1, 2, 3] {
                    Self.check(Case(transA: trans.0, transB: trans.1, m: m, n: n, k: k, alpha: 1.5, beta: -1, pad: 2),
                               threads: threads)
                }
            }
        }
    }

    /// The k-blocks depend on k only, cover k exactly and are at most KC.
    @Test func kBlocks() {
        for k in [1, 2, 255, 256, 257, 511, 512, 513, 576, 1152, 4608] {
            let kb = B.kBlock(k), blocks = (k + kb - 1) / kb
            #expect(kb <= B.kc && kb >= 1, "k \(k): block \(kb)")
            #expect(blocks == (k + B.kc - 1) / B.kc, "k \(k): \(blocks) blocks")
            #expect((blocks - 1) * kb < k, "k \(k): empty last block")
        }
    }
}
