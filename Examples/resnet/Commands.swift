import Foundation
import Residual

/// Options shared by `train` and `degradation`.
func trainConfig(_ o: ParsedOptions) throws -> TrainConfig {
    var c = TrainConfig()
    c.dataDirectory = o.string("data")
    c.epochs = try o.int("epochs", range: 1...10_000)!
    c.batchSize = try o.int("batch-size", range: 1...65_536)!
    c.learningRate = Float(try o.double("lr", range: 0...100)!)
    c.seed = UInt64(try o.int("seed")!)
    c.output = o.string("out")!
    c.resume = o.flag("resume")
    c.trainLimit = try o.int("train-subset", range: 1...Int.max)
    c.testLimit = try o.int("test-subset", range: 1...Int.max)
    if let w = o.string("warmup") {
        guard let warmup = Warmup(argument: w) else {
            throw UsageError(message: "--warmup: '\(w)' is not one of none, paper, linear:STEPS (STEPS >= 1)", command: o.command)
        }
        c.warmup = warmup
    }
    c.zeroInitResidual = o.flag("zero-init-residual")
    return c
}

func trainCommand(_ o: ParsedOptions) throws -> Int32 {
    var c = try trainConfig(o)
    c.model = o.string("model")!.lowercased()
    guard isKnownModel(c.model) else {
        throw UsageError(message: "--model: unknown model '\(c.model)'; choose one of \(Zoo.names.joined(separator: ", ")), "
                         + "or a CIFAR depth 6n+2 such as resnet8", command: o.command)
    }
    c.shortcut = try shortcutOption(o)
    c.normalization = Normalization(rawValue: try o.choice("normalization", Normalization.allCases.map(\.rawValue))!)!
    c.augment = !o.flag("no-augment")
    c.flip = !o.flag("no-flip")
    c.stopAfter = try o.int("stop-after", range: 1...Int.max)
    c.skipNonfinite = o.flag("skip-nonfinite")
    installInterruptHandler()
    let r = try train(c)
    say(String(format: "Final: test error %.2f%%, train error %.2f%% (last epoch), %.0f images/s, %@ wall; files in %@/",
               100 * r.finalTestError, 100 * r.finalTrainError, r.imagesPerSecond, formatDuration(r.wallSeconds), c.output))
    if o.flag("json") {
        let object: [String: Any] = ["model": c.model, "epochs": c.epochs, "final_test_error": r.finalTestError,
                                     "final_train_error": r.finalTrainError, "images_per_sec": r.imagesPerSecond,
                                     "wall_seconds": r.wallSeconds, "peak_rss_mb": peakResidentMB()]
        say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
    }
    return 0
}

func evalCommand(_ o: ParsedOptions) throws -> Int32 {
    guard let path = o.string("checkpoint") else { throw UsageError(message: "--checkpoint FILE is required", command: o.command) }
    let contents = try SafeTensors.read(URL(fileURLWithPath: path))
    let meta = contents.metadata
    guard let name = o.string("model")?.lowercased() ?? meta[MetadataKey.model] else {
        throw UsageError(message: "the checkpoint does not name its model; pass --model", command: o.command)
    }
    guard isKnownModel(name) else { throw UsageError(message: "--model: unknown model '\(name)'", command: o.command) }
    let shortcut = try shortcutOption(o) ?? meta[MetadataKey.shortcut].flatMap(ShortcutOption.init(rawValue:))
    let storedPrep = meta[MetadataKey.preprocessing].flatMap { try? JSONDecoder().decode(Preprocessing.self, from: Data($0.utf8)) }
    // The data it was trained on, unless told otherwise; the training set only if the checkpoint
    // lacks the normalisation statistics (a state dict from elsewhere).
    let (trainSet, testSet, dataName) = try loadDatasets(o.string("data") ?? meta[MetadataKey.data],
                                                         testLimit: try o.int("test-subset", range: 1...Int.max),
                                                         needTrain: storedPrep == nil)
    let prep = storedPrep ?? Preprocessing(fitting: trainSet!)
    try prep.check(for: testSet, file: path)
    guard let model = makeModel(name, options: .init(shortcut: shortcut, classes: testSet.classNames.count,
                                                     inputChannels: testSet.channels)) else {
        throw UsageError(message: "unknown model '\(name)'", command: o.command)
    }
    try model.loadStateDict(contents.tensors.filter { !$0.key.hasPrefix("optimizer.") })
    let loader = BatchLoader(testSet, batchSize: 500, shuffle: false, augment: false, preprocessing: prep)
    let r = evaluate(model, loader)
    if o.flag("json") {
        let object: [String: Any] = ["model": name, "test_images": testSet.count, "test_error": r.error,
                                     "per_class_error": r.perClass, "confusion": r.confusion, "classes": testSet.classNames]
        say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        return 0
    }
    say("\(name) on \(dataName) test set (\(testSet.count) images): test error \(String(format: "%.2f", 100 * r.error))%\n")
    say("Per-class error:")
    for (k, e) in r.perClass.enumerated() {
        say("  \(k)  \(pad(testSet.classNames[k], 14)) \(String(format: "%6.2f", 100 * e))%")
    }
    say("\nConfusion matrix (rows: true class, columns: predicted):")
    say("     " + (0..<r.confusion.count).map { String(format: "%6d", $0) }.joined())
    for (k, row) in r.confusion.enumerated() { say(String(format: "%3d  ", k) + row.map { String(format: "%6d", $0) }.joined()) }
    return 0
}

