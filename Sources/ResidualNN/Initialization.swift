import Foundation
import ResidualAutodiff

/// Where layer initialisers draw their random numbers: a seeded generator, shared by the layers
/// built inside one `withSeed` scope, in construction order. So the same seed and the same
/// architecture give bit-identical weights on every run and for any thread count.
public final class RandomSource: @unchecked Sendable {
    private let lock = NSLock()
    private var generator: SeededGenerator

    public init(seed: UInt64) { generator = SeededGenerator(seed: seed) }

    /// The source used by layer initialisers on this task/thread.
    @TaskLocal public static var current: RandomSource = RandomSource(seed: 0)

    /// N(0, standardDeviation²) by Box-Muller, using both the cosine and the sine of each pair (half
    /// the work of one value per pair: building ResNet-152 draws 60 M of them).
    public func normal(_ shape: [Int], standardDeviation: Float) -> Tensor {
        lock.withLock {
            Tensor(shape: shape) { out in
                let std = Double(standardDeviation)
                var i = 0
                while i < out.count {
                    let u1 = Double(generator.next() >> 11) * 0x1p-53, u2 = Double(generator.next() >> 11) * 0x1p-53
                    let r = (-2 * log(max(u1, 0x1p-60))).squareRoot() * std, angle = 2 * Double.pi * u2
                    out[i] = Float(r * cos(angle))
                    if i + 1 < out.count { out[i + 1] = Float(r * sin(angle)) }
                    i += 2
                }
            }
        }
    }

    public func uniform(_ shape: [Int], bound: Float) -> Tensor {
        lock.lock(); defer { lock.unlock() }
        return Tensor(randomUniform: shape, lower: -bound, upper: bound, generator: &generator)
    }

    public func next() -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        return generator.next()
    }

    /// The generator's state: save it to resume the exact same stream later.
    public var state: SeededGenerator {
        get { lock.withLock { generator } }
        set { lock.withLock { generator = newValue } }
    }
}

/// Builds whatever `body` builds with layer initialisers seeded by `seed`.
public func withSeed<R>(_ seed: UInt64, _ body: () throws -> R) rethrows -> R {
    try RandomSource.$current.withValue(RandomSource(seed: seed)) { try body() }
}

/// Weight initialisation schemes. Every random one draws from ``RandomSource/current``, so the
/// same `withSeed` seed gives the same weights on every run and for any thread count.
public enum Initializer: Sendable, Equatable {
    /// He et al. 2015 ("Delving deep into rectifiers", eq. 10 and 14): N(0, 2/fan), the ReLU gain
    /// √2 over √fan. `fanIn` (the default, also PyTorch's `kaiming_normal_` default) keeps the
    /// forward signal's variance; `fanOut` keeps the backward signal's, which torchvision's ResNet
    /// uses. The ResNet paper initialises "as in [13]"; its zoo here uses `fanIn`.
    case heNormal(mode: FanMode = .fanIn)
    /// PyTorch's default for Conv2d/Linear weights: `kaiming_uniform_(a: √5)`, whose bound
    /// gain·√(3/fan_in) with gain √(2/(1+5)) is U(±1/√fan_in). Biases: ``pytorchBias(_:source:)``.
    case pytorchDefault
    case zeros
    case constant(Float)

    public enum FanMode: Sendable, Equatable { case fanIn, fanOut }

    /// fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (PyTorch's rule).
    public static func fans(_ shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        let receptive = shape.count > 2 ? shape[2...].reduce(1, *) : 1
        return (shape.count > 1 ? shape[1] * receptive : shape[0], shape[0] * receptive)
    }

    /// PyTorch's default bias for a layer whose weight has `weightShape`: U(±1/√fan_in).
    public static func pytorchBias(_ weightShape: [Int], source: RandomSource = RandomSource.current) -> Tensor {
        source.uniform([weightShape[0]], bound: 1 / Float(fans(weightShape).fanIn).squareRoot())
    }

    public func make(_ shape: [Int], source: RandomSource = RandomSource.current) -> Tensor {
        switch self {
        case .heNormal(let mode):
            let (fi, fo) = Self.fans(shape)
            let fan = Float(mode == .fanIn ? fi : fo)
            return source.normal(shape, standardDeviation: (2 / fan).squareRoot())
        case .pytorchDefault:
            return source.uniform(shape, bound: 1 / Float(Self.fans(shape).fanIn).squareRoot())
        case .zeros:
            return Tensor(zeros: shape)
        case .constant(let v):
            return Tensor(repeating: v, shape: shape)
        }
    }
}
