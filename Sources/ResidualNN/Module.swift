import ResidualAutodiff

/// Anything that can sit in a network's tree: layers, blocks, whole models.
///
/// Children, parameters and buffers are found by reflecting over stored properties (a `Module`,
/// an array or optional of modules, a `Parameter`, a `Buffer`), named after the properties, so a
/// user-defined module gets torchvision-style dotted names (`layer1.0.conv1.weight`) with no
/// boilerplate. Reflection runs only when the tree is enumerated (building an optimizer, saving a
/// checkpoint, switching train/eval), never during a forward pass. A module that wants different
/// names or order overrides `namedChildren()` / `namedLocalParameters()`.
public protocol AnyModule: AnyObject {
    /// Direct sub-modules with their names.
    func namedChildren() -> [(String, any AnyModule)]
    /// Parameters stored directly on this module (not in children).
    func namedLocalParameters() -> [(String, Parameter)]
    /// Buffers (non-trainable state such as running statistics) stored directly on this module.
    func namedLocalBuffers() -> [(String, Buffer)]
}

/// A differentiable function with state: `callAsFunction(_:)` maps `Input` to `Output`.
/// Layers are final classes holding `Parameter`s; compose them as stored properties.
public protocol Module<Input, Output>: AnyModule {
    associatedtype Input
    associatedtype Output
    func callAsFunction(_ input: Input) -> Output
}

/// The common case: tensor in, tensor out.
public typealias Layer = Module<Tensor, Tensor>

/// A module whose behaviour differs between training and evaluation (batch norm, dropout).
public protocol ModeDependent: AnyModule {
    var isTraining: Bool { get set }
}

/// Non-trainable module state that is saved in checkpoints (PyTorch's buffers), e.g. running means.
public final class Buffer: @unchecked Sendable {
    private let lock = NSLockLike()
    private var _value: Tensor
    public init(_ value: Tensor) { _value = value.detached }
    public var value: Tensor {
        get { lock.with { _value } }
        set { lock.with { _value = newValue.detached } }
    }
}

extension AnyModule {
    public func namedChildren() -> [(String, any AnyModule)] { reflect().children }
    public func namedLocalParameters() -> [(String, Parameter)] { reflect().parameters }
    public func namedLocalBuffers() -> [(String, Buffer)] { reflect().buffers }

    private func reflect() -> (children: [(String, any AnyModule)], parameters: [(String, Parameter)], buffers: [(String, Buffer)]) {
        var children: [(String, any AnyModule)] = []
        var parameters: [(String, Parameter)] = []
        var buffers: [(String, Buffer)] = []
        func visit(_ name: String, _ value: Any) {
            switch value {
            case let m as any AnyModule: children.append((name, m))
            case let p as Parameter: parameters.append((name, p))
            case let b as Buffer: buffers.append((name, b))
            case let array as [Any]:
                for (i, v) in array.enumerated() { visit("\(name).\(i)", v) }
            default:
                let mirror = Mirror(reflecting: value)
                if mirror.displayStyle == .optional, let some = mirror.children.first { visit(name, some.value) }
            }
        }
        var mirror: Mirror? = Mirror(reflecting: self)
        var levels: [Mirror] = []
        while let m = mirror { levels.append(m); mirror = m.superclassMirror }
        for m in levels.reversed() {
            for child in m.children {
                guard var label = child.label else { continue }
                if label.hasPrefix("_") { label.removeFirst() }      // property wrappers / private storage
                if label.hasPrefix("$") { continue }
                visit(label, child.value)
            }
        }
        // Arrays of modules appear as "name.i": a child named "name.i" keeps torchvision's paths.
        return (children, parameters, buffers)
    }

    /// Every module in the tree with its dotted path ("" for self), depth first, parents first.
    public func namedModules() -> [(String, any AnyModule)] {
        var out: [(String, any AnyModule)] = []
        var stack: [(String, any AnyModule)] = [("", self)]
        var seen = Set<ObjectIdentifier>()
        while let (path, m) = stack.popLast() {
            guard seen.insert(ObjectIdentifier(m)).inserted else { continue }
            out.append((path, m))
            for (name, child) in m.namedChildren().reversed() {
                stack.append((path.isEmpty ? name : "\(path).\(name)", child))
            }
        }
        return out
    }

    /// Every parameter with its dotted name (`layer1.0.conv1.weight`), each parameter once.
    public func namedParameters() -> [(String, Parameter)] {
        var seen = Set<ObjectIdentifier>()
        var out: [(String, Parameter)] = []
        for (path, m) in namedModules() {
            for (name, p) in m.namedLocalParameters() where seen.insert(ObjectIdentifier(p)).inserted {
                out.append((path.isEmpty ? name : "\(path).\(name)", p))
            }
        }
        return out
    }

    /// Every buffer with its dotted name (`bn1.running_mean`).
    public func namedBuffers() -> [(String, Buffer)] {
        var out: [(String, Buffer)] = []
        for (path, m) in namedModules() {
            for (name, b) in m.namedLocalBuffers() { out.append((path.isEmpty ? name : "\(path).\(name)", b)) }
        }
        return out
    }

    public var parameters: [Parameter] { namedParameters().map(\.1) }

    /// Number of scalar parameters (frozen ones included, like torchinfo's total).
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// Number of scalar parameters that receive gradients.
    public var trainableParameterCount: Int { parameters.filter(\.requiresGrad).reduce(0) { $0 + $1.count } }

    /// Switches every mode-dependent module in the tree to training (true) or evaluation (false).
    public func train(_ on: Bool = true) {
        for (_, m) in namedModules() { (m as? any ModeDependent)?.isTraining = on }
    }

    /// Switches to evaluation mode (running statistics, no dropout).
    public func eval() { train(false) }

    /// True if any mode-dependent module in the tree is in training mode.
    public var isTrainingMode: Bool {
        namedModules().contains { ($0.1 as? any ModeDependent)?.isTraining == true }
    }

    /// Freezes (or unfreezes) every parameter whose name starts with `prefix` ("" = all).
    public func freeze(_ prefix: String = "", _ frozen: Bool = true) {
        for (name, p) in namedParameters() where name.hasPrefix(prefix) { p.requiresGrad = !frozen }
    }
}

import Foundation

/// A tiny lock wrapper (NSLock) used by reference types holding tensors.
final class NSLockLike: @unchecked Sendable {
    private let lock = NSLock()
    func with<R>(_ body: () throws -> R) rethrows -> R { lock.lock(); defer { lock.unlock() }; return try body() }
}
