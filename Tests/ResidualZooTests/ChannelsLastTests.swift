import Testing
import Residual
import ResidualTestSupport

/// The zoo runs channels-last end to end: the activations inside the networks are channels-last,
/// and no op but the convolution converts layouts (the convolution does so only until its NHWC
/// kernels land; then the allowed set below shrinks to nothing).
@Suite struct ChannelsLastTests {
    /// Ops allowed to convert layouts inside a network: conv2d's temporary NCHW path.
    static let allowed: Set<String> = ["conv2d", "conv2d backward"]

    @Test(arguments: [(16, 16, 1), (16, 32, 2)])
    func basicBlockOutputIsChannelsLast(_ c: (Int, Int, Int)) {
        let (input, planes, stride) = c
        for shortcut in [ShortcutOption.a, .b, .none] {
            let block = withSeed(1) { BasicBlock(input, planes, stride: stride, BlockConfig(shortcut: shortcut)) }
            let x = testTensor([2, input, 8, 8], seed: 2)
            #expect(block(x).layout == .channelsLast, "standard input, shortcut \(shortcut)")
            #expect(block(x.converted(to: .channelsLast)).layout == .channelsLast)
            #expect(block(x.converted(to: .channelsLast)).scalars == block(x).scalars)
        }
    }

    @Test func bottleneckOutputIsChannelsLast() {
        let block = withSeed(3) { Bottleneck(32, 8, stride: 2, BlockConfig(shortcut: .b)) }
        let x = testTensor([1, 32, 6, 6], seed: 4).converted(to: .channelsLast)
        #expect(block(x).layout == .channelsLast)
    }

    /// A train-mode forward and backward of whole zoo networks: only the convolution converts.
    @Test(arguments: ["resnet20", "plain20", "resnet18"])
    func networksConvertOnlyInConvolutions(_ name: String) {
        let model = Zoo.make(name, options: .init(shortcut: name == "resnet18" ? .b : nil))!
        let x = testTensor([2, 3, 32, 32], seed: 5)
        let log = LayoutConversionLog()
        LayoutConversionLog.$current.withValue(log) {
            let tape = Tape()
            let loss = tape.record { softmaxCrossEntropy(logits: model(x), labels: [1, 7]) }
            tape.backward(loss)
        }
        #expect(Set(log.counts.keys).isSubset(of: Self.allowed), "\(name): \(log.counts)")
        let grads = model.parameters.compactMap(\.grad)
        #expect(grads.count == model.parameters.count)
        #expect(grads.allSatisfy { $0.layout == .standard }, "parameter gradients are standard")
    }

    /// Checkpoints see logical order: a channels-last tensor serialises exactly as its standard copy.
    @Test func checkpointOfChannelsLastTensor() throws {
        let x = testTensor([2, 5, 3, 4], seed: 6)
        let a = SafeTensors.serialize([("x", x.converted(to: .channelsLast))])
        let b = SafeTensors.serialize([("x", x)])
        #expect(a == b)
        let back = try SafeTensors.parse(a).tensors["x"]!
        #expect(back.scalars == x.scalars && back.layout == .standard)
    }
}
