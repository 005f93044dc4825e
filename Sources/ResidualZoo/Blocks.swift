import ResidualAutodiff
import ResidualNN

/// How a residual block's shortcut is built (He et al. 2015, sections 3.3 and 4.1).
public enum ShortcutOption: String, Sendable, CaseIterable {
    /// No shortcut at all: the plain network of the paper's comparisons.
    case none
    /// Identity; where dimensions grow, stride-s subsampling and zero-padded extra channels
    /// (no parameters).
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
    /// On the 3x3 convolution, as torchvision does ("v1.5"): more multiply-adds, slightly better
    /// accuracy.
    case middleConvolution
}

/// Per-block settings shared by the builders.
public struct BlockConfig: Sendable {
    public var shortcut: ShortcutOption
    public var initializer: Initializer
    public var stridePlacement: StridePlacement
    /// Start each residual branch's last BN with γ = 0, so every block begins as its shortcut
    /// (Goyal et al. 2017; torchvision's `zero_init_residual`). Not in the paper; off by default.
    public var zeroInitLastBN: Bool

    public init(shortcut: ShortcutOption, initializer: Initializer = .heNormal(mode: .fanIn),
                stridePlacement: StridePlacement = .firstConvolution, zeroInitLastBN: Bool = false) {
        self.shortcut = shortcut; self.initializer = initializer
        self.stridePlacement = stridePlacement; self.zeroInitLastBN = zeroInitLastBN
    }

    func conv(_ input: Int, _ output: Int, _ kernel: Int, stride: Int = 1) -> Conv2d {
        Conv2d(inputChannels: input, outputChannels: output, kernelSize: kernel, stride: stride,
               padding: kernel / 2, bias: false, initializer: initializer)
    }

    /// The last BN of a residual branch: γ = 0 if `zeroInitLastBN` (and the block has a shortcut).
    func lastBN(_ channels: Int) -> BatchNorm2d {
        let bn = BatchNorm2d(channels: channels)
        if zeroInitLastBN && shortcut != .none { bn.weight!.data = Tensor(zeros: [channels]) }
        return bn
    }

    /// conv 1x1 + BN, the projection shortcut of options B and C (torchvision's `downsample.0/.1`),
    /// or nil where the shortcut is an identity (or absent).
    func projection(_ input: Int, _ output: Int, stride: Int) -> Sequential? {
        let grows = stride != 1 || input != output
        guard shortcut == .c || (shortcut == .b && grows) else { return nil }
        return Sequential { conv(input, output, 1, stride: stride); BatchNorm2d(channels: output) }
    }
}

/// The shortcut of a residual block: the projection where there is one (options B and C), else the
/// identity, subsampled and zero-padded where the dimensions grow (option A).
func shortcutPath(_ x: Tensor, _ projection: Sequential?, stride: Int, outputChannels: Int) -> Tensor {
    guard let projection else { return zeroPaddedIdentity(x, stride: stride, outputChannels: outputChannels) }
    // conv + BN as one layer, so evaluation folds the BN (Folding.swift).
    if projection.count == 2, let conv = projection[0] as? Conv2d, let bn = projection[1] as? BatchNorm2d {
        return conv(x, batchNorm: bn)
    }
    return projection(x)
}

/// The option-A shortcut: keep every `stride`-th pixel (rows and columns 0, s, 2s, ...) and pad the
/// new channels with zeros, half before and half after (as the common CIFAR implementations do).
/// One fused op, which keeps channels-last activations channels-last.
func zeroPaddedIdentity(_ x: Tensor, stride: Int, outputChannels: Int) -> Tensor {
    let extra = outputChannels - x.shape[1]
    if stride == 1 && extra <= 0 { return x }
    return subsampleAndPadChannels(x, stride: stride, before: max(0, extra / 2), after: max(0, extra - extra / 2))
}

/// Two 3x3 convolutions (ResNet-18/34 and the CIFAR nets; the paper's Figure 5, left).
public final class BasicBlock: Layer {
    public static let expansion = 1
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    let downsample: Sequential?
    let shortcut: ShortcutOption, stride: Int, planes: Int

    public init(_ input: Int, _ planes: Int, stride: Int = 1, _ config: BlockConfig) {
        conv1 = config.conv(input, planes, 3, stride: stride)
        bn1 = BatchNorm2d(channels: planes)
        conv2 = config.conv(planes, planes, 3)
        bn2 = config.lastBN(planes)
        downsample = config.projection(input, planes, stride: stride)
        shortcut = config.shortcut; self.stride = stride; self.planes = planes
    }

    // `conv(x, batchNorm: bn, ...)` is relu(bn(conv(x)) + shortcut) in one pass after the conv when
    // evaluating (BN folded into the conv), and the same ops as written out when training.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = conv1(x, batchNorm: bn1, relu: true)
        if shortcut == .none { return conv2(h, batchNorm: bn2, relu: true) }
        let identity = shortcutPath(x, downsample, stride: stride, outputChannels: planes)
        return conv2(h, batchNorm: bn2, residual: identity, relu: true)
    }
}

/// 1x1 (reduce), 3x3, 1x1 (expand x4) convolutions (ResNet-50/101/152; Figure 5, right).
public final class Bottleneck: Layer {
    public static let expansion = 4
    let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    let downsample: Sequential?
    let shortcut: ShortcutOption, stride: Int, planes: Int

    public init(_ input: Int, _ planes: Int, stride: Int = 1, _ config: BlockConfig) {
        let (s1, s2) = config.stridePlacement == .firstConvolution ? (stride, 1) : (1, stride)
        conv1 = config.conv(input, planes, 1, stride: s1)
        bn1 = BatchNorm2d(channels: planes)
        conv2 = config.conv(planes, planes, 3, stride: s2)
        bn2 = BatchNorm2d(channels: planes)
        conv3 = config.conv(planes, planes * Self.expansion, 1)
        bn3 = config.lastBN(planes * Self.expansion)
        downsample = config.projection(input, planes * Self.expansion, stride: stride)
        shortcut = config.shortcut; self.stride = stride; self.planes = planes
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = conv2(conv1(x, batchNorm: bn1, relu: true), batchNorm: bn2, relu: true)
        if shortcut == .none { return conv3(h, batchNorm: bn3, relu: true) }
        let identity = shortcutPath(x, downsample, stride: stride, outputChannels: Self.expansion * planes)
        return conv3(h, batchNorm: bn3, residual: identity, relu: true)
    }
}
