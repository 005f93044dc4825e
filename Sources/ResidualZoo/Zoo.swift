import ResidualAutodiff
import ResidualNN

/// Every named network of the paper, built from a name: `Zoo.make("resnet56")`.
public enum Zoo {
    public struct Options: Sendable {
        /// nil: the paper's default for the model (A for CIFAR and ImageNet 18/34, B for 50/101/152).
        public var shortcut: ShortcutOption?
        public var stridePlacement: StridePlacement = .firstConvolution
        public var classes: Int?
        public var inputChannels = 3
        public var seed: UInt64 = 0
        public init(shortcut: ShortcutOption? = nil, stridePlacement: StridePlacement = .firstConvolution,
                    classes: Int? = nil, inputChannels: Int = 3, seed: UInt64 = 0) {
            self.shortcut = shortcut; self.stridePlacement = stridePlacement; self.classes = classes
            self.inputChannels = inputChannels; self.seed = seed
        }
    }

    public struct Entry: Sendable {
        public let name: String
        public let family: String          // "imagenet" or "cifar"
        public let depth: Int
        public let plain: Bool
        /// Where the network comes from in the paper.
        public let source: String
        /// The input the paper uses (C, H, W).
        public var input: [Int] { family == "imagenet" ? [3, 224, 224] : [3, 32, 32] }
    }

    /// The named models: plain18/34/50/101/152, resnet18...152, plain20...1202, resnet20...1202.
    public static let entries: [Entry] = {
        var out: [Entry] = []
        for d in [18, 34, 50, 101, 152] {
            out.append(Entry(name: "plain\(d)", family: "imagenet", depth: d, plain: true,
                             source: d <= 34 ? "Table 1, Table 2 (plain)" : "Table 1 (plain counterpart of the bottleneck net)"))
        }
        for d in [18, 34, 50, 101, 152] {
            out.append(Entry(name: "resnet\(d)", family: "imagenet", depth: d, plain: false,
                             source: d <= 34 ? "Table 1, Table 2 (option A), Table 3" : "Table 1, Table 3, Table 4 (option B)"))
        }
        for d in [20, 32, 44, 56, 110, 1202] {
            out.append(Entry(name: "plain\(d)", family: "cifar", depth: d, plain: true, source: "Section 4.2, Figure 6 (left)"))
        }
        for d in [20, 32, 44, 56, 110, 1202] {
            out.append(Entry(name: "resnet\(d)", family: "cifar", depth: d, plain: false,
                             source: d == 1202 ? "Section 4.2, Table 6, Figure 6 (right)" : "Section 4.2, Table 6, Figure 6 (middle)"))
        }
        return out
    }()

    public static var names: [String] { entries.map(\.name) }

    public static func entry(_ name: String) -> Entry? { entries.first { $0.name == name.lowercased() } }

    /// Builds a named model, or nil for an unknown name. Weights are seeded by `options.seed`.
    public static func make(_ name: String, options: Options = Options()) -> (any Layer)? {
        guard let e = entry(name) else { return nil }
        return withSeed(options.seed) { () -> any Layer in
            let shortcut: ShortcutOption? = e.plain ? ShortcutOption.none : options.shortcut
            if e.family == "imagenet" {
                return ResNet(depth: ResNet.Depth(rawValue: e.depth)!, shortcut: shortcut, classes: options.classes ?? 1000,
                              inputChannels: options.inputChannels, stridePlacement: options.stridePlacement)
            }
            return CIFARResNet(depth: e.depth, shortcut: shortcut ?? .a, classes: options.classes ?? 10,
                               inputChannels: options.inputChannels)
        }
    }
}