func inferCommand(_ o: ParsedOptions) throws -> Int32 {
    guard let name = o.string("model"), let weights = o.string("weights"), let input = o.string("input"),
          let output = o.string("output") else {
        throw UsageError(message: "--model, --weights, --input and --output are required", command: o.command)
    }
    guard Zoo.entry(name) != nil else { throw UsageError(message: "--model: unknown model '\(name)'", command: o.command) }
    let state = try SafeTensors.read(URL(fileURLWithPath: weights)).tensors
    guard let x = try SafeTensors.read(URL(fileURLWithPath: input)).tensors["input"], x.rank == 4 else {
        throw CheckpointError(.missing, "\(input): no 4-D tensor named 'input'")
    }
    let classes = state["fc.weight"]?.shape.first
    guard let model = Zoo.make(name, options: .init(shortcut: try shortcutOption(o),
                                                    stridePlacement: o.flag("v1.5") ? .middleConvolution : .firstConvolution,
                                                    classes: classes, inputChannels: x.shape[1])) else { return 1 }
    let shortcut = try shortcutOption(o)?.rawValue ?? "the paper's default"
    do {
        try model.loadStateDict(state)
    } catch {
        // The zoo defaults to the paper's shortcuts; torchvision's ResNets are option B (v1.5).
        guard error.message.contains("downsample") else { throw error }
        throw CheckpointError(error.kind, error.message + " (the model was built with shortcut option \(shortcut); "
            + "torchvision's ResNets need --shortcut B, and --v1.5 for ResNet-50/101/152)")
    }
    model.eval()
    let logits = withoutTape { model(x) }
    try SafeTensors.write([("logits", logits)], to: URL(fileURLWithPath: output))
    say("wrote logits \(describe(logits.shape)) to \(output)")
    return 0
}

func zooCommand(_ o: ParsedOptions) throws -> Int32 {
    let options = Zoo.Options(shortcut: try shortcutOption(o),
                              stridePlacement: o.flag("v1.5") ? .middleConvolution : .firstConvolution)
    if let name = o.string("step") { return try zooStep(name, batch: try o.int("batch", range: 1...4096) ?? 2, options) }
    let records = Zoo.listing(options)
    if o.flag("json") {
        let json = records.map { r in
            "{\"name\":\"\(r.entry.name)\",\"params\":\(r.parameters),\"macs\":\(r.macs),"
                + "\"input\":[\(r.entry.input.map(String.init).joined(separator: ","))]}"
        }
        say("[" + json.joined(separator: ",") + "]")
    } else {
        say(Zoo.table(records))
        say("\nmult-adds: one per weight of every convolution and FC layer per output element, per image "
            + "(half of torch.utils.flop_counter's FLOPs); see docs/ModelZoo.md.")
    }
    return 0
}

