import Foundation
import ResidualAutodiff

/// One safetensors file holding everything a training run needs to continue exactly where it
/// stopped: the model's state dict, the optimizer's state tensors, the generator state of every
/// random module (dropout), and a `Progress` value of your own (epoch, step, schedule, data
/// generator...), stored as JSON in the header's metadata.
///
/// ```swift
/// struct Progress: Codable { var step = 0; var schedule: ConstantThenJumpWarmup<MultiStepSchedule>; var data: SeededGenerator }
/// try TrainingCheckpoint.save(to: url, model: model, optimizerState: optimizer.stateDict(), progress: progress)
/// let c = try TrainingCheckpoint<Progress>.load(from: url, into: model)
/// try optimizer.loadStateDict(c.optimizerState)
/// progress = c.progress
/// ```
///
/// Writes are atomic (``SafeTensors/atomicWrite(_:to:)``). The model part is an ordinary state dict:
/// `SafeTensors.read` or PyTorch's `safetensors.torch.load_file` see the weights under their usual
/// names, and the optimizer's tensors under `optimizer.`.
public struct TrainingCheckpoint<Progress: Codable> {
    /// Tensors whose names start with ``optimizerPrefix``, for `Optimizer.loadStateDict`.
    public var optimizerState: [String: Tensor]
    public var progress: Progress
    /// The caller's own metadata, as saved.
    public var metadata: [String: String]

    public static var optimizerPrefix: String { "optimizer." }
    static var progressKey: String { "residual.progress" }
    static var randomKey: String { "residual.random" }

    /// Saves model, optimizer state and progress to `url` atomically. Optimizer tensor names must
    /// start with ``optimizerPrefix`` so that they cannot collide with the model's.
    public static func save(to url: URL, model: some AnyModule, optimizerState: [(String, Tensor)],
                            progress: Progress, metadata: [String: String] = [:]) throws(CheckpointError) {
        for (name, _) in optimizerState {
            shapeCheck(name.hasPrefix(optimizerPrefix),
                       "TrainingCheckpoint.save: optimizer tensor '\(name)' must start with '\(optimizerPrefix)'")
        }
        var meta = metadata
        do {
            meta[progressKey] = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
            meta[randomKey] = String(decoding: try JSONEncoder().encode(model.randomStates()), as: UTF8.self)
        } catch {
            throw CheckpointError(.io, "\(url.path): cannot encode the training progress: \(error)")
        }
        try SafeTensors.write(model.stateDict() + optimizerState, metadata: meta, to: url)
    }

    /// Reads `url`, loads the model's part into `model` (strictly: every tensor must match), restores
    /// the random modules' generators and returns the optimizer state and progress. Nothing in the
    /// model changes unless the whole file is valid.
    public static func load(from url: URL, into model: some AnyModule) throws(CheckpointError) -> Self {
        let contents = try SafeTensors.read(url)
        var meta = contents.metadata
        guard let progressJSON = meta.removeValue(forKey: progressKey),
              let randomJSON = meta.removeValue(forKey: randomKey) else {
            throw CheckpointError(.corruptHeader, "\(url.path): not a training checkpoint (no progress record)")
        }
        let progress: Progress
        let random: [String: SeededGenerator]
        do {
            progress = try JSONDecoder().decode(Progress.self, from: Data(progressJSON.utf8))
            random = try JSONDecoder().decode([String: SeededGenerator].self, from: Data(randomJSON.utf8))
        } catch {
            throw CheckpointError(.corruptHeader, "\(url.path): unreadable progress record: \(error)")
        }
        let optimizer = contents.tensors.filter { $0.key.hasPrefix(optimizerPrefix) }
        try model.loadStateDict(contents.tensors.filter { !$0.key.hasPrefix(optimizerPrefix) })
        model.setRandomStates(random)
        return TrainingCheckpoint(optimizerState: optimizer, progress: progress, metadata: meta)
    }
}
