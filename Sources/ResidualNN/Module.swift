import Foundation
import ResidualAutodiff

/// Anything that can sit in a network's tree: layers, blocks, whole models.
///
/// Children, parameters and buffers are found by reflecting over stored properties (a module, an
/// array or optional of modules, a ``Parameter``, a ``Buffer``) and named after the properties, so a
/// user-defined module gets torchvision-style dotted names (`layer1.0.conv1.weight`) with no
/// boilerplate. The module may be a class or a struct: the layers it stores are classes, so
/// parameters, buffers and train/eval state are shared references either way.
///
/// Reflection runs only when the tree is enumerated (building an optimizer, saving or loading a
/// checkpoint, `train()`/`eval()`, a summary), never inside a forward or backward pass: an optimizer
/// takes its parameter list once, and a layer's `callAsFunction` touches only its own stored
/// properties. ``ModuleReflection/count(_:)`` measures this (the test suite checks that a whole
/// training step walks zero mirrors). Nothing is cached, so replacing a child
/// (`model.fc = Linear(...)` on a `var`) is seen by the next enumeration. A module that wants other
/// names or order overrides ``namedChildren()``, ``namedLocalParameters()`` or
/// ``namedLocalBuffers()``; a module that overrides all three is never reflected.
public protocol AnyModule {
    /// Direct sub-modules with their names.
    func namedChildren() -> [(String, any AnyModule)]
    /// Parameters stored directly on this module (not in children).
    func namedLocalParameters() -> [(String, Parameter)]
    /// Buffers (non-trainable state such as running statistics) stored directly on this module.
    func namedLocalBuffers() -> [(String, Buffer)]
}

/// A differentiable function with state: `callAsFunction(_:)` maps `Input` to `Output`.
///
/// Layers are final classes holding ``Parameter``s; compose them as stored properties of a class
/// or a struct. `Input` and `Output` may be anything (a tensor, a pair of tensors, an array).
public protocol Module<Input, Output>: AnyModule {
    associatedtype Input
    associatedtype Output
    func callAsFunction(_ input: Input) -> Output
}

/// The common case: tensor in, tensor out.
public typealias Layer = Module<Tensor, Tensor>

/// A module whose behaviour differs between training and evaluation (batch norm, dropout). A class,
/// so that switching the mode through the tree reaches the module itself, not a copy.
public protocol ModeDependent: AnyModule, AnyObject {
    var isTraining: Bool { get set }
}

/// A module that draws random numbers while it runs (dropout). Its generator state is part of what a
/// training checkpoint saves, so that a resumed run draws the same masks.
public protocol RandomStateful: AnyModule, AnyObject {
    var randomState: SeededGenerator { get set }
}

/// Non-trainable module state that is saved in checkpoints (PyTorch's buffers), e.g. running means.
public final class Buffer: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: Tensor
    private var _version = 0
    public init(_ value: Tensor) { _value = value.detached }
    public var value: Tensor {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue.detached; _version += 1 } }
    }
    /// Counts assignments of `value` (see ``Parameter/version``).
    public var version: Int { lock.withLock { _version } }
    public var shape: [Int] { value.shape }
}

/// Counts the `Mirror` walks module enumeration performs, to show where reflection happens.
public enum ModuleReflection {
    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var n = 0
        func increment() { lock.withLock { n += 1 } }
        var value: Int { lock.withLock { n } }
    }
    @TaskLocal static var counter: Counter?

    /// Runs `body` and returns its result with the number of module reflections it caused on this
    /// thread/task (one per module whose stored properties were walked).
    public static func count<R>(_ body: () throws -> R) rethrows -> (result: R, reflections: Int) {
        let c = Counter()
        let r = try $counter.withValue(c) { try body() }
        return (r, c.value)
    }
}

extension AnyModule {
    public func namedChildren() -> [(String, any AnyModule)] { reflectedMembers().children }
    public func namedLocalParameters() -> [(String, Parameter)] { reflectedMembers().parameters }
    public func namedLocalBuffers() -> [(String, Buffer)] { reflectedMembers().buffers }

