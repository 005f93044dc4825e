import Foundation
import Residual
import Synchronization

/// Everything a training run needs to know; parsed from the command line.
struct TrainConfig {
    var model = "resnet20"
    var dataDirectory: String?
    var epochs = 3
    var batchSize = 128
    var learningRate: Float = 0.1
    var momentum: Float = 0.9
    var weightDecay: Float = 1e-4
    var seed: UInt64 = 0
    var output = "out"
    var resume = false
    var shortcut: ShortcutOption?
    var trainLimit: Int?
    var testLimit: Int?
    var normalization: Normalization = .perPixelMean
    var warmup: Warmup = .none
    /// γ = 0 in the last BN of every residual branch (Goyal et al. 2017; not in the paper).
    var zeroInitResidual = false
    var augment = true
    var flip = true
    /// Stop (saving a checkpoint, as Ctrl-C does) once this many steps are done in total.
    var stopAfter: Int?
    /// Skip a batch whose loss or gradients are not finite (and count it) instead of stopping.
    var skipNonfinite = false
    /// Training-error points per epoch for the curves (besides the end-of-epoch test error).
    var pointsPerEpoch = 4
    var label: String?
    var quiet = false
}

/// How a run starts before the paper's multistep schedule takes over.
enum Warmup: Equatable, Codable, CustomStringConvertible {
    case none
    /// He et al. 4.2 (their ResNet-110 recipe): a tenth of the learning rate (0.01 for 0.1) until
    /// the training error over the last ``Warmup/paperWindow`` batches is below 80 %, then the
    /// full rate. The switch is decided by the data, so it is stored in checkpoints.
    case paper
    /// Linear from 0 to the learning rate over the first `steps` steps (Goyal et al. 2017).
    /// Not in the paper.
    case linear(steps: Int)

    /// Batches in the moving training error that ends the paper's warm-up (1,280 images at batch
    /// 128): one batch is too noisy a measure, a whole epoch too slow.
    static let paperWindow = 10

    /// `none`, `paper` or `linear:STEPS`.
    init?(argument: String) {
        switch argument {
        case "none": self = .none
        case "paper": self = .paper
        default:
            guard argument.hasPrefix("linear:"), let n = Int(argument.dropFirst("linear:".count)), n >= 1 else { return nil }
            self = .linear(steps: n)
        }
    }

    var description: String {
        switch self {
        case .none: "none"
        case .paper: "paper"
        case .linear(let n): "linear:\(n)"
        }
    }
}

/// The learning rate of every step: `warmup`, then the paper's multistep schedule over the whole
/// run (milestones at 50 % and 75 % of `totalSteps`, counted from step 0, warm-up included).
struct RunSchedule {
    let multistep: MultiStepSchedule
    let warmup: Warmup
    /// The paper's warm-up: the step from which the full rate applies, once known.
    var switchedAt: Int?
    /// The paper's warm-up: errors of the last batches (at most ``Warmup/paperWindow``) and their sizes.
    var recent: [Int] = [], recentSizes: [Int] = []

    init(base: Float, totalSteps: Int, warmup: Warmup) {
        multistep = .paper(base: base, totalSteps: totalSteps)
        self.warmup = warmup
    }

    func learningRate(step: Int) -> Float {
        switch warmup {
        case .none:
            return multistep.learningRate(step: step)
        case .linear(let n):
            return LinearWarmup(multistep, warmupSteps: n).learningRate(step: step)
        case .paper:
            // A net that never gets below 80 % still follows the schedule's divisions (never above
            // it): the warm-up rate is a ceiling, not a rate for the rest of the run.
            var jump = ConstantThenJumpWarmup(multistep, warmupRate: multistep.base / 10, threshold: 0.8)
            jump.switchedAt = switchedAt
            return min(jump.learningRate(step: step), multistep.learningRate(step: step))
        }
    }

