import ResidualAutodiff

/// Collects, during one forward pass, each layer's output shape and multiply-adds. Layers report
/// themselves through ``note(_:_:macsPerImage:)``; a custom leaf layer can do the same.
public final class SummaryRecorder: @unchecked Sendable {
    @TaskLocal public static var current: SummaryRecorder?

    public struct Entry: Sendable {
        public let layer: ObjectIdentifier
        public let outputShape: [Int]
        /// Multiply-adds for one image (one sample along the leading axis).
        public let macsPerImage: Int
    }
    public private(set) var entries: [Entry] = []

    public init() {}

    /// Records `layer`'s output `y` if a summary is being taken (a task-local read otherwise).
    public static func note(_ layer: AnyObject, _ y: Tensor, macsPerImage: Int = 0) {
        current?.entries.append(Entry(layer: ObjectIdentifier(layer), outputShape: y.shape,
                                      macsPerImage: macsPerImage))
    }

    /// ``note(_:_:macsPerImage:)`` for a layer without multiply-adds, returning `y`.
    public static func noted(_ layer: AnyObject, _ y: Tensor) -> Tensor {
        note(layer, y)
        return y
    }
}

/// A torchinfo-like table of a model for one input of a given shape: every standard layer it runs,
/// in execution order, with its output shape, parameters and multiply-adds, plus totals.
///
/// Computed from the built module by one forward pass in evaluation mode on zeros (batch 1, no
/// tape); modes are restored afterwards. **Multiply-adds** count what He et al.'s Table 1 counts:
/// one per weight of a convolution or fully connected layer per output element
/// (`out_elements × in_channels/groups × kh × kw` for a convolution, `in × out` for a linear layer).
/// Biases, batch norm, ReLU, pooling and the shortcut additions are not counted (together they add
/// well under 1 % for the zoo's networks). `torch.utils.flop_counter` reports exactly twice these
/// numbers (it counts a multiply-add as two FLOPs); torchinfo adds bias and batch-norm terms.
public struct ModelSummary: CustomStringConvertible, Sendable {
    public struct Row: Sendable {
        /// Dotted path of the layer in the model (`layer1.0.conv1`).
        public let name: String
        /// The layer's type (`Conv2d`).
        public let kind: String
        public let outputShape: [Int]
        /// Parameters held by the layer itself.
        public let parameters: Int
        /// Multiply-adds for one image.
        public let macs: Int
    }
    public let rows: [Row]
    public let totalParameters: Int
    public let trainableParameters: Int
    /// Multiply-adds per image (convolutions and fully connected layers).
    public let totalMACs: Int
    /// One image's shape, without the batch axis (`[3, 224, 224]`).
    public let inputShape: [Int]
    /// The model's output shape for a batch of one.
    public let outputShape: [Int]

    public init<M: Module>(_ model: M, inputShape: [Int]) where M.Input == Tensor, M.Output == Tensor {
        let recorder = SummaryRecorder()
        let modules = model.namedModules()
        let modes = modules.compactMap { $0.1 as? any ModeDependent }.map { ($0, $0.isTraining) }
        for (m, _) in modes { m.isTraining = false }
        let output = SummaryRecorder.$current.withValue(recorder) {
            withoutTape { model(Tensor(zeros: [1] + inputShape)) }
        }
        for (m, wasTraining) in modes { m.isTraining = wasTraining }
        var names: [ObjectIdentifier: (String, any AnyModule)] = [:]
        for (path, m) in modules where type(of: m) is AnyClass {
            names[ObjectIdentifier(m as AnyObject)] = (path, m)
        }
        rows = recorder.entries.map { e in
            let (name, m) = names[e.layer] ?? ("?", model)
            return Row(name: name, kind: String(describing: type(of: m)), outputShape: e.outputShape,
                       parameters: m.namedLocalParameters().reduce(0) { $0 + $1.1.count }, macs: e.macsPerImage)
        }
        totalParameters = model.parameterCount
        trainableParameters = model.trainableParameterCount
        totalMACs = recorder.entries.reduce(0) { $0 + $1.macsPerImage }
        self.inputShape = inputShape
        outputShape = output.shape
    }

    public var description: String {
        let nameWidth = max(24, (rows.map(\.name.count).max() ?? 0) + 2)
        let kindWidth = max(10, (rows.map(\.kind.count).max() ?? 0) + 2)
        let rule = String(repeating: "-", count: nameWidth + kindWidth + 52) + "\n"
        var s = padded("Layer", nameWidth) + padded("Kind", kindWidth) + padded("Output shape", 20)
            + padded("Params", 14, right: true) + padded("Mult-adds", 18, right: true) + "\n" + rule
        for r in rows {
            s += padded(r.name, nameWidth) + padded(r.kind, kindWidth) + padded(describe(r.outputShape), 20)
                + padded(r.parameters == 0 ? "-" : grouped(r.parameters), 14, right: true)
                + padded(r.macs == 0 ? "-" : grouped(r.macs), 18, right: true) + "\n"
        }
        s += rule
        s += "Total parameters: \(grouped(totalParameters))\n"
        s += "Trainable parameters: \(grouped(trainableParameters))\n"
        s += "Non-trainable parameters: \(grouped(totalParameters - trainableParameters))\n"
        s += "Multiply-adds per image at input \(describe(inputShape)): \(grouped(totalMACs))"
            + " (\(gigaString(totalMACs)) G)\n"
        return s
    }
}

/// `1234567` as `"1,234,567"`.
func grouped(_ n: Int) -> String {
    var s = String(n.magnitude), out = ""
    while s.count > 3 { out = "," + s.suffix(3) + out; s = String(s.dropLast(3)) }
    return (n < 0 ? "-" : "") + s + out
}

/// `n / 10⁹` with three decimals.
func gigaString(_ n: Int) -> String {
    let thousandths = (Double(n) / 1e6).rounded()
    let whole = Int(thousandths) / 1000, frac = Int(thousandths) % 1000
    return "\(whole)." + String(repeating: "0", count: 3 - String(frac).count) + String(frac)
}

func padded(_ s: String, _ n: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, n - s.count))
    return right ? fill + s : s + fill
}
