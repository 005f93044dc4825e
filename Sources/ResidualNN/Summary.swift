import ResidualAutodiff

/// Collects, during one forward pass, the output shape and multiply-adds of every Conv2d and Linear
/// (the layers He et al. count in Table 1's FLOPs column). Used by `ModelSummary`.
public final class SummaryRecorder: @unchecked Sendable {
    @TaskLocal public static var current: SummaryRecorder?

    public struct Entry: Sendable {
        public let layer: ObjectIdentifier
        public let outputShape: [Int]
        /// Multiply-adds for the whole batch passed in.
        public let macs: Int
    }
    public private(set) var entries: [Entry] = []

    public init() {}

    /// `macsPerImage` x batch (the leading dimension of `output`).
    func record(_ layer: AnyObject, output: [Int], macs macsPerImage: Int) {
        entries.append(Entry(layer: ObjectIdentifier(layer), outputShape: output, macs: macsPerImage * output[0]))
    }
}

/// A torchinfo-like table of a model: each Conv2d/Linear with its output shape, parameters and
/// multiply-adds for one input of the given shape, plus totals. Computed from the built module by
/// running one forward pass (no tape) on zeros.
public struct ModelSummary: CustomStringConvertible, Sendable {
    public struct Row: Sendable {
        public let name: String
        public let kind: String
        public let outputShape: [Int]
        public let parameters: Int
        public let macs: Int
    }
    public let rows: [Row]
    public let totalParameters: Int
    /// Multiply-adds per image (convolutions and fully connected layers).
    public let totalMACs: Int
    public let inputShape: [Int]

    public init<M: Module>(_ model: M, inputShape: [Int]) where M.Input == Tensor, M.Output == Tensor {
        let recorder = SummaryRecorder()
        let wasTraining = model.isTrainingMode
        model.eval()
        _ = SummaryRecorder.$current.withValue(recorder) {
            withoutTape { model(Tensor(zeros: [1] + inputShape)) }
        }
        if wasTraining { model.train() }
        var names: [ObjectIdentifier: (String, any AnyModule)] = [:]
        for (path, m) in model.namedModules() { names[ObjectIdentifier(m)] = (path, m) }
        rows = recorder.entries.map { e in
            let (name, m) = names[e.layer] ?? ("?", model)
            let params = m.namedLocalParameters().reduce(0) { $0 + $1.1.count }
            return Row(name: name, kind: String(describing: type(of: m)), outputShape: e.outputShape,
                       parameters: params, macs: e.macs)
        }
        totalParameters = model.parameterCount
        totalMACs = recorder.entries.reduce(0) { $0 + $1.macs }
        self.inputShape = inputShape
    }

    public var description: String {
        func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
            s.count >= n ? s : (right ? String(repeating: " ", count: n - s.count) + s : s + String(repeating: " ", count: n - s.count))
        }
        func group(_ n: Int) -> String {
            var s = String(n), out = ""
            while s.count > 3 { out = "," + s.suffix(3) + out; s = String(s.dropLast(3)) }
            return s + out
        }
        let w = max(24, (rows.map(\.name.count).max() ?? 0) + 2)
        var s = pad("Layer", w) + pad("Kind", 10) + pad("Output shape", 20) + pad("Params", 14, right: true) + pad("Mult-adds", 18, right: true) + "\n"
        s += String(repeating: "-", count: w + 62) + "\n"
        for r in rows {
            s += pad(r.name, w) + pad(r.kind, 10) + pad(describe(r.outputShape), 20) + pad(group(r.parameters), 14, right: true) + pad(group(r.macs), 18, right: true) + "\n"
        }
        s += String(repeating: "-", count: w + 62) + "\n"
        s += "Total parameters: \(group(totalParameters))\n"
        s += "Multiply-adds per image at input \(describe(inputShape)): \(group(totalMACs)) (\(String(format4: Double(totalMACs) / 1e9)) G)\n"
        return s
    }
}

extension String {
    init(format4 x: Double) {
        let r = (x * 1000).rounded() / 1000
        self = String(r)
    }
}
