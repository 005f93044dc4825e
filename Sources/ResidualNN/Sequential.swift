import ResidualAutodiff

/// Builds a list of tensor layers: `Sequential { Conv2d(...); BatchNorm2d(...); ReLU() }`.
@resultBuilder
public enum LayerBuilder {
    public static func buildExpression(_ layer: any Layer) -> [any Layer] { [layer] }
    public static func buildExpression(_ layers: [any Layer]) -> [any Layer] { layers }
    public static func buildBlock(_ parts: [any Layer]...) -> [any Layer] { parts.flatMap { $0 } }
    public static func buildOptional(_ part: [any Layer]?) -> [any Layer] { part ?? [] }
    public static func buildEither(first: [any Layer]) -> [any Layer] { first }
    public static func buildEither(second: [any Layer]) -> [any Layer] { second }
    public static func buildArray(_ parts: [[any Layer]]) -> [any Layer] { parts.flatMap { $0 } }
}

/// Layers applied in order; children are named `0`, `1`, ... like PyTorch's `nn.Sequential`.
public final class Sequential: Layer {
    public let layers: [any Layer]

    public init(@LayerBuilder _ build: () -> [any Layer]) { layers = build() }
    public init(_ layers: [any Layer]) { self.layers = layers }

    public func namedChildren() -> [(String, any AnyModule)] { layers.enumerated().map { ("\($0.offset)", $0.element) } }
    public func namedLocalParameters() -> [(String, Parameter)] { [] }
    public func namedLocalBuffers() -> [(String, Buffer)] { [] }

    /// In evaluation with no tape recording, each `Conv2d` directly followed by a `BatchNorm2d` (and
    /// optionally a `ReLU`) runs as one folded convolution (`Conv2d.callAsFunction(_:batchNorm:)`);
    /// otherwise every layer runs as written.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        var h = x
        var i = 0
        let inference = Tape.current == nil
        while i < layers.count {
            if inference, i + 1 < layers.count, let conv = layers[i] as? Conv2d,
               let bn = layers[i + 1] as? BatchNorm2d, !bn.isTraining {
                let relu = i + 2 < layers.count ? layers[i + 2] as? ReLU : nil
                h = conv(h, batchNorm: bn, relu: relu != nil)
                if let relu { SummaryRecorder.note(relu, h) }
                i += relu != nil ? 3 : 2
            } else {
                h = layers[i](h)
                i += 1
            }
        }
        return h
    }

    public var count: Int { layers.count }
    public subscript(_ i: Int) -> any Layer { layers[i] }
}

/// `relu(body(x) + shortcut(x))`, the residual unit of He et al.; the shortcut defaults to the
/// identity. Set `activation` to false for a pre-activation style block.
public final class Residual: Layer {
    public let body: any Layer
    public let shortcut: (any Layer)?
    public let activation: Bool

    public init(activation: Bool = true, shortcut: (any Layer)? = nil, @LayerBuilder _ body: () -> [any Layer]) {
        self.body = Sequential(body())
        self.shortcut = shortcut
        self.activation = activation
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let y = body(x) + (shortcut.map { $0(x) } ?? x)
        return activation ? relu(y) : y
    }
}

/// A layer made from a closure (for parameter-free glue such as `{ relu($0) }`).
public final class Lambda: Layer {
    let f: (Tensor) -> Tensor
    public init(_ f: @escaping (Tensor) -> Tensor) { self.f = f }
    public func callAsFunction(_ x: Tensor) -> Tensor { f(x) }
}
