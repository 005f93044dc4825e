// `resnet`: train, evaluate and run the networks of He et al. 2015 (see `resnet --help`).
import Foundation
import Residual


let trainOptions: [Option] = [
    Option(name: "model", value: "NAME", help: "Zoo model (`resnet zoo` lists them), or any CIFAR depth 6n+2 (resnet8, plain14).",
           defaultValue: "resnet20"),
    Option(name: "data", value: "DIR", help: "CIFAR-10 (cifar-10-batches-bin/ or cifar-10-binary.tar.gz) or IDX files (MNIST layout); default: the bundled Fashion-MNIST."),
    Option(name: "epochs", value: "N", help: "Epochs; the learning rate drops 10x at 50% and 75% of the run.", defaultValue: "3"),
    Option(name: "batch-size", value: "N", help: "Mini-batch size.", defaultValue: "128"),
    Option(name: "lr", value: "RATE", help: "Initial learning rate.", defaultValue: "0.1"),
    Option(name: "threads", value: "N", help: "Worker threads (default: all cores)."),
    Option(name: "warmup", value: "none|paper|linear:STEPS", help: "Start of the run: none; paper = lr/10 until the training error of the last 10 batches is below 80 % (He et al. 4.2, their ResNet-110 recipe); linear:STEPS = from 0 to lr over STEPS steps (not in the paper).", defaultValue: "none"),
    Option(name: "seed", value: "N", help: "Seed for weights, shuffling and augmentation.", defaultValue: "0"),
    Option(name: "out", value: "DIR", help: "Where log.csv, curves.svg, checkpoint.safetensors and model.safetensors go.", defaultValue: "out"),
    Option(name: "resume", value: nil, help: "Continue from DIR/checkpoint.safetensors exactly where it stopped (same options)."),
    Option(name: "shortcut", value: "A|B|C", help: "Shortcut option (default: the paper's for the model)."),
    Option(name: "normalization", value: "pixel|channel", help: "Per-pixel mean subtraction (the paper's) or per-channel mean/std.", defaultValue: "pixel"),
    Option(name: "zero-init-residual", value: nil, help: "Start the last BN of every residual branch at gamma = 0, so each block begins as its shortcut (Goyal et al. 2017, torchvision's zero_init_residual; not in the paper; no effect on plain nets)."),
    Option(name: "no-augment", value: nil, help: "No random crop or flip."),
    Option(name: "no-flip", value: nil, help: "Random crop only."),
    Option(name: "train-subset", value: "N", help: "Use only the first N training images."),
    Option(name: "test-subset", value: "N", help: "Use only the first N test images."),
    Option(name: "stop-after", value: "STEPS", help: "Stop after this many steps in total, saving a checkpoint as Ctrl-C does (to test --resume)."),
    Option(name: "skip-nonfinite", value: nil, help: "Skip a batch whose loss or gradients are NaN or Inf (counted in the log) instead of stopping."),
    Option(name: "json", value: nil, help: "End with one JSON object summarising the run."),
]

