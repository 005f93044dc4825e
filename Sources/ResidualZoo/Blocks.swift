import ResidualAutodiff
import ResidualNN

/// How a residual block's shortcut is built (He et al. 2015, sections 3.3 and 4.1).
public enum ShortcutOption: String, Sendable, CaseIterable {
    /// No shortcut at all: the plain network of the paper's comparisons.
    case none
    /// Identity; where dimensions grow, stride-s subsampling and zero-padded extra channels (no parameters).
    case a = "A"
    /// Identity; a 1x1 projection (conv + BN) only where dimensions grow.
    case b = "B"
    /// A 1x1 projection on every shortcut.
    case c = "C"
}

/// Where a bottleneck block that downsamples puts its stride.
public enum StridePlacement: String, Sendable {
    /// On the first 1x1 convolution, as in the paper (ResNet "v1").
    case firstConvolution
    /// On the 3x3 convolution, as torchvision does ("v1.5"): more multiply-adds, slightly better accuracy.
    case middleConvolution
}

/// The option-A shortcut: keep every `stride`-th pixel and pad the new channels with zeros
/// (half before, half after, as the common CIFAR implementations do). One fused op, which keeps
/// channels-last activations channels-last.
func zeroPaddedIdentity(_ x: Tensor, stride: Int, outputChannels: Int) -> Tensor {
    let extra = outputChannels - x.shape[1]
    if stride == 1 && extra <= 0 { return x }
    return subsampleAndPadChannels(x, stride: stride, before: max(0, extra / 2), after: max(0, extra - extra / 2))
}

/// conv 1x1 + BN: the projection shortcut of options B and C (torchvision's `downsample.0/.1`).
func projection(_ input: Int, _ output: Int, stride: Int, _ config: BlockConfig) -> Sequential {
    Sequential {
        Conv2d(inputChannels: input, outputChannels: output, kernelSize: 1, stride: stride, bias: false, initializer: config.initializer)
        BatchNorm2d(channels: output)
    }
}

/// Per-block settings shared by the builders.
public struct BlockConfig: Sendable {
    public var shortcut: ShortcutOption
    public var initializer: Initializer
    public var stridePlacement: StridePlacement
    public var zeroInitLastBN: Bool

    public init(shortcut: ShortcutOption, initializer: Initializer = .heNormal(mode: .fanIn),
                stridePlacement: StridePlacement = .firstConvolution, zeroInitLastBN: Bool = false) {
        self.shortcut = shortcut; self.initializer = initializer
        self.stridePlacement = stridePlacement; self.zeroInitLastBN = zeroInitLastBN
    }

    /// Does a block from `input` to `output` channels with `stride` get a projection shortcut?
    func projects(_ input: Int, _ output: Int, _ stride: Int) -> Bool {
        shortcut == .c || (shortcut == .b && (stride != 1 || input != output))
    }
}

/// Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets).
public final class BasicBlock: Layer {
    public static let expansion = 1
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    let downsample: Sequential?
    let shortcut: ShortcutOption, stride: Int, outputChannels: Int

    public init(_ input: Int, _ planes: Int, stride: Int = 1, _ config: BlockConfig) {
        conv1 = Conv2d(inputChannels: input, outputChannels: planes, kernelSize: 3, stride: stride, padding: 1, bias: false, initializer: config.initializer)
        bn1 = BatchNorm2d(channels: planes)
        conv2 = Conv2d(inputChannels: planes, outputChannels: planes, kernelSize: 3, padding: 1, bias: false, initializer: config.initializer)
        bn2 = BatchNorm2d(channels: planes)
        downsample = config.projects(input, planes, stride) ? projection(input, planes, stride: stride, config) : nil
        shortcut = config.shortcut; self.stride = stride; outputChannels = planes
        if config.zeroInitLastBN, shortcut != .none { bn2.weight?.data = Tensor(zeros: [planes]) }
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if shortcut == .none { return bn2(conv2(bn1(conv1(x), fusedReLU: true)), fusedReLU: true) }
        let out = bn2(conv2(bn1(conv1(x), fusedReLU: true)))
        let identity = downsample?(x) ?? zeroPaddedIdentity(x, stride: stride, outputChannels: outputChannels)
        return addReLU(out, identity)
    }
}

/// 1x1 (reduce), 3x3, 1x1 (expand x4) convolutions (ResNet-50/101/152).
public final class Bottleneck: Layer {
    public static let expansion = 4
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    let downsample: Sequential?
    let shortcut: ShortcutOption, stride: Int, outputChannels: Int

    public init(_ input: Int, _ planes: Int, stride: Int = 1, _ config: BlockConfig) {
        let (s1, s2) = config.stridePlacement == .firstConvolution ? (stride, 1) : (1, stride)
        let out = planes * Self.expansion
        conv1 = Conv2d(inputChannels: input, outputChannels: planes, kernelSize: 1, stride: s1, bias: false, initializer: config.initializer)
        bn1 = BatchNorm2d(channels: planes)
        conv2 = Conv2d(inputChannels: planes, outputChannels: planes, kernelSize: 3, stride: s2, padding: 1, bias: false, initializer: config.initializer)
        bn2 = BatchNorm2d(channels: planes)
        conv3 = Conv2d(inputChannels: planes, outputChannels: out, kernelSize: 1, bias: false, initializer: config.initializer)
        bn3 = BatchNorm2d(channels: out)
        downsample = config.projects(input, out, stride) ? projection(input, out, stride: stride, config) : nil
        shortcut = config.shortcut; self.stride = stride; outputChannels = out
        if config.zeroInitLastBN, shortcut != .none { bn3.weight?.data = Tensor(zeros: [out]) }
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = bn2(conv2(bn1(conv1(x), fusedReLU: true)), fusedReLU: true)
        if shortcut == .none { return bn3(conv3(h), fusedReLU: true) }
        let identity = downsample?(x) ?? zeroPaddedIdentity(x, stride: stride, outputChannels: outputChannels)
        return addReLU(bn3(conv3(h)), identity)
    }
}
