import ResidualKernels

/// The CPU's own fp32 FMA peak: every thread runs a loop of independent SIMD16 fused multiply-adds.
///
/// Zen 5 issues two 512-bit FMAs per cycle with a 4-cycle latency, so at least 8 independent
/// accumulators are needed to fill both pipes; 12 leave margin and still fit in registers with the
/// two operands. Each accumulator converges to a fixed point (`a = a·0.5 + 0.5` tends to 1), so
/// values stay normal and no denormal slows the loop down.
enum PeakBench: BenchmarkFamily {
    static let name = "peak"
    static let iterations = 4_000_000   // 384 FLOP each: ~1.5 G FLOP, ~6 ms on one core

    static var benchmark: Benchmark {
        Benchmark(name: name, minSampleSeconds: 0.1) { threads in
            let sink = Buffer(count: max(1, threads) * 16)
            let out = UncheckedSendable(sink.pointer)
            return Prepared(flops: Double(threads * iterations * 12 * 16 * 2)) {
                parallelFor(threads, threads: threads) { range in
                    for t in range { out.value[t * 16] = fmaLoop(iterations, out.value[t * 16]) }
                }
                _ = sink
            }
        }
    }

    static var benchmarks: [Benchmark] { [benchmark] }
}

@inline(never)
func fmaLoop(_ iterations: Int, _ seed: Float) -> Float {
    let x = Vec(repeating: 0.5), y = Vec(repeating: 0.5)
    var a0 = Vec(repeating: seed), a1 = a0 + 1, a2 = a0 + 2, a3 = a0 + 3
    var a4 = a0 + 4, a5 = a0 + 5, a6 = a0 + 6, a7 = a0 + 7
    var a8 = a0 + 8, a9 = a0 + 9, a10 = a0 + 10, a11 = a0 + 11
    for _ in 0..<iterations {
        a0 = y.addingProduct(a0, x); a1 = y.addingProduct(a1, x); a2 = y.addingProduct(a2, x); a3 = y.addingProduct(a3, x)
        a4 = y.addingProduct(a4, x); a5 = y.addingProduct(a5, x); a6 = y.addingProduct(a6, x)
        a7 = y.addingProduct(a7, x); a8 = y.addingProduct(a8, x); a9 = y.addingProduct(a9, x)
        a10 = y.addingProduct(a10, x); a11 = y.addingProduct(a11, x)
    }
    let s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11))
    return s.sum()
}
