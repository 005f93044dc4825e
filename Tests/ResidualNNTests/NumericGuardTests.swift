import Testing
import Residual

/// NaN and infinity detection for the training loop (`resnet train` stops or, with
/// `--skip-nonfinite`, skips the batch; the end-to-end cases are in ResnetCLITests).
@Suite struct NumericGuardTests {
    /// Every position at awkward sizes (the SIMD16 body and the scalar tail), both kinds; values
    /// whose plain sum would overflow are still finite.
    @Test(arguments: [1, 15, 16, 17, 33, 257])
    func findsEveryNonFiniteElement(_ n: Int) {
        let big = Tensor(shape: [n], scalars: [Float](repeating: 3e38, count: n))
        #expect(NumericGuard.isFinite(big))
        #expect(NumericGuard.nonFiniteCounts(big) == (0, 0))
        for position in 0..<n {
            for bad in [Float.nan, .infinity, -.infinity] {
                var values = [Float](repeating: -1.5, count: n)
                values[position] = bad
                let t = Tensor(shape: [n], scalars: values)
                #expect(!NumericGuard.isFinite(t), "\(bad) at \(position) of \(n)")
                let counts = NumericGuard.nonFiniteCounts(t)
                #expect(counts == (bad.isNaN ? 1 : 0, bad.isNaN ? 0 : 1))
            }
        }
        #expect(NumericGuard.isFinite(Tensor(shape: [0], scalars: [])))
    }

    /// The loss first, then gradients in parameter order; the message names step and tensor.
    @Test func reportsLossThenFirstGradientInParameterOrder() {
        let names = ["conv1.weight", "layer2.0.conv1.weight", "fc.weight", "fc.bias"]
        let parameters = names.map { ($0, Parameter(Tensor(shape: [4], scalars: [1, 2, 3, 4]))) }
        for (_, p) in parameters { p.grad = Tensor(shape: [4], scalars: [0.5, -0.5, 1e-30, 3e38]) }
        let finite = Tensor(2.3)
        #expect(NumericGuard.check(step: 5, loss: finite, parameters: parameters) == nil)

        parameters[1].1.grad = Tensor(shape: [4], scalars: [.nan, 1, .nan, .nan])
        parameters[3].1.grad = Tensor(shape: [4], scalars: [1, .infinity, 1, 1])
        let fault = NumericGuard.check(step: 1234, loss: finite, parameters: parameters)
        #expect(fault == NumericFault(step: 1234, site: .gradient("layer2.0.conv1.weight"), nanCount: 3, infinityCount: 0, otherTensors: 1))
        #expect(fault?.description == "step 1234: gradient of layer2.0.conv1.weight has 3 NaN (and 1 more tensor is non-finite)")

        let lossFault = NumericGuard.check(step: 7, loss: Tensor(.nan), parameters: parameters)
        #expect(lossFault?.description == "step 7: loss is NaN")
        #expect(NumericGuard.check(step: 8, loss: Tensor(.infinity), parameters: [])?.description == "step 8: loss is infinite")

        // Parameters without a gradient (frozen or unused) are not faults.
        parameters[1].1.grad = nil
        parameters[3].1.grad = nil
        #expect(NumericGuard.check(step: 9, loss: finite, parameters: parameters) == nil)
    }

    @Test func stateCheckNamesTheTensor() {
        let state = [("conv1.weight", Tensor(shape: [2], scalars: [1, 2])),
                     ("bn1.running_mean", Tensor(shape: [3], scalars: [.nan, .infinity, 0]))]
        #expect(NumericGuard.check(step: 3, state: state)?.description == "step 3: bn1.running_mean has 1 NaN and 1 Inf")
        #expect(NumericGuard.check(step: 3, state: Array(state.prefix(1))) == nil)
    }

    /// Through a real network and the tape: one NaN pixel in one image makes the loss NaN; the
    /// same batch without it is finite, with finite gradients. Channels-last activations and
    /// gradients are checked whatever their memory layout.
    @Test func aNaNPixelIsCaughtThroughTheNetwork() throws {
        let data = try Dataset.fashionMNIST(train: false).prefix(8)
        let loader = BatchLoader(data, batchSize: 8, shuffle: false, augment: false, preprocessing: Preprocessing(fitting: data))
        let batch = loader.batch(epoch: 0, index: 0, order: loader.order(epoch: 0))
        let model = withSeed(0) { CIFARResNet(depth: 8, classes: 10, inputChannels: 1) }
        let parameters = model.namedParameters()
        func step(_ images: Tensor) -> NumericFault? {
            let tape = Tape()
            let loss = tape.record { softmaxCrossEntropy(logits: model(images), labels: batch.labels) }
            tape.backward(loss)
            defer { for (_, p) in parameters { p.zeroGrad() } }
            return NumericGuard.check(step: 1, loss: loss, parameters: parameters)
        }
        #expect(step(batch.images) == nil)
        var poisoned = batch.images
        poisoned.withUnsafeMutableBufferPointer { $0[3 * 32 * 32 + 100] = .nan }
        #expect(step(poisoned)?.site == .loss)
    }
}
