import ResidualAutodiff

// The standard layers. Each is a final class holding its parameters; `callAsFunction` calls one op.

/// 2-D convolution over NCHW (PyTorch's `nn.Conv2d`; weight `[out, in/groups, k, k]`).
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, groups: Int

    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                groups: Int = 1, bias: Bool = true, initializer: Initializer = .pytorchDefault) {
        shapeCheck(inputChannels % groups == 0 && outputChannels % groups == 0,
                   "Conv2d: \(inputChannels) input and \(outputChannels) output channels are not divisible by \(groups) groups")
        let shape = [outputChannels, inputChannels / groups, kernelSize, kernelSize]
        weight = Parameter(initializer.make(shape))
        self.bias = bias ? Parameter(RandomSource.current.uniform([outputChannels],
                                                                  bound: 1 / Float(Initializer.fans(shape).fanIn).squareRoot())) : nil
        self.stride = stride; self.padding = padding; self.groups = groups
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = conv2d(x, weight.value, bias: bias?.value, stride: stride, padding: padding, groups: groups)
        SummaryRecorder.current?.record(self, output: y.shape,
                                        macs: y.count / y.shape[0] * weight.shape[1] * weight.shape[2] * weight.shape[3])
        return y
    }
}

/// Fully connected layer, `x·Wᵀ + b` (PyTorch's `nn.Linear`; weight `[out, in]`).
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?

    public init(inputFeatures: Int, outputFeatures: Int, bias: Bool = true, initializer: Initializer = .pytorchDefault) {
        weight = Parameter(initializer.make([outputFeatures, inputFeatures]))
        self.bias = bias ? Parameter(RandomSource.current.uniform([outputFeatures], bound: 1 / Float(inputFeatures).squareRoot())) : nil
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = linear(x, weight: weight.value, bias: bias?.value)
        SummaryRecorder.current?.record(self, output: y.shape, macs: weight.count)
        return y
    }
}

/// Batch normalization over channels (PyTorch's `nn.BatchNorm2d`). Training mode normalises with the
/// batch statistics and updates `running_mean`/`running_var` with `momentum` (the running variance
/// uses the unbiased batch variance, as PyTorch does); evaluation mode uses the running statistics.
public final class BatchNorm2d: Layer, ModeDependent {
    public let weight: Parameter?
    public let bias: Parameter?
    public let runningMean: Buffer
    public let runningVar: Buffer
    public let numBatchesTracked: Buffer
    public let momentum: Float, epsilon: Float
    public var isTraining = true

    public init(channels: Int, momentum: Float = 0.1, epsilon: Float = 1e-5, affine: Bool = true) {
        weight = affine ? Parameter(Tensor(ones: [channels])) : nil
        bias = affine ? Parameter(Tensor(zeros: [channels])) : nil
        runningMean = Buffer(Tensor(zeros: [channels]))
        runningVar = Buffer(Tensor(ones: [channels]))
        numBatchesTracked = Buffer(Tensor(zeros: []))
        self.momentum = momentum; self.epsilon = epsilon
    }

    public func namedLocalBuffers() -> [(String, Buffer)] {
        [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", numBatchesTracked)]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { callAsFunction(x, fusedReLU: false) }

    /// `relu(self(x))` with `fusedReLU`, in one pass over memory forward and one backward (the
    /// conv-BN-ReLU sequence of a ResNet). The output keeps `x`'s memory layout.
    public func callAsFunction(_ x: Tensor, fusedReLU: Bool) -> Tensor {
        shapeCheck(x.rank >= 2 && x.shape[1] == runningMean.value.count,
                   "BatchNorm2d: input \(describe(x.shape)) for \(runningMean.value.count) channels")
        guard isTraining else {
            return batchNormInference(x, weight: weight?.value, bias: bias?.value, mean: runningMean.value,
                                      variance: runningVar.value, epsilon: epsilon, fusedReLU: fusedReLU)
        }
        let (y, mean, variance) = batchNormTraining(x, weight: weight?.value, bias: bias?.value, epsilon: epsilon,
                                                    fusedReLU: fusedReLU)
        let n = Float(x.count / x.shape[1])
        withoutTape {
            let m = momentum
            runningMean.value = runningMean.value * (1 - m) + mean * m
            runningVar.value = runningVar.value * (1 - m) + variance * (m * n / max(n - 1, 1))
            numBatchesTracked.value = numBatchesTracked.value + 1
        }
        return y
    }
}

public final class ReLU: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { relu(x) }
}

public final class MaxPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize; self.stride = stride ?? kernelSize; self.padding = padding
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        maxPool2d(x, kernelSize: kernelSize, stride: stride, padding: padding)
    }
}

public final class AvgPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize; self.stride = stride ?? kernelSize; self.padding = padding
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        avgPool2d(x, kernelSize: kernelSize, stride: stride, padding: padding)
    }
}

/// `[N, C, H, W] -> [N, C, 1, 1]` (PyTorch's `nn.AdaptiveAvgPool2d(1)`).
public final class GlobalAvgPool: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { globalAvgPool(x) }
}

/// `[N, ...] -> [N, prod(...)]`.
public final class Flatten: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { x.flattened(from: 1) }
}

public final class Identity: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { x }
}

/// Zeroes each element with probability `p` in training and scales the rest by 1/(1-p); identity in
/// evaluation. Masks come from a seeded generator, so runs reproduce.
public final class Dropout: Layer, ModeDependent {
    public let probability: Float
    public var isTraining = true
    private let source: RandomSource

    public init(probability: Float = 0.5, seed: UInt64? = nil) {
        shapeCheck(probability >= 0 && probability < 1, "Dropout: probability \(probability) not in [0, 1)")
        self.probability = probability
        source = RandomSource(seed: seed ?? RandomSource.current.next())
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining, probability > 0 else { return x }
        let keep = 1 - probability
        let u = source.uniform(x.shape, bound: 1)
        let mask = Tensor(shape: x.shape) { m in
            u.withUnsafeBufferPointer { up in
                for i in 0..<m.count { m[i] = (up[i] + 1) / 2 < keep ? 1 / keep : 0 }
            }
        }
        return x * mask
    }
}
