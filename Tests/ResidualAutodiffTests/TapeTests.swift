import Testing
import Foundation
import ResidualAutodiff
import ResidualTestSupport

@Suite struct TapeTests {
    @Test func gradientOfSquare() {
        let tape = Tape()
        let x = tape.watch(Tensor(shape: [3], scalars: [1, -2, 3]))
        let y = tape.record { sum(x * x) }
        #expect(y.scalar == 14)
        let g = tape.gradients(of: y, withRespectTo: [x])[0]
        #expect(g.scalars == [2, -4, 6])
    }

    @Test func accumulatesOverUses() {
        // f = x·x + x + x  =>  f' = 2x + 2
        let tape = Tape()
        let x = tape.watch(Tensor(shape: [2], scalars: [3, -1]))
        let y = tape.record { sum(x * x + x + x) }
        #expect(tape.gradients(of: y, withRespectTo: [x])[0].scalars == [8, 0])
    }

    @Test func unusedInputGetsZeros() {
        let tape = Tape()
        let x = tape.watch(Tensor(ones: [2])), z = tape.watch(Tensor(ones: [3]))
        let y = tape.record { sum(x * 2) }
        let g = tape.gradients(of: y, withRespectTo: [x, z])
        #expect(g[1].scalars == [0, 0, 0])
    }

    @Test func parametersAccumulateUntilZeroed() {
        let w = Parameter(Tensor(shape: [2], scalars: [1, 2]))
        for _ in 0..<2 {
            let tape = Tape()
            let loss = tape.record { sum(w.value * w.value) }
            tape.backward(loss)
        }
        #expect(w.grad?.scalars == [4, 8], "two backward passes add up, like PyTorch")
        w.zeroGrad()
        #expect(w.grad == nil)
    }

    @Test func frozenParameterGetsNoGradient() {
        let w = Parameter(Tensor(ones: [2]), requiresGrad: false)
        let v = Parameter(Tensor(ones: [2]))
        let tape = Tape()
        let loss = tape.record { sum(w.value * v.value) }
        tape.backward(loss)
        #expect(w.grad == nil)
        #expect(v.grad?.scalars == [1, 1])
    }

    @Test func noGradRecordsNothing() {
        let w = Parameter(Tensor(ones: [4]))
        let tape = Tape()
        let y = tape.record { withoutTape { relu(w.value * 2) + 1 } }
        #expect(tape.nodeCount == 0)
        #expect(y.trace == nil)
        // And outside any recording nothing is traced either.
        #expect((w.value * 3).trace == nil)
    }

    /// ResNet-1202 records tens of thousands of nodes; backward must be a loop, not recursion.
    @Test func longChainDoesNotRecurse() {
        let tape = Tape()
        let x = tape.watch(Tensor(shape: [1], scalars: [1]))
        let y = tape.record {
            var h = x
            for _ in 0..<100_000 { h = h * 1.0 }
            return sum(h)
        }
        #expect(tape.nodeCount > 100_000)
        #expect(tape.gradients(of: y, withRespectTo: [x])[0].scalars == [1])
    }

