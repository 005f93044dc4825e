import Foundation

/// A learning-rate schedule: the rate for a given iteration (0-based optimizer step).
public protocol LearningRateSchedule: Sendable {
    func learningRate(step: Int) -> Float
}

/// The paper's schedule: `base`, divided by `factor` at each milestone (He et al. 4.2: 0.1, /10 at
/// 32k and 48k iterations, stop at 64k).
public struct MultiStepSchedule: LearningRateSchedule, Codable, Equatable {
    public var base: Float, milestones: [Int], factor: Float
    public init(base: Float, milestones: [Int], factor: Float = 0.1) {
        self.base = base; self.milestones = milestones.sorted(); self.factor = factor
    }
    /// The paper's CIFAR schedule scaled to a run of `totalSteps` (milestones at 50 % and 75 %).
    public static func paper(base: Float = 0.1, totalSteps: Int) -> MultiStepSchedule {
        MultiStepSchedule(base: base, milestones: [totalSteps / 2, totalSteps * 3 / 4])
    }
    public func learningRate(step: Int) -> Float {
        base * Float(pow(Double(factor), Double(milestones.filter { step >= $0 }.count)))
    }
}

/// `base · factor^⌊step / stepSize⌋`.
public struct StepSchedule: LearningRateSchedule, Codable, Equatable {
    public var base: Float, stepSize: Int, factor: Float
    public init(base: Float, stepSize: Int, factor: Float = 0.1) {
        self.base = base; self.stepSize = stepSize; self.factor = factor
    }
    public func learningRate(step: Int) -> Float {
        base * Float(pow(Double(factor), Double(step / max(stepSize, 1))))
    }
}

/// Cosine annealing from `base` to `minimum` over `totalSteps`.
public struct CosineSchedule: LearningRateSchedule, Codable, Equatable {
    public var base: Float, totalSteps: Int, minimum: Float
    public init(base: Float, totalSteps: Int, minimum: Float = 0) {
        self.base = base; self.totalSteps = totalSteps; self.minimum = minimum
    }
    public func learningRate(step: Int) -> Float {
        let t = Double(min(step, totalSteps)) / Double(max(totalSteps, 1))
        return minimum + (base - minimum) * Float((1 + cos(Double.pi * t)) / 2)
    }
}

/// Linear warm-up from `start × target` to the wrapped schedule over `warmupSteps`.
public struct LinearWarmup<S: LearningRateSchedule>: LearningRateSchedule {
    public var schedule: S, warmupSteps: Int, startFactor: Float
    public init(_ schedule: S, warmupSteps: Int, startFactor: Float = 0) {
        self.schedule = schedule; self.warmupSteps = warmupSteps; self.startFactor = startFactor
    }
    public func learningRate(step: Int) -> Float {
        let lr = schedule.learningRate(step: step)
        guard step < warmupSteps else { return lr }
        let f = startFactor + (1 - startFactor) * Float(step) / Float(warmupSteps)
        return lr * f
    }
}

/// He et al. 4.2 for ResNet-110: train at `warmupRate` (0.01) until the training error falls below
/// `threshold` (80 %), then switch to the wrapped schedule (0.1, ...). Stateful: report training
/// error with `observe(trainingError:step:)`; the switch happens once.
public struct ConstantThenJumpWarmup<S: LearningRateSchedule>: LearningRateSchedule {
    public var schedule: S, warmupRate: Float, threshold: Float
    /// The step at which training error first fell below the threshold (nil: still warming up).
    public var switchedAt: Int?

    public init(_ schedule: S, warmupRate: Float = 0.01, threshold: Float = 0.8) {
        self.schedule = schedule; self.warmupRate = warmupRate; self.threshold = threshold
    }

    public mutating func observe(trainingError: Float, step: Int) {
        if switchedAt == nil && trainingError < threshold { switchedAt = step }
    }

    public func learningRate(step: Int) -> Float {
        guard let s = switchedAt, step >= s else { return warmupRate }
        return schedule.learningRate(step: step)
    }
}

// Schedules are plain data: a training checkpoint saves them (with `ConstantThenJumpWarmup`'s switch
// step) in its progress record.
extension LinearWarmup: Codable where S: Codable {}
extension LinearWarmup: Equatable where S: Equatable {}
extension ConstantThenJumpWarmup: Codable where S: Codable {}
extension ConstantThenJumpWarmup: Equatable where S: Equatable {}
