// A user's program against the public API only: a two-layer classifier on synthetic data,
// trained with the tape and SGD with momentum, and one call into the kernels module.
// `swift run -c release` in Examples/Downstream; exits non-zero if training does not work.
import Residual

#if canImport(Glibc)
import Glibc
#endif

// Four Gaussian blobs in 8 dimensions, one class each.
let (n, d, classes, hidden) = (256, 8, 4, 32)
let centres = Tensor(randomNormal: [classes, d], standardDeviation: 2, seed: 1).scalars
let noise = Tensor(randomNormal: [n, d], standardDeviation: 0.5, seed: 2).scalars
let labels = (0..<n).map { $0 % classes }
let x = Tensor(shape: [n, d], scalars: (0..<n * d).map { centres[labels[$0 / d] * d + $0 % d] + noise[$0] })

let w1 = Parameter(Tensor(randomNormal: [hidden, d], standardDeviation: 0.5, seed: 3))
let b1 = Parameter(Tensor(zeros: [hidden]))
let w2 = Parameter(Tensor(randomNormal: [classes, hidden], standardDeviation: 0.25, seed: 4))
let b2 = Parameter(Tensor(zeros: [classes]))
let optimizer = SGD([w1, b1, w2, b2], learningRate: 0.1, momentum: 0.9)

var first: Float = 0, last: Float = 0
for step in 0..<50 {
    optimizer.zeroGrad()
    let tape = Tape()
    let loss = tape.record {
        let h = relu(linear(x, weight: w1.value, bias: b1.value))
        return softmaxCrossEntropy(logits: linear(h, weight: w2.value, bias: b2.value), labels: labels)
    }
    tape.backward(loss)
    optimizer.step()
    if step == 0 { first = loss.scalar }
    last = loss.scalar
}
print("loss \(first) -> \(last)")

// The kernels module directly: C = A·B for 2x2 matrices.
let a: [Float] = [1, 2, 3, 4], b: [Float] = [5, 6, 7, 8]
var c = [Float](repeating: 0, count: 4)
sgemm(transA: false, transB: false, m: 2, n: 2, k: 2, a: a, lda: 2, b: b, ldb: 2, c: &c, ldc: 2)
print("sgemm \(c)")

guard last < 0.5 * first, c == [19, 22, 43, 50] else {
    print("Downstream: unexpected result")
    exit(1)
}
