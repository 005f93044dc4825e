import ResidualAutodiff
import ResidualNN

/// Every named network of the paper, built from a name: `Zoo.make("resnet56")`.
public enum Zoo {
    public struct Options: Sendable {
        /// nil: the paper's default for the model (A for CIFAR and ImageNet 18/34, B for
        /// 50/101/152). Ignored by the plain networks.
        public var shortcut: ShortcutOption?
        public var stridePlacement: StridePlacement
        /// nil: 1000 for the ImageNet family, 10 for CIFAR.
        public var classes: Int?
        public var inputChannels: Int
        public var zeroInitLastBN: Bool
        /// For the convolutions; the paper's He normal (fan-in) by default.
        public var initializer: Initializer
        public var seed: UInt64

        public init(shortcut: ShortcutOption? = nil, stridePlacement: StridePlacement = .firstConvolution,
                    classes: Int? = nil, inputChannels: Int = 3, zeroInitLastBN: Bool = false,
                    initializer: Initializer = .heNormal(mode: .fanIn), seed: UInt64 = 0) {
            self.shortcut = shortcut; self.stridePlacement = stridePlacement; self.classes = classes
            self.inputChannels = inputChannels; self.zeroInitLastBN = zeroInitLastBN
            self.initializer = initializer; self.seed = seed
        }
    }

    public enum Family: String, Sendable { case imagenet, cifar }

    public struct Entry: Sendable {
        public let name: String
        public let family: Family
        public let depth: Int
        public let plain: Bool
        /// Where the network comes from in the paper.
        public let source: String
        /// The input the paper uses (C, H, W).
        public var input: [Int] { family == .imagenet ? [3, 224, 224] : [3, 32, 32] }
        public var usesBottleneck: Bool { family == .imagenet && depth >= 50 }
        /// The shortcut the model gets with these options.
        public func shortcut(_ options: Options = Options()) -> ShortcutOption {
            if plain { return .none }
            if let s = options.shortcut { return s }
            return family == .cifar ? .a : ResNet.Depth(rawValue: depth)!.paperShortcut
        }
    }

    /// The named models: plain18/34/50/101/152, resnet18...152, plain20...1202, resnet20...1202.
    public static let entries: [Entry] = {
        var out: [Entry] = []
        for plain in [true, false] {
            for d in [18, 34, 50, 101, 152] {
                let source = switch (plain, d <= 34) {
                case (true, true): "Table 1, Table 2 (plain)"
                case (true, false): "Table 1 (plain counterpart of the bottleneck net)"
                case (false, true): "Table 1, Table 2 (option A), Table 3"
                case (false, false): "Table 1, Table 3, Table 4 (option B)"
                }
                out.append(Entry(name: "\(plain ? "plain" : "resnet")\(d)", family: .imagenet, depth: d,
                                 plain: plain, source: source))
            }
        }
        for plain in [true, false] {
            for d in [20, 32, 44, 56, 110, 1202] {
                let source = plain ? "Section 4.2, Figure 6 (left)"
                    : d == 1202 ? "Section 4.2, Table 6, Figure 6 (right)" : "Section 4.2, Table 6, Figure 6 (middle)"
                out.append(Entry(name: "\(plain ? "plain" : "resnet")\(d)", family: .cifar, depth: d, plain: plain,
                                 source: source))
            }
        }
        return out
    }()

    public static var names: [String] { entries.map(\.name) }

    public static func entry(_ name: String) -> Entry? { entries.first { $0.name == name.lowercased() } }

    /// Builds a named model, or nil for an unknown name. Weights are seeded by `options.seed`.
    public static func make(_ name: String, options: Options = Options()) -> (any Layer)? {
        guard let e = entry(name) else { return nil }
        return withSeed(options.seed) { () -> any Layer in
            if e.family == .imagenet {
                let model: any Layer = ResNet(
                    depth: ResNet.Depth(rawValue: e.depth)!, shortcut: e.shortcut(options),
                    classes: options.classes ?? 1000, inputChannels: options.inputChannels,
                    stridePlacement: options.stridePlacement, zeroInitLastBN: options.zeroInitLastBN,
                    initializer: options.initializer)
                return model
            }
            let model: any Layer = CIFARResNet(
                depth: e.depth, shortcut: e.shortcut(options), classes: options.classes ?? 10,
                inputChannels: options.inputChannels, zeroInitLastBN: options.zeroInitLastBN,
                initializer: options.initializer)
            return model
        }
    }

    /// One line of the zoo's listing: figures computed from the built model.
    public struct Record: Sendable {
        public let entry: Entry
        public let shortcut: ShortcutOption
        public let parameters: Int
        /// Multiply-adds per image at `entry.input` (``ModelSummary``'s convention).
        public let macs: Int
        /// The output shape for one image.
        public let outputShape: [Int]
    }

    /// Builds each named model with `options` and summarises it at the paper's input size.
    ///
    /// The convolutions are built with zero weights (`options.initializer` is ignored): the
    /// structure and the figures are the same, and drawing ~300 M normal numbers for all the
    /// models would otherwise dominate the time.
    public static func listing(_ options: Options = Options(), names: [String] = Zoo.names) -> [Record] {
        var o = options
        o.initializer = .zeros
        return names.compactMap(entry).map { e in
            let model = make(e.name, options: o)!
            let summary = ModelSummary(model, inputShape: e.input)
            return Record(entry: e, shortcut: e.shortcut(options), parameters: summary.totalParameters,
                          macs: summary.totalMACs, outputShape: summary.outputShape)
        }
    }

    /// The listing as a table: model, depth, block, shortcut, parameters, multiply-adds, input, paper.
    public static func table(_ records: [Record]) -> String {
        func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return right ? fill + s : s + fill
        }
        func grouped(_ n: Int) -> String {
            var s = String(n), out = ""
            while s.count > 3 { out = "," + s.suffix(3) + out; s = String(s.dropLast(3)) }
            return s + out
        }
        func giga(_ n: Int) -> String {
            let thousandths = Int((Double(n) / 1e6).rounded())
            let frac = String(thousandths % 1000)
            return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac + " G"
        }
        var lines = [pad("model", 12) + pad("depth", 6, right: true) + "  " + pad("block", 11) + pad("shortcut", 10)
                     + pad("parameters", 12, right: true) + pad("mult-adds", 12, right: true) + "  "
                     + pad("input", 10) + "paper"]
        for r in records {
            let e = r.entry
            lines.append(pad(e.name, 12) + pad(String(e.depth), 6, right: true) + "  "
                         + pad(e.usesBottleneck ? "bottleneck" : "basic", 11)
                         + pad(r.shortcut == .none ? "none" : r.shortcut.rawValue, 10)
                         + pad(grouped(r.parameters), 12, right: true) + pad(giga(r.macs), 12, right: true) + "  "
                         + pad(e.input.map(String.init).joined(separator: "x"), 10) + e.source)
        }
        return lines.joined(separator: "\n")
    }
}
