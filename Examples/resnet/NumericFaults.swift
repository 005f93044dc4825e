import Foundation
import Residual

/// Training stopped on a NaN or infinity (see `NumericGuard`). Nothing is saved on the way out, so
/// the checkpoint on disk is the last one written before the fault, with finite weights.
struct TrainingFault: Error, CustomStringConvertible {
    let fault: NumericFault
    let checkpoint: URL

    var description: String {
        let kept = FileManager.default.fileExists(atPath: checkpoint.path)
            ? "the last good checkpoint, \(checkpoint.path), is kept (continue from it with --resume)"
            : "no checkpoint had been written yet"
        return "\(fault). Training stopped without saving: \(kept). A lower --lr may help; "
            + "--skip-nonfinite skips such batches instead."
    }
}

/// A test hook: `RESIDUAL_INJECT_NAN_STEPS=3,7` puts a NaN into the first pixel of the batches of
/// those (1-based) steps, like a corrupt image would. Unset, it does nothing.
enum FaultInjection {
    static let steps: Set<Int> = Set((ProcessInfo.processInfo.environment["RESIDUAL_INJECT_NAN_STEPS"] ?? "")
        .split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) })

    static func images(_ images: Tensor, step: Int) -> Tensor {
        guard steps.contains(step) else { return images }
        var poisoned = images
        poisoned.withUnsafeMutableBufferPointer { if !$0.isEmpty { $0[0] = .nan } }
        return poisoned
    }
}
