"""End-to-end check against real torchvision models at full size (not run in CI: it needs PyTorch).

For each case: build the torchvision model (random weights from torchvision's own initialisation,
then random batch-norm weights, biases and running statistics), save its state dict with the
`safetensors` library, save a random 224x224 input the same way, run
`swift run -c release resnet infer` on the two files, and compare the logits Swift wrote with
torchvision's (computed in float64 from the same stored weights; for F16/BF16 files, from the
rounded weights). Passes when every case is within 1e-4 relative error (max-abs error over max-abs
value). Then checks that a state dict with a missing, an extra or a mis-shaped tensor makes
`resnet infer` fail with a message that names the tensor (and both shapes).

    scripts/check_torchvision.sh                 # the default cases
    scripts/check_torchvision.sh --all           # also ResNet-101/152 and plain nets
    scripts/check_torchvision.sh --only resnet50_v1.5_B
"""
import argparse
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4


class ZeroPadShortcut(torch.nn.Module):
    """Option A (He et al. 3.3): stride-s subsampling and zero-padded channels, no parameters."""
    def __init__(self, stride, extra):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def blocks(model):
    return [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]


def build(depth, shortcut, v15, seed):
    torch.manual_seed(seed)
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    bottleneck = depth >= 50
    for b in blocks(model):
        first = b.conv1
        cin = first.in_channels
        cout = (b.conv3 if bottleneck else b.conv2).out_channels
        stride = (b.conv2.stride if bottleneck else b.conv1.stride)[0]
        if bottleneck and not v15 and stride != 1:
            # The paper's placement ("v1"): the stride on the first 1x1, not on the 3x3.
            b.conv1.stride, b.conv2.stride = (stride, stride), (1, 1)
        if shortcut == "A" and b.downsample is not None:
            b.downsample = ZeroPadShortcut(stride, cout - cin)
        elif shortcut == "C" and b.downsample is None:
            b.downsample = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, bias=False), torch.nn.BatchNorm2d(cout))
            torch.nn.init.kaiming_normal_(b.downsample[0].weight, mode="fan_out", nonlinearity="relu")
    # Random batch-norm parameters and statistics (torchvision initialises them to 1, 0, 0, 1).
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c) * 0.1)
                m.running_mean.copy_(torch.randn(c) * 0.1)
                m.running_var.copy_(torch.rand(c) * 1.5 + 0.5)
                m.num_batches_tracked.fill_(int(torch.randint(0, 10_000, ())))
    return model.eval()


def plain(depth, seed):
    """A plain net in torchvision's layout: the blocks without the shortcut addition (the zoo's
    `plainNN`, same parameter names minus `downsample`)."""
    model = build(depth, "A", True, seed)

    def forward_basic(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)))

    def forward_bottleneck(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)))

    for b in blocks(model):
        b.downsample = None
        b.forward = forward_bottleneck.__get__(b) if depth >= 50 else forward_basic.__get__(b)
    return model


CASES = [
    # name, zoo model, builder, resnet infer flags, dtype of the stored floats, in the default set?
    ("resnet18_B", "resnet18", lambda: build(18, "B", True, 1), ["--shortcut", "B"], torch.float32, True),
    ("resnet18_A", "resnet18", lambda: build(18, "A", True, 2), ["--shortcut", "A"], torch.float32, True),
    ("resnet18_C", "resnet18", lambda: build(18, "C", True, 3), ["--shortcut", "C"], torch.float32, True),
    ("resnet34_B", "resnet34", lambda: build(34, "B", True, 4), ["--shortcut", "B"], torch.float32, True),
    ("resnet50_v1.5_B", "resnet50", lambda: build(50, "B", True, 5), ["--shortcut", "B", "--v1.5"], torch.float32, True),
    ("resnet50_v1_B", "resnet50", lambda: build(50, "B", False, 6), ["--shortcut", "B"], torch.float32, True),
    ("resnet50_v1.5_C", "resnet50", lambda: build(50, "C", True, 7), ["--shortcut", "C", "--v1.5"], torch.float32, True),
    ("resnet50_v1.5_B_f16", "resnet50", lambda: build(50, "B", True, 8), ["--v1.5"], torch.float16, True),
    ("resnet50_v1.5_B_bf16", "resnet50", lambda: build(50, "B", True, 9), ["--v1.5"], torch.bfloat16, True),
    ("resnet18_B_f64", "resnet18", lambda: build(18, "B", True, 10), ["--shortcut", "B"], torch.float64, True),
    ("resnet101_v1.5_B", "resnet101", lambda: build(101, "B", True, 11), ["--v1.5"], torch.float32, False),
    ("resnet152_v1.5_B", "resnet152", lambda: build(152, "B", True, 12), ["--v1.5"], torch.float32, False),
    ("plain18", "plain18", lambda: plain(18, 13), [], torch.float32, False),
    ("plain50_v1.5", "plain50", lambda: plain(50, 14), ["--v1.5"], torch.float32, False),
]


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def infer(args, work, name, weights, x, flags):
    inp, out = os.path.join(work, f"{name}.input.safetensors"), os.path.join(work, f"{name}.logits.safetensors")
    save_file({"input": x}, inp)
    cmd = ["swift", "run", "-c", "release", "resnet", "infer", "--model", args_model(name), "--weights", weights,
           "--input", inp, "--output", out] + flags
    start = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    return r, out, time.time() - start


