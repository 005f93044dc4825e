// A first, small main job: fits a two-layer network to a noisy sine with the tape and plain
import Foundation
// gradient descent, printing the loss as it falls. (The full `resnet` CLI replaces this.)
import Residual

var rng = SeededGenerator(seed: 1)
let x = Tensor(randomUniform: [256, 1], lower: -3, upper: 3, generator: &rng)
let noise = Tensor(randomNormal: [256, 1], standardDeviation: 0.05, generator: &rng)
let y = withoutTape { x.scalars.map { Foundation.sin($0) } }
let target = Tensor(shape: [256, 1], scalars: y) + noise

let w1 = Parameter(Tensor(randomNormal: [32, 1], standardDeviation: 1, generator: &rng))
let b1 = Parameter(Tensor(zeros: [32]))
let w2 = Parameter(Tensor(randomNormal: [1, 32], standardDeviation: 0.25, generator: &rng))
let b2 = Parameter(Tensor(zeros: [1]))
let parameters = [w1, b1, w2, b2]

for step in 0...2000 {
    let tape = Tape()
    let loss = tape.record {
        let h = tanh(linear(x, weight: w1.value, bias: b1.value))
        let diff = linear(h, weight: w2.value, bias: b2.value) - target
        return mean(diff * diff)
    }
    tape.backward(loss)
    for p in parameters {
        let g = p.grad!
        p.update { value in value = withoutTape { value - 0.05 * g } }
        p.zeroGrad()
    }
    if step % 250 == 0 { print("step \(step)  mse \(loss.scalar)") }
}
