/// A seeded, reproducible random number generator (xoshiro256**, seeded through SplitMix64).
///
/// Initialisers draw from it sequentially on the calling thread, so the same seed gives the same
/// tensors on every run and for every thread count. Its `state` is plain data that checkpoints save
/// so that a resumed run continues the exact same random stream.
public struct SeededGenerator: RandomNumberGenerator, Sendable, Codable, Equatable {
    public var state: [UInt64]

    public init(seed: UInt64) {
        var z = seed
        func splitmix() -> UInt64 {
            z &+= 0x9E37_79B9_7F4A_7C15
            var x = z
            x = (x ^ (x >> 30)) &* 0xBF58_476D_1CE4_E5B9
            x = (x ^ (x >> 27)) &* 0x94D0_49BB_1331_11EB
            return x ^ (x >> 31)
        }
        state = [splitmix(), splitmix(), splitmix(), splitmix()]
    }

    public mutating func next() -> UInt64 {
        let result = rotl(state[1] &* 5, 7) &* 9
        let t = state[1] << 17
        state[2] ^= state[0]
        state[3] ^= state[1]
        state[1] ^= state[2]
        state[0] ^= state[3]
        state[2] ^= t
        state[3] = rotl(state[3], 45)
        return result
    }

    /// Decoding checks the state: it comes from checkpoints, which are untrusted, and a state of the
    /// wrong length or all zeros would crash or make the generator return zeros forever.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let state = try container.decode([UInt64].self, forKey: .state)
        guard state.count == 4, state.contains(where: { $0 != 0 }) else {
            throw DecodingError.dataCorruptedError(forKey: .state, in: container,
                                                   debugDescription: "a generator state is four words, not all zero")
        }
        self.state = state
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1) with 24 random bits (every Float in the grid is reachable).
    public mutating func nextUniform() -> Float { Float(next() >> 40) * 0x1p-24 }

    /// Standard normal by Box-Muller (one value per call; simple and reproducible).
    public mutating func nextNormal() -> Float {
        let u1 = Double(next() >> 11) * 0x1p-53
        let u2 = Double(next() >> 11) * 0x1p-53
        let r = (-2 * log(max(u1, 0x1p-60))).squareRoot()
        return Float(r * cos(2 * Double.pi * u2))
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Tensor {
    /// Normally distributed values, `mean + std * N(0, 1)`.
    public init(randomNormal shape: [Int], mean: Float = 0, standardDeviation: Float = 1,
                generator: inout SeededGenerator) {
        self.init(shape: shape) { buf in
            for i in buf.indices { buf[i] = mean + standardDeviation * generator.nextNormal() }
        }
    }

    public init(randomNormal shape: [Int], mean: Float = 0, standardDeviation: Float = 1, seed: UInt64) {
        var g = SeededGenerator(seed: seed)
        self.init(randomNormal: shape, mean: mean, standardDeviation: standardDeviation, generator: &g)
    }

    /// Uniformly distributed values in `[lower, upper)`.
    public init(randomUniform shape: [Int], lower: Float = 0, upper: Float = 1,
                generator: inout SeededGenerator) {
        self.init(shape: shape) { buf in
            for i in buf.indices { buf[i] = lower + (upper - lower) * generator.nextUniform() }
        }
    }

    public init(randomUniform shape: [Int], lower: Float = 0, upper: Float = 1, seed: UInt64) {
        var g = SeededGenerator(seed: seed)
        self.init(randomUniform: shape, lower: lower, upper: upper, generator: &g)
    }
}