    /// Records the training errors of the batch trained at `step`; the paper's warm-up ends after
    /// the first full window whose error is below 80 % (from step `step + 1`).
    mutating func observe(errors: Int, of count: Int, step: Int) {
        guard warmup == .paper, switchedAt == nil else { return }
        recent.append(errors); recentSizes.append(count)
        if recent.count > Warmup.paperWindow { recent.removeFirst(); recentSizes.removeFirst() }
        guard recent.count == Warmup.paperWindow else { return }
        var jump = ConstantThenJumpWarmup(multistep, warmupRate: multistep.base / 10, threshold: 0.8)
        jump.observe(trainingError: Float(recent.reduce(0, +)) / Float(recentSizes.reduce(0, +)), step: step + 1)
        switchedAt = jump.switchedAt
        if switchedAt != nil { recent = []; recentSizes = [] }
    }
}

/// One point of the error curves.
struct CurvePoint: Codable {
    var epoch: Double          // fractional epoch
    var step: Int
    var learningRate: Float
    var trainLoss: Double      // over the training batches since the previous point
    var trainError: Double
    var testError: Double?     // at the end of each epoch
    var seconds: Double        // wall time since the start of the run
    var imagesPerSecond: Double
}

/// What a checkpoint stores besides tensors, so a resumed run continues exactly: the position in
/// the run, the partial sums of the current curve window and epoch, and the curve so far.
struct Progress: Codable {
    var format = "residual-train-2"
    var model: String
    var seed: UInt64
    var epochs: Int
    var batchSize: Int
    var learningRate: Float
    var trainCount: Int
    var epoch = 0              // current epoch (0-based)
    var batch = 0              // next batch within the epoch
    var step = 0
    var curve: [CurvePoint] = []
    var windowLoss = 0.0, windowErrors = 0, windowSeen = 0
    var epochErrors = 0, epochSeen = 0
    /// Training error over each finished epoch (all its batches, as trained: augmented, train mode).
    var epochTrainErrors: [Double] = []
    var elapsed = 0.0          // wall seconds, all sessions
    var trainSeconds = 0.0     // seconds spent in training steps (data wait included; evaluation not)
    var trainImages = 0
    var dataWaitSeconds = 0.0
    /// Batches skipped for a non-finite loss or gradient (--skip-nonfinite); nil when none.
    var skippedBatches: Int?
    /// The warm-up (`Warmup.description`; nil in older checkpoints: none) and, for the paper's,
    /// its state: the step where the full rate began, the last batches' errors and sizes.
    var warmup: String?
    var warmupSwitchedAt: Int?
    var warmupRecent: [Int]?, warmupRecentSizes: [Int]?
    /// `--zero-init-residual` (nil in older checkpoints: false).
    var zeroInitResidual: Bool?
}

struct TrainResult {
    var finalTestError: Double
    var finalTrainError: Double
    var imagesPerSecond: Double
    var wallSeconds: Double
    var curve: [CurvePoint]
}

// MARK: - Interrupts

/// Set by the first SIGINT or SIGTERM; the loop saves a checkpoint after the current step and
/// exits. A second SIGINT exits at once, without saving.
let interrupted = Atomic<Bool>(false)
nonisolated(unsafe) var signalSources: [DispatchSourceSignal] = []

func installInterruptHandler() {
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler {
            if interrupted.exchange(true, ordering: .relaxed) && sig == SIGINT {
                printError("\nresnet: interrupted again: exiting without saving")
                exit(130)
            }
        }
        source.resume()
        signalSources.append(source)
    }
}

// MARK: - Data and models

func loadDatasets(_ dataDirectory: String?, trainLimit: Int? = nil, testLimit: Int? = nil, needTrain: Bool = true)
    throws -> (train: Dataset?, test: Dataset, name: String) {
    var train: Dataset?, test: Dataset, name: String
    if let dir = dataDirectory {
        let url = URL(fileURLWithPath: dir)
        train = needTrain ? try Dataset.load(directory: url, train: true) : nil
        test = try Dataset.load(directory: url, train: false)
        name = url.lastPathComponent
    } else {
        train = needTrain ? try Dataset.fashionMNIST(train: true) : nil
        test = try Dataset.fashionMNIST(train: false)
        name = "Fashion-MNIST (bundled)"
    }
    if let n = trainLimit { train = train?.prefix(n) }
    if let n = testLimit { test = test.prefix(n) }
    return (train, test, name)
}

