import ResidualAutodiff

// The standard layers. Each is a final class holding its parameters; `callAsFunction` calls one op
// and tells a running `ModelSummary` (if any) its output shape and multiply-adds.

/// 2-D convolution over NCHW (PyTorch's `nn.Conv2d`; weight `[out, in/groups, k, k]`).
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, groups: Int
    /// The eval-mode BN folded into this convolution, when it runs as `self(x, batchNorm:)`.
    let folded = FoldedConvolution()

    /// The bias, if any, is drawn as PyTorch does, U(±1/√fan_in), whatever the weight initialiser.
    public init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1,
                padding: Int = 0, groups: Int = 1, bias: Bool = true,
                initializer: Initializer = .pytorchDefault) {
        shapeCheck(inputChannels % groups == 0 && outputChannels % groups == 0,
                   "Conv2d: \(inputChannels) input and \(outputChannels) output channels are not "
                   + "divisible by \(groups) groups")
        let shape = [outputChannels, inputChannels / groups, kernelSize, kernelSize]
        weight = Parameter(initializer.make(shape))
        self.bias = bias ? Parameter(Initializer.pytorchBias(shape)) : nil
        self.stride = stride; self.padding = padding; self.groups = groups
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = conv2d(x, weight.value, bias: bias?.value, stride: stride, padding: padding, groups: groups)
        // One multiply-add per weight of a filter per output element.
        let perOutput = weight.shape[1] * weight.shape[2] * weight.shape[3]
        SummaryRecorder.note(self, y, macsPerImage: y.count / y.shape[0] * perOutput)
        return y
    }
}

/// Fully connected layer, `x·Wᵀ + b` (PyTorch's `nn.Linear`; weight `[out, in]`).
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?

    /// The bias, if any, is drawn as PyTorch does, U(±1/√fan_in), whatever the weight initialiser.
    public init(inputFeatures: Int, outputFeatures: Int, bias: Bool = true,
                initializer: Initializer = .pytorchDefault) {
        let shape = [outputFeatures, inputFeatures]
        weight = Parameter(initializer.make(shape))
        self.bias = bias ? Parameter(Initializer.pytorchBias(shape)) : nil
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = linear(x, weight: weight.value, bias: bias?.value)
        SummaryRecorder.note(self, y, macsPerImage: y.count / y.shape[0] * weight.shape[1])
        return y
    }
}

/// Batch normalization over channels (PyTorch's `nn.BatchNorm2d`).
///
/// Training mode normalises with the batch statistics and updates the buffers `running_mean` and
/// `running_var` with `momentum` (`r ← (1 − m)·r + m·batch`; the running variance takes the unbiased
/// batch variance, as PyTorch does) and counts `num_batches_tracked`; evaluation mode uses the
/// running statistics, so an image's output does not depend on the rest of its batch. Without
/// `affine` there is no `weight` (γ) or `bias` (β).
public final class BatchNorm2d: Layer, ModeDependent {
    public let weight: Parameter?
    public let bias: Parameter?
    public let runningMean: Buffer
    public let runningVar: Buffer
    /// Kept because torchvision's state dicts have it (PyTorch uses it only when momentum is None).
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

    public func namedLocalParameters() -> [(String, Parameter)] {
        [weight.map { ("weight", $0) }, bias.map { ("bias", $0) }].compactMap { $0 }
    }

    public func namedLocalBuffers() -> [(String, Buffer)] {
        [("running_mean", runningMean), ("running_var", runningVar), ("num_batches_tracked", numBatchesTracked)]
    }

    public func namedChildren() -> [(String, any AnyModule)] { [] }

    public func callAsFunction(_ x: Tensor) -> Tensor { callAsFunction(x, fusedReLU: false) }

    /// `relu(self(x))` with `fusedReLU`, in one pass over memory forward and one backward (the
    /// conv-BN-ReLU sequence of a ResNet). The output keeps `x`'s memory layout.
    public func callAsFunction(_ x: Tensor, fusedReLU: Bool) -> Tensor { normalize(x, fusedReLU: fusedReLU, residual: nil) }

    /// `relu(self(x) + residual)`: the end of a residual block (`residual` is the shortcut, same
    /// shape as `x`) in one pass forward, with no temporary for `self(x)`.
    public func callAsFunction(_ x: Tensor, addingReLU residual: Tensor) -> Tensor {
        normalize(x, fusedReLU: true, residual: residual)
    }