    /// Two threads, each with its own tape, model and data, at the same time.
    @Test func concurrentTapes() async {
        let results = await withTaskGroup(of: (Float, [Float]).self) { group in
            for k in 0..<4 {
                group.addTask {
                    let w = Parameter(Tensor(repeating: Float(k + 1), shape: [64]))
                    var last: [Float] = []
                    for _ in 0..<50 {
                        w.zeroGrad()
                        let tape = Tape()
                        let loss = tape.record { sum(w.value * w.value * 0.5) }
                        tape.backward(loss)
                        last = w.grad!.scalars
                    }
                    return (Float(k + 1), last)
                }
            }
            var out: [(Float, [Float])] = []
            for await r in group { out.append(r) }
            return out
        }
        #expect(results.count == 4)
        for (k, g) in results { #expect(g == [Float](repeating: k, count: 64)) }
    }

    /// Backward frees each node as it runs: the tape holds no activations afterwards.
    @Test func backwardReleasesActivations() {
        weak var captured: TensorStorage?
        let tape = Tape()
        let x = tape.watch(Tensor(ones: [1000]))
        let loss: Tensor = tape.record {
            let h = exp(x)
            captured = h.storage
            return sum(h)
        }
        #expect(captured != nil, "the exp node keeps its output for backward")
        _ = tape.gradients(of: loss, withRespectTo: [x])
        #expect(captured == nil, "after backward the tape no longer holds it")
    }

    /// A no-grad scope inside a recording keeps nothing either: the tape gains no node and the
    /// intermediate is freed as soon as the scope's value is dropped.
    @Test func noGradScopeInsideRecordingKeepsNoIntermediates() {
        weak var captured: TensorStorage?
        let tape = Tape()
        let x = tape.watch(Tensor(ones: [1000]))
        let y: Tensor = tape.record {
            withoutTape {
                let h = exp(x)
                captured = h.storage
                return sum(h)
            }
        }
        #expect(tape.nodeCount == 1, "only the watched leaf")
        #expect(y.trace == nil)
        #expect(captured == nil, "no backward rule was recorded, so nothing keeps exp's output alive")
    }

    /// Two tasks at once, each with its own tape, running the kernel-backed ops (convolution in both
    /// layouts, batch norm, pooling, matmul through SGEMM, cross-entropy) forward and backward:
    /// results must be bit-identical to the same computation run alone (shared workspaces, packed
    /// weight caches or per-thread buffers that leak between callers would break this).
    @Test func concurrentKernelTapesMatchSerialRuns() async {
        @Sendable func step(_ k: Int) -> [Float] {
            let x0 = Tensor(randomNormal: [2, 5, 9, 9], seed: UInt64(100 + k))
            let w = Parameter(Tensor(randomNormal: [17, 5, 3, 3], standardDeviation: 0.3, seed: UInt64(200 + k)))
            let w2 = Parameter(Tensor(randomNormal: [24, 17 * 5 * 5], standardDeviation: 0.1, seed: UInt64(300 + k)))
            let gamma = Parameter(Tensor(ones: [17]))
            let tape = Tape()
            let x = tape.watch(k % 2 == 0 ? x0 : x0.converted(to: .channelsLast))
            let loss = tape.record {
                let h = conv2d(x, w.value, stride: 1, padding: 1)
                let b = batchNormTraining(h, weight: gamma.value, bias: nil, epsilon: 1e-5, fusedReLU: true).output
                let p = maxPool2d(b, kernelSize: 3, stride: 2, padding: 1).converted(to: .standard)
                let logits = matmul(p.reshaped([2, 17 * 5 * 5]), transposed(w2.value))
                return softmaxCrossEntropy(logits: logits, labels: [k % 24, (k * 7) % 24])
            }
            let gx = tape.gradients(of: loss, withRespectTo: [x])[0]
            return [loss.scalar] + gx.scalars + w.grad!.scalars + w2.grad!.scalars + gamma.grad!.scalars
        }
        let serial = (0..<4).map { step($0) }
        let concurrent = await withTaskGroup(of: (Int, [Float]).self) { group in
            for round in 0..<3 {
                for k in 0..<4 { group.addTask { (k, step(k)) } }
                _ = round
            }
            var out: [(Int, [Float])] = []
            for await r in group { out.append(r) }
            return out
        }
        #expect(concurrent.count == 12)
        for (k, r) in concurrent { #expect(r == serial[k], "task \(k) differs from its serial run") }
    }

    @Test func inferenceKeepsNoIntermediates() {
        weak var captured: TensorStorage?
        let x = Tensor(ones: [1000])
        let y: Tensor = {
            let h = exp(x)
            captured = h.storage
            return sum(h)
        }()
        #expect(y.scalar > 0)
        #expect(captured == nil, "with no tape, no backward rule keeps the intermediate alive")
    }
}
