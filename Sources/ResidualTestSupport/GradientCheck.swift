import ResidualAutodiff

/// Central finite differences against the tape's gradients.
///
/// The checked objective is `L(x) = Σ w ⊙ f(x)` with fixed random weights `w` (so every output
/// element matters and symmetric errors cannot cancel). For each input (and parameter) up to
/// `maxElementsPerInput` elements are perturbed by ±`epsilon`; `L` is summed in Double. An element
/// passes when `|analytic − numeric| ≤ absoluteTolerance + relativeTolerance · max(|analytic|, |numeric|)`.
///
/// Float32 forward passes limit the attainable accuracy: with `epsilon = 1e-2` the truncation error
/// is O(1e-4·f‴) and the rounding error about `1e-7·|L| / epsilon`; the defaults (1e-2 relative,
/// 1e-3 absolute) sit above both and far below what a wrong backward produces (a missing factor,
/// a sign, a transposed index or a broadcast summed the wrong way all miss by 10 % or more).
public struct GradientCheck: CustomStringConvertible {
    public var epsilon: Float = 1e-2
    public var relativeTolerance: Double = 1e-2
    public var absoluteTolerance: Double = 1e-3
    public var maxElementsPerInput = 64
    public var seed: UInt64 = 0x5EED

    public init() {}

    public struct Mismatch: CustomStringConvertible, Sendable {
        public var what: String
        public var element: Int
        public var analytic: Double
        public var numeric: Double
        public var description: String { "\(what)[\(element)]: analytic \(analytic), numeric \(numeric)" }
    }

    /// Elements compared and the mismatches found (empty = passed).
    public private(set) var compared = 0
    public private(set) var mismatches: [Mismatch] = []
    public var passed: Bool { mismatches.isEmpty && compared > 0 }

    public var description: String {
        passed ? "gradient check passed (\(compared) elements)"
            : "gradient check FAILED on \(mismatches.count) of \(compared) elements; first: " +
              mismatches.prefix(3).map(\.description).joined(separator: "; ")
    }

    /// Checks `f` at `inputs`, and the gradients of `parameters` read inside `f`.
    public mutating func run(_ inputs: [Tensor], parameters: [Parameter] = [],
                             _ f: ([Tensor]) -> Tensor) {
        compared = 0
        mismatches = []
        var rng = SeededGenerator(seed: seed)
        for p in parameters { p.zeroGrad() }

        // Analytic gradients, seeded by w.
        let tape = Tape()
        let watched = inputs.map { tape.watch($0) }
        let y = tape.record { f(watched) }
        let w = Tensor(randomUniform: y.shape, lower: -1, upper: 1, generator: &rng)
        let analytic = tape.gradients(of: y, withRespectTo: watched, seed: w)
        let paramGrads = parameters.map { $0.grad ?? Tensor(zeros: $0.shape) }

        func objective(_ xs: [Tensor]) -> Double {
            let out = withoutTape { f(xs) }
            var s = 0.0
            out.withUnsafeBufferPointer { o in
                w.withUnsafeBufferPointer { wp in
                    for i in 0..<o.count { s += Double(o[i]) * Double(wp[i]) }
                }
            }
            return s
        }

        func compare(_ what: String, _ count: Int, _ grad: Tensor, perturb: (Int, Float) -> Double) {
            var picks = Array(0..<count)
            if count > maxElementsPerInput {
                picks.shuffle(using: &rng)
                picks = Array(picks.prefix(maxElementsPerInput)).sorted()
            }
            for i in picks {
                let numeric = (perturb(i, epsilon) - perturb(i, -epsilon)) / (2 * Double(epsilon))
                let a = Double(grad.scalars[i])
                compared += 1
                if abs(a - numeric) > absoluteTolerance + relativeTolerance * max(abs(a), abs(numeric)) {
                    mismatches.append(Mismatch(what: what, element: i, analytic: a, numeric: numeric))
                }
            }
        }

        for (k, x) in inputs.enumerated() {
            compare("input \(k) \(describe(x.shape))", x.count, analytic[k]) { i, h in
                var xs = inputs
                xs[k][flat: i] += h
                return objective(xs)
            }
        }
        for (k, p) in parameters.enumerated() {
            let original = p.data
            compare("parameter \(k) \(describe(p.shape))", p.count, paramGrads[k]) { i, h in
                var d = original
                d[flat: i] += h
                p.data = d
                defer { p.data = original }
                return objective(inputs)
            }
        }
    }
}

/// Convenience: returns the finished check.
public func checkGradients(_ inputs: [Tensor], parameters: [Parameter] = [],
                           configure: (inout GradientCheck) -> Void = { _ in },
                           _ f: ([Tensor]) -> Tensor) -> GradientCheck {
    var check = GradientCheck()
    configure(&check)
    check.run(inputs, parameters: parameters, f)
    return check
}

/// Random test input in [lower, upper), optionally kept at least `margin` away from zero
/// (so ReLU and max kinks are not straddled by the finite-difference step).
public func testTensor(_ shape: [Int], seed: UInt64, lower: Float = -1, upper: Float = 1,
                       awayFromZero margin: Float = 0) -> Tensor {
    var g = SeededGenerator(seed: seed)
    var t = Tensor(randomUniform: shape, lower: lower, upper: upper, generator: &g)
    if margin > 0 {
        t.withUnsafeMutableBufferPointer { b in
            for i in b.indices where abs(b[i]) < margin { b[i] = b[i] < 0 ? b[i] - margin : b[i] + margin }
        }
    }
    return t
}