    private func normalize(_ x: Tensor, fusedReLU: Bool, residual: Tensor?) -> Tensor {
        let channels = runningMean.value.count
        shapeCheck(x.rank >= 2 && x.shape[1] == channels,
                   "BatchNorm2d: input \(describe(x.shape)) for \(channels) channels")
        guard isTraining else {
            let y = batchNormInference(x, weight: weight?.value, bias: bias?.value, mean: runningMean.value,
                                       variance: runningVar.value, epsilon: epsilon, fusedReLU: fusedReLU,
                                       residual: residual)
            SummaryRecorder.note(self, y)
            return y
        }
        let (y, mean, variance) = batchNormTraining(x, weight: weight?.value, bias: bias?.value, epsilon: epsilon,
                                                    fusedReLU: fusedReLU, residual: residual)
        let n = Float(x.count / channels)
        withoutTape {
            let m = momentum
            runningMean.value = runningMean.value * (1 - m) + mean * m
            runningVar.value = runningVar.value * (1 - m) + variance * (m * n / max(n - 1, 1))
            numBatchesTracked.value = numBatchesTracked.value + 1
        }
        SummaryRecorder.note(self, y)
        return y
    }
}

/// `max(x, 0)`.
public final class ReLU: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { SummaryRecorder.noted(self, relu(x)) }
}

/// Max pooling over `kernelSize`² windows (PyTorch's `nn.MaxPool2d`; stride defaults to the kernel
/// size; padding is -∞).
public final class MaxPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize; self.stride = stride ?? kernelSize; self.padding = padding
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        SummaryRecorder.noted(self, maxPool2d(x, kernelSize: kernelSize, stride: stride, padding: padding))
    }
}

/// Average pooling over `kernelSize`² windows (PyTorch's `nn.AvgPool2d` with its default
/// `count_include_pad=True`: the divisor is always `kernelSize`²).
public final class AvgPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize; self.stride = stride ?? kernelSize; self.padding = padding
    }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        SummaryRecorder.noted(self, avgPool2d(x, kernelSize: kernelSize, stride: stride, padding: padding))
    }
}

/// Mean over the spatial axes, `[N, C, H, W] -> [N, C, 1, 1]` (PyTorch's `nn.AdaptiveAvgPool2d(1)`).
public final class GlobalAvgPool: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { SummaryRecorder.noted(self, globalAvgPool(x)) }
}

/// `[N, ...] -> [N, prod(...)]` (PyTorch's `nn.Flatten`).
public final class Flatten: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { SummaryRecorder.noted(self, x.flattened(from: 1)) }
}

/// Returns its input (a placeholder, e.g. for a removed classifier head).
public final class Identity: Layer {
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { SummaryRecorder.noted(self, x) }
}

/// Zeroes each element with probability `p` in training and scales the rest by 1/(1-p) (PyTorch's
/// inverted dropout); the identity in evaluation. Masks come from the layer's own seeded generator
/// (drawn from the construction seed unless `seed` is given), so runs reproduce, and its state is
/// saved by training checkpoints.
public final class Dropout: Layer, ModeDependent, RandomStateful {
    public let probability: Float
    public var isTraining = true
    private let source: RandomSource

    public init(probability: Float = 0.5, seed: UInt64? = nil) {
        shapeCheck(probability >= 0 && probability < 1, "Dropout: probability \(probability) not in [0, 1)")
        self.probability = probability
        source = RandomSource(seed: seed ?? RandomSource.current.next())
    }

    public var randomState: SeededGenerator {
        get { source.state }
        set { source.state = newValue }
    }

    public func namedChildren() -> [(String, any AnyModule)] { [] }
    public func namedLocalParameters() -> [(String, Parameter)] { [] }
    public func namedLocalBuffers() -> [(String, Buffer)] { [] }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining, probability > 0 else { return SummaryRecorder.noted(self, x) }
        let keep = 1 - probability
        let u = source.uniform(x.shape, bound: 1)      // U[-1, 1): (u + 1) / 2 is U[0, 1)
        let mask = Tensor(shape: x.shape) { m in
            u.withUnsafeBufferPointer { up in
                for i in 0..<m.count { m[i] = (up[i] + 1) / 2 < keep ? 1 / keep : 0 }
            }
        }
        return SummaryRecorder.noted(self, x * mask)
    }
}