let commands: [Command] = [
    Command(name: "train", summary: "Train a zoo model with the paper's recipe (SGD 0.9, wd 1e-4, lr 0.1, multistep), showing progress, logging, checkpointing every epoch.",
            usage: "train [options]", options: trainOptions),
    Command(name: "eval", summary: "Test error, per-class error and confusion matrix of a checkpoint.",
            usage: "eval --checkpoint FILE [options]", options: [
                Option(name: "checkpoint", value: "FILE", help: "checkpoint.safetensors or model.safetensors written by `resnet train`."),
                Option(name: "model", value: "NAME", help: "Model name (default: read from the checkpoint)."),
                Option(name: "data", value: "DIR", help: "Dataset directory (default: the one the checkpoint was trained on)."),
                Option(name: "shortcut", value: "A|B|C", help: "Shortcut option (default: read from the checkpoint)."),
                Option(name: "test-subset", value: "N", help: "Use only the first N test images."),
                Option(name: "threads", value: "N", help: "Worker threads."),
                Option(name: "json", value: nil, help: "Print the result as JSON."),
            ]),
    Command(name: "infer", summary: "Eval-mode forward of the tensor `input` (N,C,H,W) of a safetensors file with torchvision-named weights; writes `logits`.",
            usage: "infer --model NAME --weights W.safetensors --input X.safetensors --output Y.safetensors", options: [
                Option(name: "model", value: "NAME", help: "Zoo model."),
                Option(name: "weights", value: "FILE", help: "State dict (torchvision naming) as safetensors."),
                Option(name: "input", value: "FILE", help: "Safetensors file with a tensor named `input`."),
                Option(name: "output", value: "FILE", help: "Where to write `logits`."),
                Option(name: "shortcut", value: "A|B|C", help: "Shortcut option (default: the paper's; torchvision's ResNets are B)."),
                Option(name: "v1.5", value: nil, help: "torchvision's stride placement (on the 3x3 of the bottleneck; torchvision's ResNet-50/101/152 need it)."),
                Option(name: "threads", value: "N", help: "Worker threads."),
            ]),
    Command(name: "degradation", summary: "The paper's Figure 6 in small: plain and residual nets at two depths, same recipe, error curves in one SVG.",
            usage: "degradation [options]", options: [
                Option(name: "depths", value: "A,B", help: "The two depths (6n+2).", defaultValue: "20,56"),
                Option(name: "data", value: "DIR", help: "Dataset directory (default: the bundled Fashion-MNIST)."),
                Option(name: "epochs", value: "N", help: "Epochs per network.", defaultValue: DegradationDefaults.epochs),
                Option(name: "train-subset", value: "N", help: "Use only the first N training images (default: all)."),
                Option(name: "test-subset", value: "N", help: "Use only the first N test images (default: all)."),
                Option(name: "batch-size", value: "N", help: "Mini-batch size.", defaultValue: "128"),
                Option(name: "lr", value: "RATE", help: "Initial learning rate.", defaultValue: "0.1"),
                Option(name: "warmup", value: "none|paper|linear:STEPS", help: "Start of every network's run: paper = lr/10 until the training error of the last 10 batches is below 80 % (He et al. 4.2); linear:STEPS = from 0 to lr over STEPS steps (not in the paper); none.", defaultValue: DegradationDefaults.warmup),
                Option(name: "paper-init", value: nil, help: "Start every BN at gamma = 1, as the paper does. By default the last BN of each residual branch starts at gamma = 0, so each block begins as its shortcut (Goyal et al. 2017, torchvision's zero_init_residual; not in the paper; plain nets have no such branch): with the paper's init ResNet-56 does not yet train lower than ResNet-20 within this budget (docs/Experiments.md)."),
                Option(name: "threads", value: "N", help: "Worker threads."),
                Option(name: "seed", value: "N", help: "Seed.", defaultValue: "0"),
                Option(name: "out", value: "DIR", help: "Output directory.", defaultValue: "out/degradation"),
                Option(name: "resume", value: nil, help: "Continue an interrupted run (finished networks are read back from their checkpoints)."),
                Option(name: "json", value: nil, help: "End with one JSON object: each network's final errors and times."),
            ]),
    Command(name: "zoo", summary: "The model zoo: every network of the paper with parameters and multiply-adds computed from the built model.",
            usage: "zoo [--shortcut A|B|C] [--v1.5] [--json] [--step NAME [--batch N]]", options: [
                Option(name: "shortcut", value: "A|B|C", help: "Shortcut option for the residual nets (default: the paper's per model)."),
                Option(name: "v1.5", value: nil, help: "torchvision's stride placement for the bottleneck nets."),
                Option(name: "json", value: nil, help: "Print a JSON array of {name, params, macs, input}."),
                Option(name: "step", value: "NAME", help: "Instead: time one forward+backward step of NAME and report peak memory."),
                Option(name: "batch", value: "N", help: "Batch size for --step.", defaultValue: "2"),
                Option(name: "threads", value: "N", help: "Worker threads."),
            ]),
]

func topHelp() -> String {
    var s = "resnet: the networks of \"Deep Residual Learning for Image Recognition\" (He et al. 2015) in pure Swift.\n\nUsage: resnet <command> [options]\n\nCommands:\n"
    for c in commands { s += "  \(c.name.padding(toLength: 12, withPad: " ", startingAt: 0))\(c.summary)\n" }
    s += "\n`resnet <command> --help` describes each command's options. Start with `resnet train`: ResNet-20 on the\nbundled Fashion-MNIST.\n"
    return s
}

func shortcutOption(_ o: ParsedOptions) throws -> ShortcutOption? {
    guard let s = try o.choice("shortcut", ["A", "B", "C", "a", "b", "c"]) else { return nil }
    return ShortcutOption(rawValue: s.uppercased())
}

func run() throws -> Int32 {
    let args = Array(CommandLine.arguments.dropFirst())
    // No command: the overview (the main job is `resnet train`; training is never started by accident).
    guard let first = args.first else { say(topHelp()); return 0 }
    if first == "--help" || first == "-h" || first == "help" { say(topHelp()); return 0 }
    guard let command = commands.first(where: { $0.name == first }) else {
        throw UsageError(message: "unknown command '\(first)'", command: nil)
    }
    let o = try ParsedOptions(Array(args.dropFirst()), for: command)
    if o.flag("help") { say(command.help); return 0 }
    if let t = try o.int("threads", range: 1...256) { Threading.threadCount = t }
    switch command.name {
    case "train": return try trainCommand(o)
    case "eval": return try evalCommand(o)
    case "infer": return try inferCommand(o)
    case "degradation": return try degradationCommand(o)
    default: return try zooCommand(o)
    }
}

do {
    exit(try run())
} catch let e as UsageError {
    printError("resnet: \(e.message)")
    printError(e.command.map { "\n" + $0.help } ?? "\n" + topHelp())
    exit(2)
} catch {
    printError("resnet: error: \(error)")
    exit(1)
}
