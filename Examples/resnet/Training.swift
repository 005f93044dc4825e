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
    var threads: Int?
    var seed: UInt64 = 0
    var output = "out"
    var resume = false
    var shortcut: ShortcutOption?
    var trainLimit: Int?
    var testLimit: Int?
    /// Training-error points per epoch for the curves (besides the end-of-epoch test error).
    var pointsPerEpoch = 4
    var label: String?
}

/// One point of the error curves.
struct CurvePoint: Codable {
    var epoch: Double          // fractional epoch
    var step: Int
    var learningRate: Float
    var trainLoss: Double
    var trainError: Double
    var testError: Double?
    var seconds: Double
    var imagesPerSecond: Double
}

/// What a checkpoint stores besides tensors, so a resumed run continues exactly.
struct Progress: Codable {
    var format = "residual-train-1"
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
    var elapsed = 0.0
}

struct TrainResult {
    var finalTestError: Double
    var finalTrainError: Double
    var imagesPerSecond: Double
    var wallSeconds: Double
    var curve: [CurvePoint]
}

/// Set by SIGINT; the loop saves a checkpoint at the next step boundary and exits.
let interrupted = Atomic<Bool>(false)
nonisolated(unsafe) var signalSource: DispatchSourceSignal?

func installInterruptHandler() {
    signal(SIGINT, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
    source.setEventHandler { interrupted.store(true, ordering: .relaxed) }
    source.resume()
    signalSource = source
}

func loadDatasets(_ config: TrainConfig) throws -> (train: Dataset, test: Dataset, name: String) {
    var train: Dataset, test: Dataset, name: String
    if let dir = config.dataDirectory {
        let url = URL(fileURLWithPath: dir)
        train = try Dataset.load(directory: url, train: true)
        test = try Dataset.load(directory: url, train: false)
        name = url.lastPathComponent
    } else {
        train = try Dataset.fashionMNIST(train: true)
        test = try Dataset.fashionMNIST(train: false)
        name = "Fashion-MNIST (bundled)"
    }
    if let n = config.trainLimit { train = train.prefix(n) }
    if let n = config.testLimit { test = test.prefix(n) }
    return (train, test, name)
}

/// Test error, per-class error and confusion matrix (rows: true class, columns: predicted), in eval mode.
func evaluate(_ model: any Layer, _ loader: BatchLoader) -> (error: Double, perClass: [Double], confusion: [[Int]]) {
    let classes = loader.dataset.classNames.count
    var confusion = [[Int]](repeating: [Int](repeating: 0, count: classes), count: classes)
    model.eval()
    defer { model.train() }
    for batch in loader.batches(epoch: 0) {
        let logits = withoutTape { model(batch.images) }
        let c = logits.shape[1]
        logits.withUnsafeBufferPointer { p in
            for (i, label) in batch.labels.enumerated() {
                var best = 0
                for j in 1..<c where p[i * c + j] > p[i * c + best] { best = j }
                confusion[label][best] += 1
            }
        }
    }
    let total = confusion.joined().reduce(0, +)
    let correct = (0..<classes).reduce(0) { $0 + confusion[$1][$1] }
    let perClass = (0..<classes).map { k -> Double in
        let n = confusion[k].reduce(0, +)
        return n == 0 ? 0 : 1 - Double(confusion[k][k]) / Double(n)
    }
    return (total == 0 ? 0 : 1 - Double(correct) / Double(total), perClass, confusion)
}

/// The paper's recipe: SGD with momentum 0.9, weight decay 1e-4, learning rate 0.1 divided by 10 at
/// 50 % and 75 % of the run (32k and 48k of 64k iterations in the paper), batch 128.
func train(_ config: TrainConfig, quiet: Bool = false) throws -> TrainResult {
    if let t = config.threads { Threading.threadCount = t }
    let out = URL(fileURLWithPath: config.output)
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
    let (trainSet, testSet, dataName) = try loadDatasets(config)
    let prep = Preprocessing(fitting: trainSet)
    let trainLoader = BatchLoader(trainSet, batchSize: config.batchSize, shuffle: true, augment: true,
                                  preprocessing: prep, seed: config.seed)
    let testLoader = BatchLoader(testSet, batchSize: 500, shuffle: false, augment: false, preprocessing: prep)
    let options = Zoo.Options(shortcut: config.shortcut, classes: trainSet.classNames.count,
                              inputChannels: trainSet.channels, seed: config.seed)
    guard let model = Zoo.make(config.model, options: options) else {
        throw UsageError(message: "unknown model '\(config.model)'; `resnet zoo` lists them", command: nil)
    }
    let parameters = model.namedParameters()
    let optimizer = SGD(parameters.map(\.1), learningRate: config.learningRate, momentum: config.momentum,
                        weightDecay: config.weightDecay)
    let stepsPerEpoch = trainLoader.batchesPerEpoch
    let schedule = MultiStepSchedule.paper(base: config.learningRate, totalSteps: config.epochs * stepsPerEpoch)
    let checkpointURL = out.appendingPathComponent("checkpoint.safetensors")
    var progress = Progress(model: config.model, seed: config.seed, epochs: config.epochs, batchSize: config.batchSize,
                            learningRate: config.learningRate, trainCount: trainSet.count)

    if config.resume, FileManager.default.fileExists(atPath: checkpointURL.path) {
        let contents = try SafeTensors.read(checkpointURL)
        guard let json = contents.metadata["residual.progress"],
              let saved = try? JSONDecoder().decode(Progress.self, from: Data(json.utf8)) else {
            throw CheckpointError(.corruptHeader, "\(checkpointURL.path): not a training checkpoint (no progress record)")
        }
        guard saved.model == config.model, saved.batchSize == config.batchSize, saved.trainCount == trainSet.count,
              saved.seed == config.seed, saved.epochs == config.epochs else {
            throw UsageError(message: "--resume: the checkpoint is for \(saved.model), batch \(saved.batchSize), \(saved.epochs) epochs, seed \(saved.seed), \(saved.trainCount) images; this run asks for \(config.model), batch \(config.batchSize), \(config.epochs) epochs, seed \(config.seed), \(trainSet.count) images", command: nil)
        }
        var modelTensors = contents.tensors.filter { !$0.key.hasPrefix("optimizer.") }
        modelTensors = modelTensors.filter { !$0.key.hasPrefix("__") }
        try model.loadStateDict(modelTensors)
        var state: [Int: [String: Tensor]] = [:]
        for (i, (name, _)) in parameters.enumerated() {
            if let b = contents.tensors["optimizer.\(name).momentum_buffer"] { state[i] = ["momentum_buffer": b] }
        }
        optimizer.loadStateTensors(state)
        optimizer.stepCount = saved.step
        progress = saved
        if !quiet { say("Resuming \(config.model) at epoch \(saved.epoch + 1), batch \(saved.batch), step \(saved.step)") }
    }

    func saveCheckpoint() throws {
        var tensors = model.stateDict()
        let state = optimizer.stateTensors()
        for (i, (name, _)) in parameters.enumerated() {
            if let b = state[i]?["momentum_buffer"] { tensors.append(("optimizer.\(name).momentum_buffer", b)) }
        }
        let json = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
        try SafeTensors.write(tensors, metadata: ["residual.progress": json, "model": config.model], to: checkpointURL)
    }

    if !quiet {
        say("Training \(config.model) (\(model.parameterCount) parameters) on \(dataName): \(trainSet.count) training, \(testSet.count) test images, \(trainSet.channels)x\(trainSet.height)x\(trainSet.width) -> \(prep.size)x\(prep.size)")
        say("SGD momentum \(config.momentum), weight decay \(config.weightDecay), lr \(config.learningRate) /10 at steps \(schedule.milestones.map(String.init).joined(separator: ", ")) of \(config.epochs * stepsPerEpoch); batch \(config.batchSize), \(Threading.threadCount) threads, seed \(config.seed)")
    }
    let line = ProgressLine()
    let windowSize = max(1, stepsPerEpoch / max(1, config.pointsPerEpoch))
    let start = monotonicSeconds() - progress.elapsed
    var lastTestError = progress.curve.last(where: { $0.testError != nil })?.testError ?? 1
    var rateStart = monotonicSeconds(), rateImages = 0
    model.train()
    while progress.epoch < config.epochs {
        let epoch = progress.epoch
        for batch in trainLoader.batches(epoch: epoch, startingAt: progress.batch) {
            let lr = schedule.learningRate(step: progress.step)
            optimizer.learningRate = lr
            let tape = Tape()
            var logits = Tensor(0)
            let loss = tape.record { () -> Tensor in
                logits = model(batch.images)
                return softmaxCrossEntropy(logits: logits, labels: batch.labels)
            }
            tape.backward(loss)
            optimizer.step()
            optimizer.zeroGrad()
            let errors = countErrors(logits, batch.labels)
            progress.step += 1
            progress.batch = batch.index + 1
            progress.windowLoss += Double(loss.scalar) * Double(batch.labels.count)
            progress.windowErrors += errors; progress.windowSeen += batch.labels.count
            progress.epochErrors += errors; progress.epochSeen += batch.labels.count
            rateImages += batch.labels.count
            let now = monotonicSeconds()
            let rate = Double(rateImages) / max(now - rateStart, 1e-9)
            let done = Double(progress.step) / Double(config.epochs * stepsPerEpoch)
            let eta = (now - start) / max(done, 1e-9) * (1 - done)
            line.update(String(format: "%@epoch %d/%d  step %d/%d  loss %.4f  train err %.2f%%  lr %.4g  %.0f img/s  ETA %@",
                               config.label.map { "[\($0)] " } ?? "", epoch + 1, config.epochs, batch.index + 1, stepsPerEpoch,
                               progress.windowLoss / Double(max(progress.windowSeen, 1)),
                               100 * Double(progress.windowErrors) / Double(max(progress.windowSeen, 1)), lr, rate, formatDuration(eta)))
            let endOfEpoch = batch.index + 1 == stepsPerEpoch
            if progress.windowSeen > 0 && (progress.step % windowSize == 0 || endOfEpoch) {
                var point = CurvePoint(epoch: Double(epoch) + Double(batch.index + 1) / Double(stepsPerEpoch), step: progress.step,
                                       learningRate: lr, trainLoss: progress.windowLoss / Double(progress.windowSeen),
                                       trainError: Double(progress.windowErrors) / Double(progress.windowSeen), testError: nil,
                                       seconds: now - start, imagesPerSecond: rate)
                if endOfEpoch {
                    point.testError = evaluate(model, testLoader).error
                    lastTestError = point.testError!
                }
                progress.curve.append(point)
                progress.windowLoss = 0; progress.windowErrors = 0; progress.windowSeen = 0
            }
            if interrupted.load(ordering: .relaxed) {
                progress.elapsed = monotonicSeconds() - start
                if progress.batch == stepsPerEpoch { progress.epoch += 1; progress.batch = 0; progress.epochErrors = 0; progress.epochSeen = 0 }
                try saveCheckpoint()
                line.finish()
                say("Interrupted: checkpoint saved to \(checkpointURL.path) (step \(progress.step)); continue with --resume")
                exit(130)
            }
        }
        let trainError = Double(progress.epochErrors) / Double(max(progress.epochSeen, 1))
        line.finish(String(format: "%@epoch %d/%d  train err %.2f%%  test err %.2f%%  %.0f img/s  %@ elapsed",
                           config.label.map { "[\($0)] " } ?? "", epoch + 1, config.epochs, 100 * trainError, 100 * lastTestError,
                           progress.curve.last?.imagesPerSecond ?? 0, formatDuration(monotonicSeconds() - start)))
        progress.epoch += 1
        progress.batch = 0
        progress.epochErrors = 0; progress.epochSeen = 0
        progress.elapsed = monotonicSeconds() - start
        rateStart = monotonicSeconds(); rateImages = 0
        try saveCheckpoint()
        try writeLog(progress.curve, to: out.appendingPathComponent("log.csv"))
        try SVGPlot.render([curvePanel(title: config.model, progress.curve)]).write(
            to: out.appendingPathComponent("curves.svg"), atomically: true, encoding: .utf8)
    }
    try model.save(to: out.appendingPathComponent("model.safetensors"), metadata: ["model": config.model])
    let wall = monotonicSeconds() - start
    let trainPoints = progress.curve.filter { $0.epoch > Double(config.epochs) - 1 }
    let finalTrain = trainPoints.isEmpty ? 1 : trainPoints.map(\.trainError).reduce(0, +) / Double(trainPoints.count)
    let rates = progress.curve.map(\.imagesPerSecond).filter { $0 > 0 }
    return TrainResult(finalTestError: lastTestError, finalTrainError: finalTrain,
                       imagesPerSecond: rates.isEmpty ? 0 : rates.reduce(0, +) / Double(rates.count),
                       wallSeconds: wall, curve: progress.curve)
}

func countErrors(_ logits: Tensor, _ labels: [Int]) -> Int {
    let c = logits.shape[1]
    return logits.withUnsafeBufferPointer { p in
        var errors = 0
        for (i, label) in labels.enumerated() {
            var best = 0
            for j in 1..<c where p[i * c + j] > p[i * c + best] { best = j }
            if best != label { errors += 1 }
        }
        return errors
    }
}

func writeLog(_ curve: [CurvePoint], to url: URL) throws {
    var s = "epoch,step,learning_rate,train_loss,train_error,test_error,seconds,images_per_sec\n"
    for p in curve {
        s += String(format: "%.4f,%d,%g,%.5f,%.5f,%@,%.1f,%.1f\n", p.epoch, p.step, p.learningRate, p.trainLoss, p.trainError,
                    p.testError.map { String(format: "%.5f", $0) } ?? "", p.seconds, p.imagesPerSecond)
    }
    try s.write(to: url, atomically: true, encoding: .utf8)
}

func curvePanel(title: String, _ curve: [CurvePoint], color: String = SVGPlot.palette[0]) -> PlotPanel {
    PlotPanel(title: title, xLabel: "epoch", yLabel: "error (%)", series: [
        PlotSeries(label: "train error", color: color, dashed: true, lineWidth: 1.2, points: curve.map { ($0.epoch, 100 * $0.trainError) }),
        PlotSeries(label: "test error", color: color, lineWidth: 2.5, points: curve.compactMap { p in p.testError.map { (p.epoch, 100 * $0) } }),
    ])
}
