import ResidualAutodiff
import ResidualNN

/// The ImageNet networks of He et al. 2015, Table 1: a 7x7/2 convolution, 3x3/2 max pool, four
/// stages (64, 128, 256, 512 planes; the first block of stages 2-4 downsamples by 2), global average
/// pooling and a fully connected layer. Children are named as in torchvision (`conv1`, `bn1`,
/// `layer1.0.conv1`, `layer2.0.downsample.0`, `fc`), so torchvision state dicts load by name.
public final class ResNet: Layer {
    public enum Depth: Int, Sendable, CaseIterable {
        case d18 = 18, d34 = 34, d50 = 50, d101 = 101, d152 = 152

        /// Blocks per stage (Table 1).
        public var blocks: [Int] {
            switch self {
            case .d18: [2, 2, 2, 2]
            case .d34, .d50: [3, 4, 6, 3]
            case .d101: [3, 4, 23, 3]
            case .d152: [3, 8, 36, 3]
            }
        }
        public var usesBottleneck: Bool { rawValue >= 50 }
        /// The paper's shortcut: option A for 18/34 (Table 2 and Table 1's FLOPs), B for 50/101/152
        /// (section 4.1, "Deeper Bottleneck Architectures").
        public var paperShortcut: ShortcutOption { usesBottleneck ? .b : .a }
    }

    let conv1: Conv2d, bn1: BatchNorm2d, maxpool: MaxPool2d
    let layer1: [any Layer], layer2: [any Layer], layer3: [any Layer], layer4: [any Layer]
    let fc: Linear
    public let depth: Depth
    public let config: BlockConfig

    /// - Parameters:
    ///   - shortcut: `.none` builds the plain network; default: the paper's choice for the depth.
    ///   - classes: outputs of the final fully connected layer.
    ///   - inputChannels: 3 for RGB, 1 for grey-scale images.
    ///   - stridePlacement: bottleneck downsampling on the first 1x1 (paper, default) or on the 3x3
    ///     (torchvision's v1.5).
    ///   - zeroInitLastBN: γ = 0 in the last BN of every residual branch (not the paper's).
    ///   - initializer: for every convolution; the paper's He normal (fan-in) by default. The FC
    ///     layer keeps PyTorch's default.
    public init(depth: Depth, shortcut: ShortcutOption? = nil, classes: Int = 1000, inputChannels: Int = 3,
                stridePlacement: StridePlacement = .firstConvolution, zeroInitLastBN: Bool = false,
                initializer: Initializer = .heNormal(mode: .fanIn)) {
        let config = BlockConfig(shortcut: shortcut ?? depth.paperShortcut, initializer: initializer,
                                 stridePlacement: stridePlacement, zeroInitLastBN: zeroInitLastBN)
        self.depth = depth; self.config = config
        conv1 = Conv2d(inputChannels: inputChannels, outputChannels: 64, kernelSize: 7, stride: 2, padding: 3,
                       bias: false, initializer: initializer)
        bn1 = BatchNorm2d(channels: 64)
        maxpool = MaxPool2d(kernelSize: 3, stride: 2, padding: 1)
        let expansion = depth.usesBottleneck ? Bottleneck.expansion : BasicBlock.expansion
        var channels = 64
        var stages: [[any Layer]] = []
        for (stage, (planes, count)) in zip([64, 128, 256, 512], depth.blocks).enumerated() {
            stages.append((0..<count).map { i -> any Layer in
                let input = i == 0 ? channels : planes * expansion
                let stride = i == 0 && stage > 0 ? 2 : 1
                return depth.usesBottleneck ? Bottleneck(input, planes, stride: stride, config)
                                            : BasicBlock(input, planes, stride: stride, config)
            })
            channels = planes * expansion
        }
        (layer1, layer2, layer3, layer4) = (stages[0], stages[1], stages[2], stages[3])
        fc = Linear(inputFeatures: channels, outputFeatures: classes)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = maxpool(conv1(x, batchNorm: bn1, relu: true))
        for block in layer1 + layer2 + layer3 + layer4 { h = block(h) }
        return fc(globalAvgPool(h).flattened())
    }
}

/// The CIFAR-10 networks of He et al. 2015, section 4.2: a 3x3 convolution with 16 filters, three
/// stages of `n` basic blocks with 16, 32 and 64 filters on 32x32, 16x16 and 8x8 maps, global
/// average pooling and a 10-way fully connected layer: depth 6n+2. Option-A shortcuts by default
/// (the paper's choice on CIFAR), `.none` for the plain counterparts. Names follow torchvision's
/// scheme: `conv1`, `bn1`, `layer1.0.conv1`, ..., `layer3.{n-1}.bn2`, `fc`.
public final class CIFARResNet: Layer {
    let conv1: Conv2d, bn1: BatchNorm2d
    let layer1: [BasicBlock], layer2: [BasicBlock], layer3: [BasicBlock]
    let fc: Linear
    public let n: Int
    public var depth: Int { 6 * n + 2 }

    /// - Parameters:
    ///   - n: blocks per stage (depth 6n+2).
    ///   - shortcut: option A (the paper's, default), B or C; `.none` for the plain net.
    ///   - classes, inputChannels: 10 and 3 for CIFAR-10; 1 input channel for Fashion-MNIST.
    ///   - zeroInitLastBN, initializer: as for ``ResNet``.
    public init(n: Int, shortcut: ShortcutOption = .a, classes: Int = 10, inputChannels: Int = 3,
                zeroInitLastBN: Bool = false, initializer: Initializer = .heNormal(mode: .fanIn)) {
        shapeCheck(n >= 1, "CIFARResNet: n = \(n), must be at least 1 (depth 6n+2)")
        self.n = n
        let config = BlockConfig(shortcut: shortcut, initializer: initializer, zeroInitLastBN: zeroInitLastBN)
        conv1 = config.conv(inputChannels, 16, 3)
        bn1 = BatchNorm2d(channels: 16)
        func stage(_ input: Int, _ planes: Int, stride: Int) -> [BasicBlock] {
            (0..<n).map { i in BasicBlock(i == 0 ? input : planes, planes, stride: i == 0 ? stride : 1, config) }
        }
        layer1 = stage(16, 16, stride: 1)
        layer2 = stage(16, 32, stride: 2)
        layer3 = stage(32, 64, stride: 2)
        fc = Linear(inputFeatures: 64, outputFeatures: classes)
    }

    /// A depth of the form 6n+2 (20, 32, 44, 56, 110, 1202, ...).
    public convenience init(depth: Int, shortcut: ShortcutOption = .a, classes: Int = 10, inputChannels: Int = 3,
                            zeroInitLastBN: Bool = false, initializer: Initializer = .heNormal(mode: .fanIn)) {
        shapeCheck(depth >= 8 && (depth - 2) % 6 == 0, "CIFARResNet: depth \(depth) is not 6n+2 with n >= 1")
        self.init(n: (depth - 2) / 6, shortcut: shortcut, classes: classes, inputChannels: inputChannels,
                  zeroInitLastBN: zeroInitLastBN, initializer: initializer)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = conv1(x, batchNorm: bn1, relu: true)
        for block in layer1 + layer2 + layer3 { h = block(h) }
        return fc(globalAvgPool(h).flattened())
    }
}
