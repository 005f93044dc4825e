import Testing
import ResidualKernels

/// `linearFewRows` against a Double reference at awkward sizes (0, 1, 15, 16, 17, 31, 32, 33,
/// primes), with and without bias, 1 and 2 threads (bit-identical), within the float32
/// accumulation bound γ_k · Σ|x·w| (see `worstRatio`).
@Suite struct GEMVTests {
    @Test func matchesReference() {
        for rows in [0, 1, 3, 8] {
            for k in [0, 1, 15, 16, 17, 31, 32, 33, 97, 512] {
                for outF in [0, 1, 7, 16, 1000] {
                    let x = convTestValues(rows * k, seed: 1).map { $0 - 1 }
                    let w = convTestValues(outF * k, seed: 2).map { $0 - 1 }
                    let b = convTestValues(outF, seed: 3)
                    for useBias in [false, true] {
                        var want = [Float](repeating: 0, count: rows * outF), magnitude = want
                        for i in 0..<rows {
                            for o in 0..<outF {
                                var s = useBias ? Double(b[o]) : 0, m = useBias ? Double(abs(b[o])) : 0
                                for j in 0..<k {
                                    s += Double(x[i * k + j]) * Double(w[o * k + j])
                                    m += abs(Double(x[i * k + j]) * Double(w[o * k + j]))
                                }
                                want[i * outF + o] = Float(s)
                                magnitude[i * outF + o] = Float(m)
                            }
                        }
                        var results: [[Float]] = []
                        for threads in [1, 2] {
                            var y = [Float](repeating: .nan, count: rows * outF)
                            b.withUnsafeBufferPointer { bp in
                                linearFewRows(rows: rows, inFeatures: k, outFeatures: outF, x: x, weight: w,
                                              bias: useBias ? bp.baseAddress : nil, y: &y, threads: threads)
                            }
                            let r = worstRatio(y, want, magnitude: magnitude, terms: k + 1)
                            #expect(r <= 1, "rows \(rows) k \(k) out \(outF) bias \(useBias) t\(threads): \(r)")
                            results.append(y)
                        }
                        #expect(results[0] == results[1], "rows \(rows) k \(k) out \(outF): thread counts differ")
                    }
                }
            }
        }
    }
}
