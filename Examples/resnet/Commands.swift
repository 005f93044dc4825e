import Foundation
import Residual

func trainCommand(_ o: ParsedOptions) throws -> Int32 {
    var c = TrainConfig()
    c.model = o.string("model")!.lowercased()
    guard Zoo.entry(c.model) != nil else {
        throw UsageError(message: "--model: unknown model '\(c.model)'; choose one of \(Zoo.names.joined(separator: ", "))", command: o.command)
    }
    c.dataDirectory = o.string("data")
    c.epochs = try o.int("epochs", range: 1...10_000)!
    c.batchSize = try o.int("batch-size", range: 1...65_536)!
    c.learningRate = Float(try o.double("lr", range: 0...100)!)
    c.seed = UInt64(try o.int("seed")!)
    c.output = o.string("out")!
    c.resume = o.flag("resume")
    c.shortcut = try shortcutOption(o)
    c.trainLimit = try o.int("train-subset", range: 1...Int.max)
    c.testLimit = try o.int("test-subset", range: 1...Int.max)
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
    guard let name = o.string("model") ?? contents.metadata["model"] else {
        throw UsageError(message: "the checkpoint does not name its model; pass --model", command: o.command)
    }
    var config = TrainConfig()
    config.dataDirectory = o.string("data")
    let (trainSet, testSet, dataName) = try loadDatasets(config)
    guard let model = Zoo.make(name, options: .init(shortcut: try shortcutOption(o), classes: testSet.classNames.count,
                                                    inputChannels: testSet.channels)) else {
        throw UsageError(message: "unknown model '\(name)'", command: o.command)
    }
    try model.loadStateDict(contents.tensors.filter { !$0.key.hasPrefix("optimizer.") })
    let loader = BatchLoader(testSet, batchSize: 500, shuffle: false, augment: false, preprocessing: Preprocessing(fitting: trainSet))
    let r = evaluate(model, loader)
    if o.flag("json") {
        let object: [String: Any] = ["model": name, "test_error": r.error, "per_class_error": r.perClass, "confusion": r.confusion]
        say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
        return 0
    }
    say("\(name) on \(dataName) test set (\(testSet.count) images): test error \(String(format: "%.2f", 100 * r.error))%\n")
    say("Per-class error:")
    for (k, e) in r.perClass.enumerated() {
        say("  \(testSet.classNames[k].padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(format: "%6.2f", 100 * e))%")
    }
    say("\nConfusion matrix (rows: true class, columns: predicted):")
    say("     " + (0..<r.confusion.count).map { String(format: "%5d", $0) }.joined())
    for (k, row) in r.confusion.enumerated() { say(String(format: "%3d  ", k) + row.map { String(format: "%5d", $0) }.joined()) }
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
    try model.loadStateDict(state)
    model.eval()
    let logits = withoutTape { model(x) }
    try SafeTensors.write([("logits", logits)], to: URL(fileURLWithPath: output))
    say("wrote logits \(describe(logits.shape)) to \(output)")
    return 0
}

func zooCommand(_ o: ParsedOptions) throws -> Int32 {
    let shortcut = try shortcutOption(o)
    let placement: StridePlacement = o.flag("v1.5") ? .middleConvolution : .firstConvolution
    var records: [[String: Any]] = []
    var rows: [String] = []
    rows.append("model        depth  block       shortcut  params        mult-adds   input      paper")
    for e in Zoo.entries {
        let model = Zoo.make(e.name, options: .init(shortcut: shortcut, stridePlacement: placement))!
        let summary = ModelSummary(model, inputShape: e.input)
        let block = e.family == "cifar" || e.depth < 50 ? "basic" : "bottleneck"
        let sc = e.plain ? "none" : (shortcut ?? (e.family == "cifar" ? .a : ResNet.Depth(rawValue: e.depth)!.paperShortcut)).rawValue
        records.append(["name": e.name, "params": summary.totalParameters, "macs": summary.totalMACs, "input": e.input])
        rows.append(pad(e.name, 12) + pad(String(e.depth), 5, right: true) + "  " + pad(block, 10) + "  " + pad(sc, 8) + "  "
                    + pad(grouped(summary.totalParameters), 12, right: true) + String(format: "  %9.3fG   ", Double(summary.totalMACs) / 1e9)
                    + pad(e.input.map(String.init).joined(separator: "x"), 9) + "  " + e.source)
    }
    if o.flag("json") {
        say(String(decoding: try JSONSerialization.data(withJSONObject: records, options: [.sortedKeys]), as: UTF8.self))
    } else {
        say(rows.joined(separator: "\n"))
    }
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

func degradationCommand(_ o: ParsedOptions) throws -> Int32 {
    let depths = (o.string("depths") ?? "20,56").split(separator: ",").compactMap { Int($0) }
    guard depths.count == 2, depths.allSatisfy({ $0 >= 8 && ($0 - 2) % 6 == 0 }) else {
        throw UsageError(message: "--depths: two depths of the form 6n+2, e.g. 20,56", command: o.command)
    }
    let out = o.string("out")!
    var base = TrainConfig()
    base.dataDirectory = o.string("data")
    base.epochs = try o.int("epochs", range: 1...1000)!
    base.trainLimit = try o.int("train-subset", range: 100...Int.max)
    base.testLimit = try o.int("test-subset", range: 100...Int.max)
    base.batchSize = try o.int("batch-size", range: 1...65_536)!
    base.learningRate = Float(try o.double("lr", range: 0...100)!)
    base.seed = UInt64(try o.int("seed")!)
    base.pointsPerEpoch = 8
    installInterruptHandler()
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
        for p in r.curve { csv += "\(name),\(p.epoch),\(p.step),\(p.trainError),\(p.testError.map { String($0) } ?? "")\n" }
    }
    try csv.write(toFile: "\(out)/degradation.csv", atomically: true, encoding: .utf8)
    func panel(_ title: String, _ pair: [(String, TrainResult)]) -> PlotPanel {
        var series: [PlotSeries] = []
        for (i, (name, r)) in pair.enumerated() {
            let color = i == 0 ? "#e69f00" : "#d62728"
            series.append(PlotSeries(label: "\(name) train", color: color, dashed: true, lineWidth: 1.2, points: r.curve.map { ($0.epoch, 100 * $0.trainError) }))
            series.append(PlotSeries(label: "\(name) test", color: color, lineWidth: 2.5,
                                     points: r.curve.compactMap { p in p.testError.map { (p.epoch, 100 * $0) } }))
        }
        return PlotPanel(title: title, xLabel: "epoch", yLabel: "error (%)", series: series)
    }
    let allErrors = results.flatMap { $0.1.curve.flatMap { [$0.trainError] + ($0.testError.map { [$0] } ?? []) } }
    var left = panel("plain", Array(results[0..<2])), right = panel("ResNet", Array(results[2..<4]))
    let top = min(100, (allErrors.max() ?? 1) * 100 * 1.05)
    left.yRange = 0...top; right.yRange = 0...top
    try SVGPlot.render([left, right], title: "Training on \(base.dataDirectory ?? "Fashion-MNIST"): dashed = training error, bold = test error")
        .write(toFile: "\(out)/degradation.svg", atomically: true, encoding: .utf8)
    say("\nmodel        final train error   final test error")
    for (name, r) in results {
        say(pad(name, 12) + String(format: " %17.2f%% %17.2f%%", 100 * r.finalTrainError, 100 * r.finalTestError))
    }
    say("Figure: \(out)/degradation.svg, data: \(out)/degradation.csv")
    return 0
}
