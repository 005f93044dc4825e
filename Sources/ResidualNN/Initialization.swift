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

    public func normal(_ shape: [Int], standardDeviation: Float) -> Tensor {
        lock.lock(); defer { lock.unlock() }
        return Tensor(randomNormal: shape, standardDeviation: standardDeviation, generator: &generator)
    }

    public func uniform(_ shape: [Int], bound: Float) -> Tensor {
        lock.lock(); defer { lock.unlock() }
        return Tensor(randomUniform: shape, lower: -bound, upper: bound, generator: &generator)
    }

    public func next() -> UInt64 {
        lock.lock(); defer { lock.unlock() }
        return generator.next()
    }

    public var state: SeededGenerator {
        lock.lock(); defer { lock.unlock() }
        return generator
    }
}

/// Builds whatever `body` builds with layer initialisers seeded by `seed`.
public func withSeed<R>(_ seed: UInt64, _ body: () throws -> R) rethrows -> R {
    try RandomSource.$current.withValue(RandomSource(seed: seed)) { try body() }
}

/// Weight initialisation schemes.
public enum Initializer: Sendable, Equatable {
    /// He et al. 2015 ("Delving deep into rectifiers"): N(0, gain²/fan) with gain √2 for ReLU.
    /// The ResNet paper initialises its convolutions this way; torchvision uses `fanOut`.
    case heNormal(mode: FanMode = .fanOut)
    /// PyTorch's default for Conv2d/Linear weights: kaiming_uniform(a = √5) = U(±1/√fan_in).
    case pytorchDefault
    case zeros
    case constant(Float)

    public enum FanMode: Sendable, Equatable { case fanIn, fanOut }

    /// fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (PyTorch's rule).
    public static func fans(_ shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        let receptive = shape.count > 2 ? shape[2...].reduce(1, *) : 1
        return (shape.count > 1 ? shape[1] * receptive : shape[0], shape[0] * receptive)
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