/// One forward+backward step of a zoo model on random images at the paper's input size: times and
/// the process's peak resident memory (`getrusage`), e.g. `resnet zoo --step resnet1202 --batch 2`.
func zooStep(_ name: String, batch: Int, _ options: Zoo.Options) throws -> Int32 {
    guard let entry = Zoo.entry(name) else {
        throw UsageError(message: "--step: unknown model '\(name)'; choose one of \(Zoo.names.joined(separator: ", "))",
                         command: nil)
    }
    func peakMiB() -> Double {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024     // KiB on Linux
        #else
        getrusage(RUSAGE_SELF, &usage)
        return Double(usage.ru_maxrss) / 1_048_576  // bytes on macOS
        #endif
    }
    let before = peakMiB()
    var t = monotonicSeconds()
    let model = Zoo.make(name, options: options)!
    let build = monotonicSeconds() - t
    let afterBuild = peakMiB()
    let x = Tensor(randomNormal: [batch] + entry.input, seed: 1)
    let labels = (0..<batch).map { $0 % 10 }
    t = monotonicSeconds()
    let tape = Tape()
    let loss = tape.record { softmaxCrossEntropy(logits: model(x), labels: labels) }
    let forward = monotonicSeconds() - t
    tape.backward(loss)
    let total = monotonicSeconds() - t
    let gradients = model.parameters.filter { $0.grad != nil }.count
    say("\(name) (\(grouped(model.parameterCount)) parameters), batch \(batch) of \(entry.input.map(String.init).joined(separator: "x")), \(Threading.threadCount) threads")
    say(String(format: "build %.2f s; forward %.2f s; forward+backward %.2f s; loss %.4f; %d of %d parameters got gradients",
               build, forward, total, loss.scalar, gradients, model.parameters.count))
    say(String(format: "peak resident memory: %.0f MiB (%.0f MiB at start, %.0f MiB after building)",
               peakMiB(), before, afterBuild))
    return 0
}

func pad(_ s: String, _ n: Int, right: Bool = false) -> String {
    s.count >= n ? s : (right ? String(repeating: " ", count: n - s.count) + s : s + String(repeating: " ", count: n - s.count))
}

func grouped(_ n: Int) -> String {
    var s = String(n), out = ""
    while s.count > 3 { out = "," + s.suffix(3) + out; s = String(s.dropLast(3)) }
    return s + out
}

/// The defaults of `resnet degradation` (docs/Experiments.md says how they were chosen): every
/// training image (60,000 for Fashion-MNIST) for 3 epochs, the whole test set, and the residual
/// branches' last BN started at γ = 0 (`--paper-init` turns that off): with the paper's init
/// ResNet-56 is still behind ResNet-20 after a budget of well under an hour, in PyTorch too.
enum DegradationDefaults {
    static let epochs = "3", warmup = "none"
}

