import Testing
import ResidualKernels

/// The SIMD optimizer updates against the scalar formulas, bit for bit (each lane evaluates the same
/// expression in the same order), at sizes around the SIMD width and the per-thread block, with 1
/// and 2 threads, for every SGD variant and both Adam weight-decay forms.
@Suite struct OptimizerKernelTests {
    static let sizes = [0, 1, 15, 16, 17, 31, 16_383, 16_385, 40_009]

    @Test(arguments: [1, 2])
    func sgdMatchesScalarLoop(threads: Int) {
        let (lr, mu, wd): (Float, Float, Float) = (0.1, 0.9, 1e-4)
        for n in Self.sizes {
            for (momentum, nesterov, first) in [(false, false, false), (true, false, true), (true, false, false),
                                                (true, true, true), (true, true, false)] {
                let p = Buffer(n, seed: 1), g = Buffer(n, seed: 2), b = Buffer(n, seed: 3)
                var ep = p.values, eb = b.values
                let gv = g.values
                for j in 0..<n {
                    if !momentum { ep[j] -= lr * (gv[j] + wd * ep[j]); continue }
                    let d = gv[j] + wd * ep[j]
                    eb[j] = first ? d : mu * eb[j] + d
                    ep[j] -= lr * (nesterov ? d + mu * eb[j] : eb[j])
                }
                sgdUpdate(n, parameter: p.pointer, gradient: g.pointer, buffer: momentum ? b.pointer : nil,
                          learningRate: lr, momentum: momentum ? mu : 0, weightDecay: wd, nesterov: nesterov,
                          firstStep: first, threads: threads)
                #expect(p.values == ep, "sgd n \(n) momentum \(momentum) nesterov \(nesterov) first \(first)")
                if momentum { #expect(b.values == eb, "sgd buffer n \(n)") }
            }
        }
    }

    @Test(arguments: [1, 2])
    func adamMatchesScalarLoop(threads: Int) {
        let (lr, b1, b2, eps, wd): (Float, Float, Float, Float, Float) = (1e-3, 0.9, 0.999, 1e-8, 0.01)
        let (c1, c2): (Float, Float) = (1 - 0.9 * 0.9 * 0.9, 1 - 0.999 * 0.999 * 0.999)
        for n in Self.sizes {
            for decoupled in [false, true] {
                let p = Buffer(n, seed: 4), g = Buffer(n, seed: 5), m = Buffer(n, seed: 6), v = Buffer(n, seed: 7)
                for j in 0..<n { v.pointer[j] = abs(v.pointer[j]) }   // a second moment is never negative
                var (ep, em, ev) = (p.values, m.values, v.values)
                let gv = g.values
                let stepSize = lr / c1, c2root = c2.squareRoot()
                for j in 0..<n {
                    var grad = gv[j]
                    if decoupled { ep[j] *= 1 - lr * wd } else { grad += wd * ep[j] }
                    em[j] = b1 * em[j] + (1 - b1) * grad
                    ev[j] = b2 * ev[j] + (1 - b2) * grad * grad
                    ep[j] -= stepSize * em[j] / (ev[j].squareRoot() / c2root + eps)
                }
                adamUpdate(n, parameter: p.pointer, gradient: g.pointer, m: m.pointer, v: v.pointer, learningRate: lr,
                           beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd, decoupled: decoupled, c1: c1, c2: c2,
                           threads: threads)
                #expect(p.values == ep && m.values == em && v.values == ev, "adam n \(n) decoupled \(decoupled)")
            }
        }
    }
}