def args_model(name):
    return next(c[1] for c in CASES if c[0] == name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--work", default=os.path.join(ROOT, "scripts", ".torchvision-check"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print("building resnet (release)...", flush=True)
    subprocess.run(["swift", "build", "-c", "release", "--product", "resnet"], cwd=ROOT, check=True)
    failures = []
    print(f"{'case':24} {'dtype':9} {'file MB':>8} {'swift vs fp64':>14} {'torch fp32 vs fp64':>19} {'|logits|max':>11} {'infer s':>8}")
    for name, zoo, make, flags, dtype, default in CASES:
        if args.only and name not in args.only:
            continue
        if not args.only and not (default or args.all):
            continue
        model = make()
        state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
        weights = os.path.join(args.work, f"{name}.safetensors")
        save_file(state, weights, metadata={"format": "pt"})
        # The reference: the stored (possibly rounded) weights, in float64.
        model.load_state_dict({k: v.to(torch.float64) if v.is_floating_point() else v for k, v in state.items()})
        gen = torch.Generator().manual_seed(sum(name.encode()))
        x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
        with torch.no_grad():
            ref = model.double()(x.double())
            fp32 = model.float()(x)
        r, out, seconds = infer(args, args.work, name, weights, x, flags)
        if r.returncode != 0:
            print(f"{name}: resnet infer failed ({r.returncode}): {r.stderr.strip()[-400:]}")
            failures.append(name)
            continue
        logits = load_file(out)["logits"].double()
        e, e32 = rel(logits, ref), rel(fp32.double(), ref)
        mb = os.path.getsize(weights) / 1e6
        print(f"{name:24} {str(dtype).replace('torch.', ''):9} {mb:8.1f} {e:14.2e} {e32:19.2e} {ref.abs().max().item():11.3g} {seconds:8.1f}",
              flush=True)
        if not e < TOLERANCE:
            failures.append(name)
        os.remove(weights)

    # Bad state dicts: the error names the tensor (and both shapes for a mis-shaped one).
    model = build(18, "B", True, 20)
    x = torch.randn(1, 3, 64, 64)
    good = {k: v.contiguous() for k, v in model.state_dict().items()}
    bad = {
        "missing": ({k: v for k, v in good.items() if k != "layer3.1.bn2.running_var"}, ["layer3.1.bn2.running_var"]),
        "extra": (dict(good, **{"layer5.0.conv1.weight": torch.zeros(3, 3)}), ["layer5.0.conv1.weight"]),
        "misshaped": (dict(good, **{"layer2.0.conv2.weight": torch.zeros(128, 128, 3, 1)}),
                      ["layer2.0.conv2.weight", "[128, 128, 3, 1]", "[128, 128, 3, 3]"]),
    }
    for kind, (state, needles) in bad.items():
        path = os.path.join(args.work, f"bad_{kind}.safetensors")
        save_file(state, path)
        r, _, _ = infer(args, args.work, "resnet18_B", path, x, ["--shortcut", "B"])
        ok = r.returncode == 1 and all(n in r.stderr for n in needles)
        print(f"bad state dict ({kind}): exit {r.returncode}, {'names it' if ok else 'WRONG'}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ''}")
        if not ok:
            failures.append(f"bad_{kind}")
        os.remove(path)
    print("FAILED: " + ", ".join(failures) if failures else f"all cases within {TOLERANCE:g}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