/// A zoo model by name, or a CIFAR-style net of any depth 6n+2 (`resnet8`, `plain14`, ...), which
/// the degradation experiment and quick tests use. Weights are seeded by `options.seed`.
func makeModel(_ name: String, options: Zoo.Options) -> (any Layer)? {
    if let m = Zoo.make(name, options: options) { return m }
    guard let depth = cifarDepth(name) else { return nil }
    let plain = name.lowercased().hasPrefix("plain")
    return withSeed(options.seed) {
        CIFARResNet(depth: depth, shortcut: plain ? ShortcutOption.none : options.shortcut ?? .a,
                    classes: options.classes ?? 10, inputChannels: options.inputChannels,
                    zeroInitLastBN: options.zeroInitLastBN)
    }
}

/// 20 for "resnet20" or "plain20": the depth of a CIFAR-style name, if it is 6n+2 (n >= 1).
func cifarDepth(_ name: String) -> Int? {
    let n = name.lowercased()
    for prefix in ["resnet", "plain"] where n.hasPrefix(prefix) {
        if let d = Int(n.dropFirst(prefix.count)), d >= 8, d <= 10_000, (d - 2) % 6 == 0 { return d }
    }
    return nil
}

func isKnownModel(_ name: String) -> Bool { Zoo.entry(name) != nil || cifarDepth(name) != nil }

/// Test error, per-class error and confusion matrix (rows: true class, columns: predicted), in eval mode.
func evaluate(_ model: any Layer, _ loader: BatchLoader) -> (error: Double, perClass: [Double], confusion: [[Int]]) {
    let classes = loader.dataset.classNames.count
    var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
    model.eval()
    defer { model.train() }
    for batch in loader.batches(epoch: 0) {
        let logits = withoutTape { model(batch.images) }
        for (i, predicted) in predictions(logits).enumerated() { confusion[batch.labels[i]][predicted] += 1 }
    }
    let total = confusion.joined().reduce(0, +)
    let correct = (0..<classes).reduce(0) { $0 + confusion[$1][$1] }
    let perClass = (0..<classes).map { k -> Double in
        let n = confusion[k].reduce(0, +)
        return n == 0 ? 0 : 1 - Double(confusion[k][k]) / Double(n)
    }
    return (total == 0 ? 0 : 1 - Double(correct) / Double(total), perClass, confusion)
}

/// The arg-max of each row of `[N, classes]` logits (the first on ties).
func predictions(_ logits: Tensor) -> [Int] {
    let c = logits.shape[1]
    return logits.withUnsafeBufferPointer { p in
        (0..<logits.shape[0]).map { i in
            var best = 0
            for j in 1..<c where p[i * c + j] > p[i * c + best] { best = j }
            return best
        }
    }
}

// MARK: - Checkpoints

/// Metadata keys of the files `resnet train` writes (checkpoint.safetensors and model.safetensors).
/// Sorted keys: the same state gives the same bytes (a resumed run's files equal an uninterrupted one's).
let sortedJSON: JSONEncoder = {
    let e = JSONEncoder()
    e.outputFormatting = .sortedKeys
    return e
}()

enum MetadataKey {
    static let model = "model", shortcut = "shortcut", data = "data"
    static let progress = "residual.progress", preprocessing = "residual.preprocessing"
}

func checkpointMetadata(_ config: TrainConfig, _ prep: Preprocessing) throws -> [String: String] {
    var m = [MetadataKey.model: config.model,
             MetadataKey.preprocessing: String(decoding: try sortedJSON.encode(prep), as: UTF8.self)]
    if let s = config.shortcut { m[MetadataKey.shortcut] = s.rawValue }
    if let d = config.dataDirectory { m[MetadataKey.data] = d }
    return m
}

// MARK: - The training loop