    /// One walk over the stored properties (superclasses first): modules, parameters, buffers, and
    /// arrays or optionals of them. Arrays are numbered (`layer1.0`), as `nn.Sequential` is.
    private func reflectedMembers() -> (children: [(String, any AnyModule)], parameters: [(String, Parameter)],
                                         buffers: [(String, Buffer)]) {
        ModuleReflection.counter?.increment()
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
        var levels: [Mirror] = []
        var mirror: Mirror? = Mirror(reflecting: self)
        while let m = mirror { levels.append(m); mirror = m.superclassMirror }
        for m in levels.reversed() {
            for child in m.children {
                guard var label = child.label, !label.hasPrefix("$") else { continue }
                if label.hasPrefix("_") { label.removeFirst() }   // property wrappers, lazy storage
                visit(label, child.value)
            }
        }
        return (children, parameters, buffers)
    }

    /// Every module in the tree with its dotted path ("" for self), depth first, parents first (the
    /// order of PyTorch's `named_modules()`). A class instance reachable twice is listed once.
    public func namedModules() -> [(String, any AnyModule)] {
        var out: [(String, any AnyModule)] = []
        var stack: [(String, any AnyModule)] = [("", self)]
        var seen = Set<ObjectIdentifier>()
        while let (path, m) = stack.popLast() {
            if type(of: m) is AnyClass, !seen.insert(ObjectIdentifier(m as AnyObject)).inserted { continue }
            out.append((path, m))
            for (name, child) in m.namedChildren().reversed() {
                stack.append((path.isEmpty ? name : "\(path).\(name)", child))
            }
        }
        return out
    }

    /// Every parameter with its dotted name (`layer1.0.conv1.weight`), each parameter once.
    public func namedParameters() -> [(String, Parameter)] {
        namedState().compactMap { if case .parameter(let p) = $0.1 { ($0.0, p) } else { nil } }
    }

    /// Every buffer with its dotted name (`bn1.running_mean`).
    public func namedBuffers() -> [(String, Buffer)] {
        namedState().compactMap { if case .buffer(let b) = $0.1 { ($0.0, b) } else { nil } }
    }

    /// Parameters and buffers in PyTorch's `state_dict()` order: each module's own parameters, then
    /// its own buffers, then its children's, in declaration order.
    func namedState() -> [(String, StateEntry)] {
        var seen = Set<ObjectIdentifier>()
        var out: [(String, StateEntry)] = []
        for (path, m) in namedModules() {
            let prefix = path.isEmpty ? "" : path + "."
            for (name, p) in m.namedLocalParameters() where seen.insert(ObjectIdentifier(p)).inserted {
                out.append((prefix + name, .parameter(p)))
            }
            for (name, b) in m.namedLocalBuffers() where seen.insert(ObjectIdentifier(b)).inserted {
                out.append((prefix + name, .buffer(b)))
            }
        }
        return out
    }

    /// All parameters, in the order of ``namedParameters()``. Take this once (an optimizer does).
    public var parameters: [Parameter] { namedParameters().map(\.1) }

    /// Number of scalar parameters (frozen ones included, like torchinfo's total).
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// Number of scalar parameters that receive gradients.
    public var trainableParameterCount: Int {
        parameters.filter(\.requiresGrad).reduce(0) { $0 + $1.count }
    }

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

    /// Freezes (or unfreezes) the parameters under `path` ("" = all; `"layer1"` covers
    /// `layer1.0.conv1.weight` but not `layer10...`; a full parameter name selects that parameter).
    /// A frozen parameter is a constant to the tape: it gets no gradient and optimizers skip it.
    public func freeze(_ path: String = "", _ frozen: Bool = true) {
        for (name, p) in namedParameters() where path.isEmpty || name == path || name.hasPrefix(path + ".") {
            p.requiresGrad = !frozen
        }
    }

    /// Unfreezes the parameters under `path` ("" = all).
    public func unfreeze(_ path: String = "") { freeze(path, false) }

    /// The generator state of every random module (dropout) by module path.
    public func randomStates() -> [String: SeededGenerator] {
        var out: [String: SeededGenerator] = [:]
        for (path, m) in namedModules() { if let r = m as? any RandomStateful { out[path] = r.randomState } }
        return out
    }

    /// Restores generator states saved by ``randomStates()`` (paths not in the model are ignored).
    public func setRandomStates(_ states: [String: SeededGenerator]) {
        for (path, m) in namedModules() {
            if let r = m as? any RandomStateful, let s = states[path] { r.randomState = s }
        }
    }
}

/// A parameter or a buffer, as listed in a state dict.
enum StateEntry {
    case parameter(Parameter)
    case buffer(Buffer)
    var shape: [Int] {
        switch self {
        case .parameter(let p): p.shape
        case .buffer(let b): b.shape
        }
    }
}