func degradationCommand(_ o: ParsedOptions) throws -> Int32 {
    let depths = (o.string("depths") ?? "20,56").split(separator: ",").compactMap { Int($0) }
    guard depths.count == 2, depths.allSatisfy({ $0 >= 8 && ($0 - 2) % 6 == 0 }), depths[0] < depths[1] else {
        throw UsageError(message: "--depths: two increasing depths of the form 6n+2, e.g. 20,56", command: o.command)
    }
    var base = try trainConfig(o)
    base.zeroInitResidual = !o.flag("paper-init")
    let out = base.output
    base.pointsPerEpoch = 8
    installInterruptHandler()
    let start = monotonicSeconds()
    var results: [(String, TrainResult)] = []
    let names = ["plain\(depths[0])", "plain\(depths[1])", "resnet\(depths[0])", "resnet\(depths[1])"]
    for name in names {
        var c = base
        c.model = name
        c.output = "\(out)/\(name)"
        c.label = name
        let r = try train(c)
        results.append((name, r))
    }
    // CSV of every curve point, and the Figure 6 layout: plain nets left, ResNets right;
    // thin dashed = training error, bold = test error.
    var csv = "model,epoch,step,train_error,test_error\n"
    for (name, r) in results {
        for p in r.curve {
            csv += "\(name),\(String(format: "%.4f", p.epoch)),\(p.step),\(String(format: "%.6f", p.trainError)),"
                + "\(p.testError.map { String(format: "%.6f", $0) } ?? "")\n"
        }
    }
    try csv.write(toFile: "\(out)/degradation.csv", atomically: true, encoding: .utf8)
    let dataName = base.dataDirectory.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "Fashion-MNIST"
    try degradationFigure(results, title: "\(dataName), \(base.trainLimit.map { "\($0) training images, " } ?? "")"
                          + "\(base.epochs) epochs\(base.zeroInitResidual ? ", residual branches' last BN γ = 0 at start" : "")"
                          + "\(base.warmup == .none ? "" : ", warm-up \(base.warmup)"): dashed = training error, bold = test error")
        .write(toFile: "\(out)/degradation.svg", atomically: true, encoding: .utf8)
    say("\nmodel        final train error   final test error   wall")
    for (name, r) in results {
        say(pad(name, 12) + String(format: " %16.2f%% %17.2f%%   ", 100 * r.finalTrainError, 100 * r.finalTestError)
            + formatDuration(r.wallSeconds))
    }
    let (p0, p1, r0, r1) = (results[0].1, results[1].1, results[2].1, results[3].1)
    say("Deeper plain net: training error \(p1.finalTrainError > p0.finalTrainError ? "higher" : "NOT higher") than the shallower "
        + "(degradation \(p1.finalTrainError > p0.finalTrainError ? "shown" : "not shown in this run")); deeper ResNet: "
        + "\(r1.finalTrainError < r0.finalTrainError ? "lower" : "NOT lower").")
    say("Figure: \(out)/degradation.svg, data: \(out)/degradation.csv")
    if o.flag("json") {
        let object: [String: Any] = [
            "wall_seconds": monotonicSeconds() - start,
            "models": results.map { name, r -> [String: Any] in
                ["model": name, "final_train_error": r.finalTrainError, "final_test_error": r.finalTestError,
                 "wall_seconds": r.wallSeconds, "images_per_sec": r.imagesPerSecond]
            },
        ]
        say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
    }
    return 0
}

/// Figure 6 of the paper, in small: plain nets in the left panel, residual nets in the right, the
/// shallower net orange and the deeper red (the paper's colours for 20 and 56 layers), training
/// error thin and dashed, test error bold, both panels on the same error scale.
func degradationFigure(_ results: [(String, TrainResult)], title: String) -> String {
    func panel(_ title: String, _ pair: ArraySlice<(String, TrainResult)>) -> PlotPanel {
        var series: [PlotSeries] = []
        for (i, (name, r)) in pair.enumerated() {
            let color = i == 0 ? "#e69f00" : "#d62728"
            series.append(PlotSeries(label: "\(name) train", color: color, dashed: true, lineWidth: 1.2,
                                     points: r.curve.map { ($0.epoch, 100 * $0.trainError) }))
            series.append(PlotSeries(label: "\(name) test", color: color, lineWidth: 2.8, markers: true,
                                     points: r.curve.compactMap { p in p.testError.map { (p.epoch, 100 * $0) } }))
        }
        return PlotPanel(title: title, xLabel: "epoch", yLabel: "error (%)", series: series)
    }
    // The scale of the later curve (after the first quarter), as the paper's 0-20 % axis: the
    // first points, near chance, would otherwise flatten everything else.
    let late = results.flatMap { _, r -> [Double] in
        let end = r.curve.last?.epoch ?? 1
        return r.curve.filter { $0.epoch >= end / 4 }.flatMap { [$0.trainError] + ($0.testError.map { [$0] } ?? []) }
    }
    let top = min(100, max(5, ((late.max() ?? 1) * 100 * 1.15 / 5).rounded(.up) * 5))
    var left = panel("plain", results[0..<2]), right = panel("ResNet", results[2..<4])
    left.yRange = 0...top; right.yRange = 0...top
    return SVGPlot.render([left, right], title: title)
}