/// The paper's recipe: SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1 divided by 10 at
/// 50 % and 75 % of the run (32k and 48k of 64k iterations in the paper), batch 128.
///
/// Every epoch ends with a test evaluation, `log.csv`, `curves.svg` and `checkpoint.safetensors`
/// in `config.output`; the run ends with `model.safetensors`. Everything random is a function of
/// the seed and the position in the run, so `--resume` from any checkpoint reproduces the
/// uninterrupted run bit for bit (same thread count).
func train(_ config: TrainConfig) throws -> TrainResult {
    let quiet = config.quiet
    let out = URL(fileURLWithPath: config.output)
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
    let (loadedTrain, testSet, dataName) = try loadDatasets(config.dataDirectory, trainLimit: config.trainLimit,
                                                            testLimit: config.testLimit)
    let trainSet = loadedTrain!
    let prep = Preprocessing(fitting: trainSet, normalization: config.normalization, flip: config.flip)
    let trainLoader = BatchLoader(trainSet, batchSize: config.batchSize, shuffle: true, augment: config.augment,
                                  preprocessing: prep, seed: config.seed)
    let testLoader = BatchLoader(testSet, batchSize: 500, shuffle: false, augment: false, preprocessing: prep)
    let options = Zoo.Options(shortcut: config.shortcut, classes: trainSet.classNames.count,
                              inputChannels: trainSet.channels, zeroInitLastBN: config.zeroInitResidual, seed: config.seed)
    guard let model = makeModel(config.model, options: options) else {
        throw UsageError(message: "unknown model '\(config.model)'; `resnet zoo` lists them", command: nil)
    }
    let parameters = model.namedParameters()
    let buffers = model.namedBuffers()
    let optimizer = SGD(parameters.map(\.1), learningRate: config.learningRate, momentum: config.momentum,
                        weightDecay: config.weightDecay)
    let stepsPerEpoch = trainLoader.batchesPerEpoch
    let totalSteps = config.epochs * stepsPerEpoch
    var schedule = RunSchedule(base: config.learningRate, totalSteps: totalSteps, warmup: config.warmup)
    let checkpointURL = out.appendingPathComponent("checkpoint.safetensors")
    let metadata = try checkpointMetadata(config, prep)
    var progress = Progress(model: config.model, seed: config.seed, epochs: config.epochs, batchSize: config.batchSize,
                            learningRate: config.learningRate, trainCount: trainSet.count)
    progress.warmup = config.warmup == .none ? nil : config.warmup.description
    progress.zeroInitResidual = config.zeroInitResidual ? true : nil

    if config.resume {
        if FileManager.default.fileExists(atPath: checkpointURL.path) {
            progress = try restore(from: checkpointURL, into: model, optimizer, parameters, config: config, prep: prep,
                                   trainCount: trainSet.count)
            schedule.switchedAt = progress.warmupSwitchedAt
            schedule.recent = progress.warmupRecent ?? []
            schedule.recentSizes = progress.warmupRecentSizes ?? []
            if !quiet {
                say("Resuming \(config.model) from \(checkpointURL.path): epoch \(progress.epoch + 1), batch \(progress.batch), step \(progress.step)")
            }
        } else if !quiet {
            say("No checkpoint at \(checkpointURL.path): starting from the beginning")
        }
    }

    func saveCheckpoint() throws {
        var tensors = model.stateDict()
        let state = optimizer.stateTensors()
        for (i, (name, _)) in parameters.enumerated() {
            if let b = state[i]?["momentum_buffer"] { tensors.append(("optimizer.\(name).momentum_buffer", b)) }
        }
        // Never replace a good checkpoint with non-finite weights.
        if let fault = NumericGuard.check(step: progress.step, state: tensors) {
            throw TrainingFault(fault: fault, checkpoint: checkpointURL)
        }
        if config.warmup == .paper {
            progress.warmupSwitchedAt = schedule.switchedAt
            progress.warmupRecent = schedule.recent; progress.warmupRecentSizes = schedule.recentSizes
        }
        var m = metadata
        m[MetadataKey.progress] = String(decoding: try sortedJSON.encode(progress), as: UTF8.self)
        try SafeTensors.write(tensors, metadata: m, to: checkpointURL)
    }
    func writeCurves() throws {
        try writeLog(progress.curve, to: out.appendingPathComponent("log.csv"))
        try SVGPlot.render([curvePanel(title: "\(config.model) on \(dataName)", progress.curve)],
                           title: "dashed: training error, bold: test error")
            .write(to: out.appendingPathComponent("curves.svg"), atomically: true, encoding: .utf8)
    }

    let tag = config.label.map { "[\($0)] " } ?? ""
    if !quiet {
        say("Training \(config.model) (\(grouped(model.parameterCount)) parameters) on \(dataName): \(trainSet.count) training, "
            + "\(testSet.count) test images, \(trainSet.channels)x\(trainSet.height)x\(trainSet.width) -> \(prep.size)x\(prep.size)")
        let warmup = switch config.warmup {
        case .none: ""
        case .paper: "after a warm-up at lr \(config.learningRate / 10) until the training error is below 80 % (He et al. 4.2), "
        case .linear(let n): "after a linear warm-up over \(n) steps, "
        }
        say("SGD momentum \(config.momentum), weight decay \(config.weightDecay), lr \(config.learningRate) \(warmup)/10 at steps "
            + "\(schedule.multistep.milestones.map(String.init).joined(separator: ", ")) of \(totalSteps); batch \(config.batchSize), "
            + "\(Threading.threadCount) threads, seed \(config.seed); \(prep.normalization == .perPixelMean ? "per-pixel mean" : "per-channel") "
            + "normalisation, \(config.zeroInitResidual && !config.model.hasPrefix("plain") ? "last BN of each residual branch zero-initialised (not the paper's), " : "")"
            + "\(config.augment ? "4-pixel crop\(config.flip ? " + flip" : "")" : "no augmentation")")
    }
    let line = ProgressLine(quiet: quiet)
    let windowSize = max(1, stepsPerEpoch / max(1, config.pointsPerEpoch))
    let start = monotonicSeconds() - progress.elapsed
    var lastTestError = progress.curve.last(where: { $0.testError != nil })?.testError ?? 1
    model.train()
    while progress.epoch < config.epochs {
        let epoch = progress.epoch
        var epochImages = 0, epochSeconds = 0.0
        let waitAtStart = trainLoader.dataWaitSeconds
        var stepStart = monotonicSeconds()
        for batch in trainLoader.batches(epoch: epoch, startingAt: progress.batch) {
            let lr = schedule.learningRate(step: progress.step)
            optimizer.learningRate = lr
            let tape = Tape()
            var logits = Tensor(0)
            let images = FaultInjection.images(batch.images, step: progress.step + 1)
            // A skipped batch must leave no trace: its forward pass updates batch-norm statistics.
            let buffersBefore = config.skipNonfinite ? buffers.map { $0.1.value } : []
            let loss = tape.record { () -> Tensor in
                logits = model(images)
                return softmaxCrossEntropy(logits: logits, labels: batch.labels)
            }
            tape.backward(loss)
            // A NaN or Inf in the loss or a gradient: stop (the checkpoint on disk is the last good
            // one), or with --skip-nonfinite skip this batch's update and its statistics.
            let fault = NumericGuard.check(step: progress.step + 1, loss: loss, parameters: parameters)
            if let fault {
                line.finish()
                let weights = NumericGuard.check(step: progress.step + 1, state: parameters.map { ($0.0, $0.1.data) })
                guard config.skipNonfinite, weights == nil else {
                    throw TrainingFault(fault: weights ?? fault, checkpoint: checkpointURL)
                }
                for ((_, b), v) in zip(buffers, buffersBefore) { b.value = v }
                progress.skippedBatches = (progress.skippedBatches ?? 0) + 1
                printError("resnet: \(fault): batch skipped (--skip-nonfinite; \(progress.skippedBatches!) skipped so far)")
            } else {
                optimizer.step()
            }
            optimizer.zeroGrad()
            let errors = zip(predictions(logits), batch.labels).filter { $0 != $1 }.count
            let n = batch.labels.count
            if fault == nil {
                let warming = schedule.switchedAt == nil
                schedule.observe(errors: errors, of: n, step: progress.step)
                if warming, let s = schedule.switchedAt {
                    line.finish()
                    if !quiet {
                        say("\(tag)Warm-up over after step \(s): training error of the last \(Warmup.paperWindow) batches "
                            + "below 80 %; lr \(schedule.learningRate(step: s)) from here")
                    }
                }
            }
            progress.step += 1
            progress.batch = batch.index + 1
            if fault == nil {
                progress.windowLoss += Double(loss.scalar) * Double(n)
                progress.windowErrors += errors; progress.windowSeen += n
                progress.epochErrors += errors; progress.epochSeen += n
            }
            let now = monotonicSeconds()
            progress.trainSeconds += now - stepStart
            epochSeconds += now - stepStart
            progress.trainImages += n
            epochImages += n
            let rate = Double(epochImages) / max(epochSeconds, 1e-9)
            let done = Double(progress.step) / Double(totalSteps)
            let eta = (now - start) / max(done, 1e-9) * (1 - done)
            line.update(String(format: "%@epoch %d/%d  step %d/%d  loss %.4f  train err %.2f%%  lr %.3g  %.0f img/s  ETA %@",
                               tag, epoch + 1, config.epochs, batch.index + 1, stepsPerEpoch,
                               progress.windowLoss / Double(max(progress.windowSeen, 1)),
                               100 * Double(progress.windowErrors) / Double(max(progress.windowSeen, 1)), lr, rate,
                               formatDuration(eta)))
            let endOfEpoch = batch.index + 1 == stepsPerEpoch
            if progress.step % windowSize == 0 || endOfEpoch {
                var point = CurvePoint(epoch: Double(epoch) + Double(batch.index + 1) / Double(stepsPerEpoch), step: progress.step,
                                       learningRate: lr, trainLoss: progress.windowLoss / Double(max(progress.windowSeen, 1)),
                                       trainError: Double(progress.windowErrors) / Double(max(progress.windowSeen, 1)), testError: nil,
                                       seconds: now - start, imagesPerSecond: rate)
                if endOfEpoch {
                    point.testError = evaluate(model, testLoader).error
                    lastTestError = point.testError!
                }
                progress.curve.append(point)
                progress.windowLoss = 0; progress.windowErrors = 0; progress.windowSeen = 0
            }
            if endOfEpoch {
                progress.epochTrainErrors.append(Double(progress.epochErrors) / Double(max(progress.epochSeen, 1)))
                progress.epoch += 1; progress.batch = 0; progress.epochErrors = 0; progress.epochSeen = 0
            }
            let stopping = config.stopAfter.map { progress.step >= $0 && progress.step < totalSteps } ?? false
            if interrupted.load(ordering: .relaxed) || stopping {
                progress.dataWaitSeconds += trainLoader.dataWaitSeconds - waitAtStart
                progress.elapsed = monotonicSeconds() - start
                try saveCheckpoint()
                try writeCurves()
                line.finish()
                if stopping {
                    if !quiet { say("Stopped after step \(progress.step) (--stop-after): checkpoint saved to \(checkpointURL.path); continue with --resume") }
                    exit(0)
                }
                say("Interrupted: checkpoint saved to \(checkpointURL.path) (step \(progress.step)); continue with --resume")
                exit(130)
            }
            stepStart = monotonicSeconds()
        }
        let wait = trainLoader.dataWaitSeconds - waitAtStart
        progress.dataWaitSeconds += wait
        progress.elapsed = monotonicSeconds() - start
        line.finish(String(format: "%@epoch %d/%d  train err %.2f%%  test err %.2f%%  %.0f img/s  data wait %.2f s  %@ elapsed",
                           tag, epoch + 1, config.epochs, 100 * (progress.epochTrainErrors.last ?? 1), 100 * lastTestError,
                           Double(epochImages) / max(epochSeconds, 1e-9), wait, formatDuration(progress.elapsed)))
        try saveCheckpoint()
        try writeCurves()
    }
    if let skipped = progress.skippedBatches, !quiet {
        say("\(tag)Skipped \(skipped) of \(totalSteps) batches for a non-finite loss or gradient (--skip-nonfinite)")
    }
    try model.save(to: out.appendingPathComponent("model.safetensors"), metadata: metadata)
    return TrainResult(finalTestError: lastTestError, finalTrainError: progress.epochTrainErrors.last ?? 1,
                       imagesPerSecond: Double(progress.trainImages) / max(progress.trainSeconds, 1e-9),
                       wallSeconds: monotonicSeconds() - start, curve: progress.curve)
}

/// Loads a training checkpoint into `model` and `optimizer`, after checking it belongs to this run.
func restore(from url: URL, into model: any Layer, _ optimizer: SGD, _ parameters: [(String, Parameter)],
             config: TrainConfig, prep: Preprocessing, trainCount: Int) throws -> Progress {
    let contents = try SafeTensors.read(url)
    guard let json = contents.metadata[MetadataKey.progress],
          let saved = try? JSONDecoder().decode(Progress.self, from: Data(json.utf8)), saved.format == Progress(
            model: "", seed: 0, epochs: 0, batchSize: 0, learningRate: 0, trainCount: 0).format else {
        throw CheckpointError(.corruptHeader, "\(url.path): not a training checkpoint of this version (no progress record)")
    }
    let savedPrep = contents.metadata[MetadataKey.preprocessing].flatMap {
        try? JSONDecoder().decode(Preprocessing.self, from: Data($0.utf8))
    }
    guard saved.model == config.model, saved.batchSize == config.batchSize, saved.trainCount == trainCount,
          saved.seed == config.seed, saved.epochs == config.epochs, saved.learningRate == config.learningRate,
          savedPrep == prep, contents.metadata[MetadataKey.shortcut] == config.shortcut?.rawValue,
          (saved.warmup ?? "none") == config.warmup.description,
          (saved.zeroInitResidual ?? false) == config.zeroInitResidual else {
        throw UsageError(message: "--resume: \(url.path) is from a different run (\(saved.model), batch \(saved.batchSize), "
                         + "\(saved.epochs) epochs, lr \(saved.learningRate), seed \(saved.seed), \(saved.trainCount) images); "
                         + "this run asks for \(config.model), batch \(config.batchSize), \(config.epochs) epochs, "
                         + "lr \(config.learningRate), seed \(config.seed), \(trainCount) images (or different data, "
                         + "normalisation, augmentation, warm-up or shortcut). Resume with the same options, or use another --out.",
                         command: nil)
    }
    try model.loadStateDict(contents.tensors.filter { !$0.key.hasPrefix("optimizer.") })
    var state: [Int: [String: Tensor]] = [:]
    for (i, (name, _)) in parameters.enumerated() {
        if let b = contents.tensors["optimizer.\(name).momentum_buffer"] { state[i] = ["momentum_buffer": b] }
    }
    optimizer.loadStateTensors(state)
    optimizer.stepCount = saved.step
    return saved
}

// MARK: - Logs and plots

func writeLog(_ curve: [CurvePoint], to url: URL) throws {
    var s = "epoch,step,learning_rate,train_loss,train_error,test_error,seconds,images_per_sec\n"
    for p in curve {
        s += String(format: "%.4f,%d,%g,%.6f,%.6f,%@,%.1f,%.1f\n", p.epoch, p.step, p.learningRate, p.trainLoss, p.trainError,
                    p.testError.map { String(format: "%.6f", $0) } ?? "", p.seconds, p.imagesPerSecond)
    }
    try s.write(to: url, atomically: true, encoding: .utf8)
}

func curvePanel(title: String, _ curve: [CurvePoint], color: String = SVGPlot.palette[0]) -> PlotPanel {
    PlotPanel(title: title, xLabel: "epoch", yLabel: "error (%)", series: [
        PlotSeries(label: "train error", color: color, dashed: true, lineWidth: 1.2, points: curve.map { ($0.epoch, 100 * $0.trainError) }),
        PlotSeries(label: "test error", color: color, lineWidth: 2.5, markers: true, points: curve.compactMap { p in p.testError.map { (p.epoch, 100 * $0) } }),
    ])
}
