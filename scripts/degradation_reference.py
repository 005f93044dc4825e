"""PyTorch reference for `resnet degradation`: the same recipe, to tell an engine bug from the
recipe's own behaviour (docs/Experiments.md, "The PyTorch comparison").

Mirrors Examples/resnet: the first N Fashion-MNIST training images, per-pixel mean subtraction and
division by the per-channel deviation of the mean-subtracted pixels (ResidualData's `.perPixelMean`),
28x28 centred on a 32x32 canvas of zeros, 4-pixel zero padding + random 32x32 crop + horizontal
flip; CIFAR nets of He et al. 4.2 (3x3/16 conv, three stages of n basic blocks, option-A shortcuts:
stride-2 subsampling and zero channels split half before and half after; plain nets without
shortcuts), He normal (fan-in) convolutions, PyTorch's default Linear, BN momentum 0.1, eps 1e-5;
SGD momentum 0.9, weight decay 1e-4 on every parameter, batch 128 (last batch kept), lr 0.1 divided
by 10 at 50 % and 75 % of the steps (per iteration), optional warm-ups. Training error: the mean over
an epoch's batches of the train-mode predictions made before each update; test error: eval mode.

Use: nice -n 10 scripts/.venv/bin/python scripts/degradation_reference.py --models resnet20,resnet56
"""
import argparse, gzip, os, struct, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/work/shared/data/fashion-mnist"


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(train_subset, test_subset):
    xtr = idx(f"{DATA}/train-images-idx3-ubyte.gz")[:train_subset].astype(np.float64) / 255
    ytr = idx(f"{DATA}/train-labels-idx1-ubyte.gz")[:train_subset].astype(np.int64)
    xte = idx(f"{DATA}/t10k-images-idx3-ubyte.gz")[:test_subset].astype(np.float64) / 255
    yte = idx(f"{DATA}/t10k-labels-idx1-ubyte.gz")[:test_subset].astype(np.int64)
    mean = xtr.mean(axis=0)
    std = np.sqrt(((xtr - mean) ** 2).mean())

    def canvas(x):
        out = np.zeros((len(x), 1, 32, 32), dtype=np.float32)
        out[:, 0, 2:30, 2:30] = (x - mean) / std
        return torch.from_numpy(out)

    return canvas(xtr), torch.from_numpy(ytr), canvas(xte), torch.from_numpy(yte)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, residual, zero_init):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        if zero_init and residual:
            nn.init.zeros_(self.bn2.weight)
        self.residual, self.stride, self.extra = residual, stride, cout - cin

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.residual:
            s = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
            if self.extra > 0:
                s = F.pad(s, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            h = h + s
        return F.relu(h)


class CifarNet(nn.Module):
    def __init__(self, depth, residual, he_mode="fan_in", fc_init="default", zero_init=False):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for planes, stride in [(16, 1), (32, 2), (64, 2)]:
            for i in range(n):
                blocks.append(Block(cin, planes, stride if i == 0 else 1, residual, zero_init))
                cin = planes
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=he_mode, nonlinearity="relu")
        if fc_init == "he":
            nn.init.kaiming_normal_(self.fc.weight)

    def forward(self, x):
        h = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def lr_at(step, total, base, warmup, warmup_steps):
    lr = base * 0.1 ** ((step >= total // 2) + (step >= total * 3 // 4))
    if warmup == "linear" and step < warmup_steps:
        lr *= step / warmup_steps
    if warmup == "constant" and step < warmup_steps:
        lr = base / 10
    return lr


def run(name, args, data):
    xtr, ytr, xte, yte = data
    torch.manual_seed(args.seed)
    depth = int(name.lstrip("plainresnet"))
    model = CifarNet(depth, name.startswith("resnet"), args.he_mode, args.fc_init, args.zero_init)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    n = len(xtr)
    steps_per_epoch = (n + args.batch_size - 1) // args.batch_size
    total = steps_per_epoch * args.epochs
    gen = torch.Generator().manual_seed(args.seed)
    padded = F.pad(xtr, (4, 4, 4, 4))
    step, t0, cpu0 = 0, time.time(), time.process_time()
    threshold_switch = None
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        errs = seen = werrs = wseen = 0
        for b in range(steps_per_epoch):
            ids = order[b * args.batch_size:(b + 1) * args.batch_size]
            oy = torch.randint(0, 9, (len(ids),), generator=gen)
            ox = torch.randint(0, 9, (len(ids),), generator=gen)
            flip = torch.rand(len(ids), generator=gen) < 0.5
            x = torch.stack([padded[i, :, y:y + 32, xx:xx + 32] for i, y, xx in
                             zip(ids.tolist(), oy.tolist(), ox.tolist())])
            x[flip] = x[flip].flip(3)
            y = ytr[ids]
            lr = lr_at(step, total, args.lr, args.warmup, args.warmup_steps)
            if args.warmup == "threshold" and threshold_switch is None:
                lr = args.lr / 10
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            e = (logits.argmax(1) != y).sum().item()
            errs += e; seen += len(ids); werrs += e; wseen += len(ids)
            step += 1
            if args.warmup == "threshold" and threshold_switch is None and werrs / wseen < 0.8 and wseen >= 1280:
                threshold_switch = step
            if step % args.window == 0:
                print(f"{name} step {step} lr {lr:g} window train err {100 * werrs / wseen:.2f}%", flush=True)
                werrs = wseen = 0
        model.eval()
        with torch.no_grad():
            wrong = sum((model(xte[i:i + 500]).argmax(1) != yte[i:i + 500]).sum().item()
                        for i in range(0, len(xte), 500))
        print(f"{name} epoch {epoch + 1} train err {100 * errs / seen:.2f}% test err {100 * wrong / len(xte):.2f}% "
              f"wall {time.time() - t0:.0f}s cpu {time.process_time() - cpu0:.0f}s", flush=True)
    if threshold_switch:
        print(f"{name} switched to lr {args.lr} at step {threshold_switch}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=20000)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--window", type=int, default=19)
    p.add_argument("--he-mode", default="fan_in", choices=["fan_in", "fan_out"])
    p.add_argument("--fc-init", default="default", choices=["default", "he"])
    p.add_argument("--zero-init", action="store_true")
    p.add_argument("--warmup", default="none", choices=["none", "linear", "constant", "threshold"])
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load(args.train_subset, args.test_subset)
    for name in args.models.split(","):
        run(name, args, data)


if __name__ == "__main__":
    main()
