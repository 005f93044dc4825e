"""Writes PyTorch reference cases as safetensors for the Swift parity tests (docs/Testing.md).

Groups (command-line arguments; default all): `layers` (ops, layers and residual blocks),
`optimizers`, `networks` (whole networks with formula weights), `torchvision_files` (files written by
the real `safetensors` library: torchvision state-dict headers, an F16 state dict, every dtype).

Deterministic: every tensor comes from torch.Generator seeded per case; references are computed in
float64 from the float32 inputs, then stored as float32. Each case stores its inputs, weights (in
torchvision naming), a random `grad_output` R, the output, and the gradients of sum(output * R).
Case parameters go in the safetensors `__metadata__` as JSON. Rerunning gives byte-identical files.
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "ResidualNNTests", "Fixtures")


def save_file(tensors, path, metadata):
    """safetensors writer with sorted keys, so the file is byte-identical on every run (the
    reference library serialises its header from a hash map, in varying order)."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in tensors.items():
        data = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def rand(gen, *shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo)


class Writer:
    def __init__(self):
        self.tensors = {}
        self.meta = {}

    def case(self, name, params, **tensors):
        self.meta[name] = json.dumps(params, sort_keys=True)
        for k, v in tensors.items():
            self.tensors[f"{name}.{k}"] = v.detach().to(torch.float32).contiguous()

    def save(self, filename):
        os.makedirs(OUT, exist_ok=True)
        path = os.path.join(OUT, filename)
        save_file(dict(sorted(self.tensors.items())), path, metadata=dict(sorted(self.meta.items())))
        print(f"wrote {path}: {len(self.tensors)} tensors, {os.path.getsize(path) / 1e6:.2f} MB")


def with_grads(fn, inputs, gen):
    """Runs fn on float64 copies of inputs; returns output and grads of sum(output * R)."""
    xs = [t.detach().double().requires_grad_(True) for t in inputs]
    y = fn(*xs)
    r = rand(gen, *y.shape)
    (y * r.double()).sum().backward()
    return y, r, [x.grad for x in xs]


def layers():
    w = Writer()
    gen = torch.Generator().manual_seed(1234)
    # conv2d: every kernel/stride/padding of the zoo, plus groups and bias.
    convs = [
        ("conv_stem_k7s2p3", dict(n=2, c=3, h=20, w=19, o=8, k=7, s=2, p=3, g=1, bias=False)),
        ("conv_k3s1p1", dict(n=2, c=8, h=9, w=9, o=8, k=3, s=1, p=1, g=1, bias=False)),
        ("conv_k3s2p1", dict(n=2, c=8, h=9, w=8, o=16, k=3, s=2, p=1, g=1, bias=False)),
        ("conv_k1s1p0", dict(n=2, c=8, h=5, w=5, o=16, k=1, s=1, p=0, g=1, bias=False)),
        ("conv_k1s2p0", dict(n=2, c=8, h=9, w=9, o=16, k=1, s=2, p=0, g=1, bias=False)),
        ("conv_k3s1p1_groups4_bias", dict(n=2, c=8, h=6, w=7, o=12, k=3, s=1, p=1, g=4, bias=True)),
    ]
    for name, q in convs:
        x = rand(gen, q["n"], q["c"], q["h"], q["w"])
        weight = rand(gen, q["o"], q["c"] // q["g"], q["k"], q["k"]) * 0.5
        bias = rand(gen, q["o"]) if q["bias"] else None
        ins = [x, weight] + ([bias] if bias is not None else [])
        fn = lambda x, wt, b=None, q=q: F.conv2d(x, wt, b, stride=q["s"], padding=q["p"], groups=q["g"])
        y, r, grads = with_grads(fn, ins, gen)
        extra = dict(bias=bias, grad_bias=grads[2]) if bias is not None else {}
        w.case(name, q, input=x, weight=weight, output=y, grad_output=r, grad_input=grads[0], grad_weight=grads[1], **extra)

    # batch norm, training mode: output, gradients, and the running-statistics update (momentum 0.1).
    for name, shape in [("bn_train", (4, 6, 5, 5)), ("bn_train_batch1", (1, 3, 4, 4))]:
        x = rand(gen, *shape, lo=-2, hi=3)
        c = shape[1]
        weight, bias = rand(gen, c, lo=0.5, hi=1.5), rand(gen, c)
        rm, rv = rand(gen, c), rand(gen, c, lo=0.5, hi=2)
        rm64, rv64 = rm.double().clone(), rv.double().clone()
        fn = lambda x, wt, b: F.batch_norm(x, rm64, rv64, wt, b, training=True, momentum=0.1, eps=1e-5)
        y, r, grads = with_grads(fn, [x, weight, bias], gen)
        w.case(name, dict(eps=1e-5, momentum=0.1), input=x, weight=weight, bias=bias, running_mean=rm, running_var=rv,
               output=y, grad_output=r, grad_input=grads[0], grad_weight=grads[1], grad_bias=grads[2],
               new_running_mean=rm64, new_running_var=rv64)
    x = rand(gen, 3, 5, 4, 4)
    weight, bias = rand(gen, 5, lo=0.5, hi=1.5), rand(gen, 5)
    rm, rv = rand(gen, 5), rand(gen, 5, lo=0.5, hi=2)
    fn = lambda x, wt, b: F.batch_norm(x, rm.double(), rv.double(), wt, b, training=False, eps=1e-5)
    y, r, grads = with_grads(fn, [x, weight, bias], gen)
    w.case("bn_eval", dict(eps=1e-5), input=x, weight=weight, bias=bias, running_mean=rm, running_var=rv, output=y,
           grad_output=r, grad_input=grads[0], grad_weight=grads[1], grad_bias=grads[2])

    # pooling
    for name, (k, s, p) in [("maxpool_k3s2p1", (3, 2, 1)), ("maxpool_k2s2p0", (2, 2, 0))]:
        x = rand(gen, 2, 3, 9, 8)
        y, r, grads = with_grads(lambda x: F.max_pool2d(x, k, s, p), [x], gen)
        w.case(name, dict(k=k, s=s, p=p), input=x, output=y, grad_output=r, grad_input=grads[0])
    for name, (k, s, p) in [("avgpool_k2s2p0", (2, 2, 0)), ("avgpool_k3s2p1", (3, 2, 1))]:
        x = rand(gen, 2, 3, 9, 8)
        y, r, grads = with_grads(lambda x: F.avg_pool2d(x, k, s, p), [x], gen)
        w.case(name, dict(k=k, s=s, p=p), input=x, output=y, grad_output=r, grad_input=grads[0])
    x = rand(gen, 2, 5, 7, 6)
    y, r, grads = with_grads(lambda x: F.adaptive_avg_pool2d(x, 1), [x], gen)
    w.case("global_avgpool", {}, input=x, output=y, grad_output=r, grad_input=grads[0])

    # linear, relu
    x, weight, bias = rand(gen, 4, 7), rand(gen, 5, 7), rand(gen, 5)
    y, r, grads = with_grads(F.linear, [x, weight, bias], gen)
    w.case("linear", {}, input=x, weight=weight, bias=bias, output=y, grad_output=r, grad_input=grads[0],
           grad_weight=grads[1], grad_bias=grads[2])
    x = rand(gen, 3, 4, 5)
    y, r, grads = with_grads(F.relu, [x], gen)
    w.case("relu", {}, input=x, output=y, grad_output=r, grad_input=grads[0])

    # cross-entropy (mean over the batch), with and without label smoothing
    for name, eps in [("cross_entropy", 0.0), ("cross_entropy_smooth0.1", 0.1)]:
        logits = rand(gen, 6, 10, lo=-4, hi=4)
        labels = torch.randint(0, 10, (6,), generator=gen)
        xs = logits.double().requires_grad_(True)
        loss = F.cross_entropy(xs, labels, label_smoothing=eps)
        loss.backward()
        w.case(name, dict(label_smoothing=eps, labels=labels.tolist()), input=logits, output=loss.reshape([]),
               grad_input=xs.grad)

    # the paper's option-A shortcut: stride-2 subsampling and zero-padded channels (16 -> 32)
    x = rand(gen, 2, 16, 8, 8)
    fn = lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
    y, r, grads = with_grads(fn, [x], gen)
    w.case("shortcut_option_a", dict(planes=32), input=x, output=y, grad_output=r, grad_input=grads[0])
    layer_edge_cases(w)
    blocks(w)
    awkward_convolutions(w)
    w.save("layers.safetensors")


def awkward_convolutions(w):
    """Channel counts and sizes that are not multiples of the SIMD width or the kernels' register
    blocks (1, 5, 17, 19 channels; odd and prime sizes), for every kernel/stride/padding of the zoo,
    so vector tails and edge pixels face PyTorch too."""
    gen = torch.Generator().manual_seed(17)
    convs = [
        ("conv_awk_k3s1p1_c5o17", dict(n=3, c=5, h=7, w=11, o=17, k=3, s=1, p=1, g=1, bias=False)),
        ("conv_awk_k3s2p1_c17o19", dict(n=1, c=17, h=13, w=9, o=19, k=3, s=2, p=1, g=1, bias=False)),
        ("conv_awk_k1s2p0_c19o33", dict(n=2, c=19, h=7, w=5, o=33, k=1, s=2, p=0, g=1, bias=False)),
        ("conv_awk_k1s1p0_c33o1", dict(n=2, c=33, h=3, w=5, o=1, k=1, s=1, p=0, g=1, bias=True)),
        ("conv_awk_k7s2p3_c1o17", dict(n=2, c=1, h=11, w=13, o=17, k=7, s=2, p=3, g=1, bias=False)),
    ]
    for name, q in convs:
        x = rand(gen, q["n"], q["c"], q["h"], q["w"])
        weight = rand(gen, q["o"], q["c"] // q["g"], q["k"], q["k"]) * 0.5
        bias = rand(gen, q["o"]) if q["bias"] else None
        ins = [x, weight] + ([bias] if bias is not None else [])
        fn = lambda x, wt, b=None, q=q: F.conv2d(x, wt, b, stride=q["s"], padding=q["p"], groups=q["g"])
        y, r, grads = with_grads(fn, ins, gen)
        extra = dict(bias=bias, grad_bias=grads[2]) if bias is not None else {}
        w.case(name, q, input=x, weight=weight, output=y, grad_output=r, grad_input=grads[0], grad_weight=grads[1], **extra)


def layer_edge_cases(w):
    """Conventions a random input never meets: ReLU at exactly 0 (PyTorch's gradient there is 0) and
    max pooling with ties (PyTorch's gradient goes to the first maximum of the window in row-major
    order; ties are common after a ReLU) and windows that hang over the padding."""
    gen = torch.Generator().manual_seed(4321)
    x = torch.randint(-2, 3, (2, 3, 4, 5), generator=gen).float()     # many exact zeros
    y, r, grads = with_grads(F.relu, [x], gen)
    w.case("relu_zeros", {}, input=x, output=y, grad_output=r, grad_input=grads[0])
    for name, (k, s, p) in [("maxpool_k3s2p1_ties", (3, 2, 1)), ("maxpool_k2s2p0_ties", (2, 2, 0))]:
        x = torch.randint(-1, 2, (2, 3, 9, 8), generator=gen).float()
        y, r, grads = with_grads(lambda x: F.max_pool2d(x, k, s, p), [x], gen)
        w.case(name, dict(k=k, s=s, p=p), input=x, output=y, grad_output=r, grad_input=grads[0])
    fused_cases(w)


def fused_cases(w):
    """The fused steps the zoo's blocks use: ReLU(batch norm) in train and eval mode, and
    ReLU(a + b) (random, and with exact zeros where the gradient is 0). Random draws are repeated
    until no ReLU input is within 1e-4 (relative) of the kink."""
    gen = torch.Generator().manual_seed(777)

    def kink_free(z):
        return (z.abs() / z.abs().max()).min().item() >= 1e-4

    for name, training in [("bn_relu_train", True), ("bn_relu_eval", False)]:
        for _ in range(100):
            x = rand(gen, 3, 6, 5, 4, lo=-2, hi=3)
            weight, bias = rand(gen, 6, lo=0.5, hi=1.5), rand(gen, 6, lo=-0.5, hi=0.5)
            rm, rv = rand(gen, 6, lo=-0.5, hi=0.5), rand(gen, 6, lo=0.5, hi=2)
            z = F.batch_norm(x.double(), rm.double().clone(), rv.double().clone(), weight.double(), bias.double(),
                             training=training, momentum=0.1, eps=1e-5)
            if kink_free(z):
                break
        else:
            raise RuntimeError(f"{name}: no kink-free draw")
        fn = lambda x, wt, b: F.relu(F.batch_norm(x, rm.double().clone(), rv.double().clone(), wt, b, training=training,
                                                  momentum=0.1, eps=1e-5))
        y, r, grads = with_grads(fn, [x, weight, bias], gen)
        w.case(name, dict(eps=1e-5), input=x, weight=weight, bias=bias, running_mean=rm, running_var=rv, output=y,
               grad_output=r, grad_input=grads[0], grad_weight=grads[1], grad_bias=grads[2])
    for _ in range(100):
        a, b = rand(gen, 2, 8, 5, 6), rand(gen, 2, 8, 5, 6)
        if kink_free(a.double() + b.double()):
            break
    else:
        raise RuntimeError("add_relu: no kink-free draw")
    y, r, grads = with_grads(lambda a, b: F.relu(a + b), [a, b], gen)
    w.case("add_relu", {}, input=a, other=b, output=y, grad_output=r, grad_input=grads[0], grad_other=grads[1])
    a = torch.randint(-2, 3, (2, 8, 5, 6), generator=gen).float()
    b = torch.randint(-2, 3, (2, 8, 5, 6), generator=gen).float()
    y, r, grads = with_grads(lambda a, b: F.relu(a + b), [a, b], gen)
    w.case("add_relu_zeros", {}, input=a, other=b, output=y, grad_output=r, grad_input=grads[0], grad_other=grads[1])

    # Batch norm with variances comparable to eps (1e-5): with variances near 1, as above, leaving
    # eps out or adding it twice changes results by ~5e-6, below the 1e-4 tolerance; here by 10-50 %.
    x = rand(gen, 4, 5, 3, 3) * 3e-3 + 0.5
    weight, bias = rand(gen, 5, lo=0.5, hi=1.5), rand(gen, 5)
    rm, rv = rand(gen, 5), rand(gen, 5, lo=0.5, hi=2)
    rm64, rv64 = rm.double().clone(), rv.double().clone()
    fn = lambda x, wt, b: F.batch_norm(x, rm64, rv64, wt, b, training=True, momentum=0.1, eps=1e-5)
    y, r, grads = with_grads(fn, [x, weight, bias], gen)
    w.case("bn_train_small_var", dict(eps=1e-5, momentum=0.1), input=x, weight=weight, bias=bias, running_mean=rm,
           running_var=rv, output=y, grad_output=r, grad_input=grads[0], grad_weight=grads[1], grad_bias=grads[2],
           new_running_mean=rm64, new_running_var=rv64)
    x = rand(gen, 3, 5, 4, 4) * 1e-2
    weight, bias = rand(gen, 5, lo=0.5, hi=1.5), rand(gen, 5)
    rm, rv = rand(gen, 5, lo=-1e-2, hi=1e-2), rand(gen, 5, lo=1e-5, hi=1e-4)
    fn = lambda x, wt, b: F.batch_norm(x, rm.double(), rv.double(), wt, b, training=False, eps=1e-5)
    y, r, grads = with_grads(fn, [x, weight, bias], gen)
    w.case("bn_eval_small_var", dict(eps=1e-5), input=x, weight=weight, bias=bias, running_mean=rm, running_var=rv,
           output=y, grad_output=r, grad_input=grads[0], grad_weight=grads[1], grad_bias=grads[2])


class ZeroPadShortcut(torch.nn.Module):
    """The paper's option A as a torchvision `downsample`: stride-s subsampling, zero-padded channels
    (half before, half after). No parameters, so the block's state dict is torchvision's minus
    `downsample.*`."""
    def __init__(self, stride, extra):
        super().__init__()
        self.stride, self.extra = stride, extra

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def fill_random(model, gen):
    """torch-random weights at trainable scales: conv weights U(-1, 1) * sqrt(3 / fan_in), BN gamma
    U(0.5, 1.5), beta and running mean U(-0.3, 0.3), running variance U(0.5, 2)."""
    import math
    with torch.no_grad():
        for k, v in model.state_dict().items():
            leaf = k.rsplit(".", 1)[-1]
            if leaf == "num_batches_tracked":
                continue
            if leaf == "weight" and v.dim() > 1:
                t = rand(gen, *v.shape) * math.sqrt(3.0 / (v[0].numel()))
            elif leaf == "weight":
                t = rand(gen, *v.shape, lo=0.5, hi=1.5)
            elif leaf == "running_var":
                t = rand(gen, *v.shape, lo=0.5, hi=2.0)
            else:
                t = rand(gen, *v.shape, lo=-0.3, hi=0.3)
            v.copy_(t)


def conv_noise_hooks(model, noise, gen):
    """Multiplies every convolution output by (1 + noise * N(0, 1)): a stand-in for float32 rounding."""
    return [mod.register_forward_hook(
        lambda m, inp, out: out * (1 + noise * torch.randn(out.shape, generator=gen, dtype=out.dtype)))
        for mod in model.modules() if isinstance(mod, torch.nn.Conv2d)]


def blocks(w):
    """The zoo's residual blocks as layers: every shortcut option (A zero-padded identity, B
    projection where dimensions grow, C projection everywhere, none = plain), basic and bottleneck,
    v1 (stride on the first 1x1) and v1.5 (stride on the 3x3), in train and eval mode. torchvision's
    own BasicBlock/Bottleneck classes (option A: a parameter-free `downsample`), so the state dicts
    carry torchvision's names. Each case stores the float32 state dict, and per mode the output, the
    gradients of sum(output * R) with respect to the input and every parameter, and (train) the
    running statistics after the forward. The draw is repeated until no ReLU input lies within
    1e-4 (relative to the tensor's max) of the kink, so the element-wise 1e-3 gradient comparison is
    well conditioned; the measured sensitivity (worst relative change of any output or gradient when
    every convolution output is perturbed by 4e-6 relative noise) is stored and must stay below 1e-4."""
    from torchvision.models.resnet import BasicBlock, Bottleneck
    gen = torch.Generator().manual_seed(2015)

    def proj(cin, cout, stride):
        return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))

    def bottleneck(cin, planes, stride, shortcut, v15):
        out = planes * 4
        down = None
        if shortcut == "C" or (shortcut == "B" and (stride != 1 or cin != out)):
            down = proj(cin, out, stride)
        elif shortcut == "A" and (stride != 1 or cin != out):
            down = ZeroPadShortcut(stride, out - cin)
        b = Bottleneck(cin, planes, stride, down)
        if not v15 and stride != 1:
            b.conv1.stride, b.conv2.stride = (stride, stride), (1, 1)
        return b

    def basic(cin, planes, stride, shortcut):
        if shortcut == "none":
            return CifarBlock(cin, planes, stride, residual=False)
        down = None
        if shortcut == "C" or (shortcut == "B" and (stride != 1 or cin != planes)):
            down = proj(cin, planes, stride)
        elif shortcut == "A" and (stride != 1 or cin != planes):
            down = ZeroPadShortcut(stride, planes - cin)
        return BasicBlock(cin, planes, stride, down)

    cases = [
        ("block_basic_A_s2", dict(kind="basic", cin=8, planes=16, stride=2, shortcut="A"), (2, 8, 8, 8)),
        ("block_basic_A_s1", dict(kind="basic", cin=8, planes=8, stride=1, shortcut="A"), (2, 8, 5, 6)),
        ("block_basic_none_s2", dict(kind="basic", cin=8, planes=16, stride=2, shortcut="none"), (2, 8, 6, 6)),
        ("block_basic_B_s2", dict(kind="basic", cin=8, planes=16, stride=2, shortcut="B"), (2, 8, 7, 7)),
        ("block_basic_C_s1", dict(kind="basic", cin=8, planes=8, stride=1, shortcut="C"), (2, 8, 5, 5)),
        ("block_bottleneck_B_s2_v1", dict(kind="bottleneck", cin=16, planes=8, stride=2, shortcut="B", v15=False), (2, 16, 6, 6)),
        ("block_bottleneck_B_s2_v15", dict(kind="bottleneck", cin=16, planes=8, stride=2, shortcut="B", v15=True), (2, 16, 7, 7)),
        ("block_bottleneck_B_s1_grow", dict(kind="bottleneck", cin=8, planes=4, stride=1, shortcut="B", v15=True), (2, 8, 5, 5)),
        ("block_bottleneck_A_s2_v1", dict(kind="bottleneck", cin=8, planes=4, stride=2, shortcut="A", v15=False), (2, 8, 6, 6)),
        ("block_bottleneck_C_s1", dict(kind="bottleneck", cin=16, planes=4, stride=1, shortcut="C", v15=True), (2, 16, 4, 5)),
    ]
    for name, q, shape in cases:
        for attempt in range(50):
            model = (bottleneck(q["cin"], q["planes"], q["stride"], q["shortcut"], q["v15"]) if q["kind"] == "bottleneck"
                     else basic(q["cin"], q["planes"], q["stride"], q["shortcut"])).double()
            fill_random(model, gen)
            x = rand(gen, *shape)
            closest = min(((z.abs() / z.abs().max()).min().item()
                           for train in (False, True) for _, z in relu_inputs(model, x.double(), train)))
            if closest >= 1e-4:
                break
        else:
            raise RuntimeError(f"{name}: no kink-free draw")
        state = {k: v.clone() for k, v in model.state_dict().items()}
        tensors = {f"state.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        tensors["input"] = x
        worst = 0.0
        for mode in ("eval", "train"):
            r = None
            results = []
            for noise in (0.0, 4e-6):
                model.load_state_dict(state)
                model.zero_grad()
                model.train(mode == "train")
                hooks = conv_noise_hooks(model, noise, gen) if noise else []
                xi = x.double().requires_grad_(True)
                y = model(xi)
                if r is None:
                    r = rand(gen, *y.shape)
                (y * r.double()).sum().backward()
                for h in hooks:
                    h.remove()
                out = {"output": y.detach().clone(), "grad_input": xi.grad.clone()}
                out.update({f"grad.{k}": p.grad.clone() for k, p in model.named_parameters()})
                if mode == "train":
                    out.update({f"new.{k}": b.clone() for k, b in model.named_buffers() if "running" in k})
                results.append(out)
            clean, noisy = results
            worst = max([worst] + [((noisy[k] - clean[k]).abs().max() / clean[k].abs().max()).item() for k in clean])
            tensors.update({f"{mode}.{k}": v for k, v in clean.items()})
            tensors[f"{mode}.grad_output"] = r
        assert worst < 1e-4, f"{name}: sensitivity {worst}"
        print(f"{name}: closest ReLU input {closest:.1e} (draw {attempt}), sensitivity {worst:.1e}")
        w.case(name, dict(q, closest_relu_input=closest, sensitivity=worst), **tensors)

def optimizers():
    """Three steps of each optimizer from the same start and gradients. The `_schedule` cases change
    the learning rate between steps, as a schedule does: with a constant rate PyTorch's momentum form
    (buf = mu * buf + g; p -= lr * buf) and the lr-inside form (v = mu * v + lr * g; p -= v) give the
    same iterates, so only a changing rate tells them apart. The `_betas_eps` cases use non-default
    betas and a large eps, so swapped betas, a missing bias correction or eps inside the square root
    move the result far beyond 1e-6."""
    w = Writer()
    gen = torch.Generator().manual_seed(99)
    configs = [
        ("sgd_momentum_wd", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4), None),
        ("sgd_nesterov_wd", torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4), None),
        ("sgd_plain", torch.optim.SGD, dict(lr=0.1), None),
        ("adam", torch.optim.Adam, dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3), None),
        ("adamw", torch.optim.AdamW, dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2), None),
        ("sgd_momentum_wd_schedule", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4), [0.1, 0.01, 0.05]),
        ("sgd_nesterov_wd_schedule", torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
         [0.1, 0.02, 0.2]),
        ("sgd_plain_wd_schedule", torch.optim.SGD, dict(lr=0.1, weight_decay=1e-2), [0.1, 0.5, 0.01]),
        ("adam_betas_eps", torch.optim.Adam, dict(lr=0.05, betas=(0.8, 0.99), eps=0.1, weight_decay=1e-2), [0.05, 0.01, 0.02]),
        ("adamw_betas_eps", torch.optim.AdamW, dict(lr=0.05, betas=(0.5, 0.9), eps=1e-2, weight_decay=0.1), [0.05, 0.1, 0.02]),
    ]
    for name, cls, kw, lrs in configs:
        p0 = rand(gen, 3, 5)
        g1, g2, g3 = rand(gen, 3, 5), rand(gen, 3, 5), rand(gen, 3, 5)
        p = p0.double().clone().requires_grad_(True)
        opt = cls([p], **kw)
        out = {}
        for i, g in enumerate([g1, g2, g3], 1):
            if lrs:
                for group in opt.param_groups:
                    group["lr"] = lrs[i - 1]
            p.grad = g.double().clone()
            opt.step()
            out[f"param_after_step{i}"] = p.detach().clone()
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
        if lrs:
            params["lrs"] = lrs
        w.case(name, dict(optimizer=cls.__name__, **params), param=p0, grad_step1=g1, grad_step2=g2, grad_step3=g3, **out)
    w.save("optimizers.safetensors")


# ---------------------------------------------------------------------------------------------
# Whole networks. Weights come from a formula both languages implement (ResidualTestSupport's
# `FixtureWeights`), so no weights need to be stored: element i of tensor `name` is
# u = (splitmix64(fnv1a64(name) + i) >> 40) * 2^-23 - 1 (exact in float32), then scaled.

MASK = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def uniform(name, n):
    import numpy as np
    seed = fnv1a64(name)
    idx = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (np.uint64(seed) + idx) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -23) - np.float32(1.0)).astype(np.float32)


def fixture_value(name, shape):
    """The deterministic value of a state-dict entry (see FixtureWeights.swift)."""
    import numpy as np
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(name, n)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = np.float32(1.0) + np.float32(0.5) * u
    elif leaf == "running_mean":
        v = np.float32(0.1) * u
    elif leaf == "weight" and len(shape) == 1:          # batch-norm gamma
        v = np.float32(1.0) + np.float32(0.25) * u
    elif leaf == "bias":
        v = np.float32(0.1) * u
    else:                                              # conv / linear weight: He-like scale
        fan_in = int(np.prod(shape[1:]))
        v = np.float32((3.0 / fan_in) ** 0.5) * u
    return torch.from_numpy(v.reshape(shape).astype(np.float32))


def fill_state(model):
    sd = model.state_dict()
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        v.copy_(fixture_value(k, tuple(v.shape)))


class CifarBlock(torch.nn.Module):
    def __init__(self, cin, cout, stride, residual):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.residual, self.stride, self.pad = residual, stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            sc = x
            if self.stride != 1 or self.pad:
                sc = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            out = out + sc
        return F.relu(out)


class CifarNet(torch.nn.Module):
    """He et al. section 4.2: 3x3 conv (16), three stages of n blocks (16/32/64), option-A shortcuts."""
    def __init__(self, n, residual, classes=10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(16)
        cin = 16
        for i, c in enumerate([16, 32, 64]):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(cin, c, 2 if (i > 0 and j == 0) else 1, residual))
                cin = c
            setattr(self, f"layer{i + 1}", torch.nn.Sequential(*blocks))
        self.fc = torch.nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def imagenet(depth, v15):
    import torchvision
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    if depth >= 50 and not v15:
        # The paper's placement (v1): stride on the first 1x1 of the bottleneck, not on the 3x3.
        for layer in [model.layer2, model.layer3, model.layer4]:
            block = layer[0]
            block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    return model


def imagenet_option_a(depth):
    """torchvision's basic-block ResNet with the paper's option-A shortcuts (the zoo's default for
    ResNet-18/34): the projections replaced by parameter-free zero padding."""
    model = imagenet(depth, True)
    for layer in [model.layer2, model.layer3, model.layer4]:
        block = layer[0]
        block.downsample = ZeroPadShortcut(2, block.conv1.out_channels - block.conv1.in_channels)
    return model


def relu_inputs(model, x, train):
    """Runs `model` once without gradients and returns, for every ReLU call in execution order, the
    name of the batch norm that produced its input and the input itself. Running statistics are
    restored afterwards."""
    model.train(train)
    names = {mod: n for n, mod in model.named_modules()}
    last_bn, calls = [None], []

    def bn_hook(mod, inp, out):
        # A block's shortcut BN (downsample.1) is added to the last BN of the branch: the branch BN
        # is the one whose bias moves the ReLU input.
        if "downsample" not in names[mod]:
            last_bn[0] = names[mod]

    hooks = [mod.register_forward_hook(bn_hook) for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    for mod in model.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
            hooks.append(mod.register_forward_pre_hook(lambda m, inp: calls.append((last_bn[0], inp[0].detach().clone()))))
    orig = F.relu

    def functional_relu(z, inplace=False):
        calls.append((last_bn[0], z.detach().clone()))
        return orig(z)

    F.relu = functional_relu
    try:
        with torch.no_grad():
            state = {k: v.clone() for k, v in model.state_dict().items()}
            model(x)
            model.load_state_dict(state)
    finally:
        F.relu = orig
        for h in hooks:
            h.remove()
    return calls


def clear_kinks(model, x, threshold=1e-5):
    """Moves every ReLU input of the reference forward (eval and train mode) at least
    2 * threshold * max|z| away from the kink, by nudging the bias of the batch norm before it, one
    channel at a time, in execution order.

    Why: at these small sizes a few of the ~1.5M ReLU inputs of ResNet-50 sit within float32
    rounding (~5e-7 relative) of zero. Which side they land on is then a coin toss for any float32
    implementation, and one flipped element moves gradients everywhere upstream by ~1e-3, which
    would make a 1e-3 gradient comparison a test of luck. Returns the names of the nudged biases."""
    params = dict(model.named_parameters())
    changed = set()
    for _ in range(1000):
        bad = None
        for train in (False, True):
            for bn, z in relu_inputs(model, x, train):
                scale = z.abs().max()
                closest = (z.abs() / scale).transpose(0, 1).reshape(z.shape[1], -1).min(dim=1).values
                channels = (closest < threshold).nonzero().flatten()
                if len(channels):
                    bad = (bn, z, scale, channels)
                    break
            if bad:
                break
        if bad is None:
            return sorted(changed)
        bn, z, scale, channels = bad
        bias = params[bn + ".bias"]
        zc = z.transpose(0, 1).reshape(z.shape[1], -1)
        with torch.no_grad():
            for c in channels.tolist():
                for k in [1, -1, 2, -2, 3, -3, 5, -5, 8, -8]:
                    d = 2 * k * threshold * scale
                    if ((zc[c] + d).abs() / scale).min() >= 2 * threshold:
                        bias[c] += d
                        break
                else:
                    raise RuntimeError(f"clear_kinks: no nudge found for {bn} channel {c}")
        changed.add(bn + ".bias")
    raise RuntimeError("clear_kinks did not converge")


def gradient_sensitivity(model, x, labels, train, noise=4e-6):
    """How far float32-sized rounding moves the float64 gradient: every convolution output is
    multiplied by (1 + noise * N(0, 1)); returns the worst relative change of a parameter's gradient
    norm, of its largest element, and of the logits (max-abs over max-abs)."""
    gen = torch.Generator().manual_seed(7)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def grads(pert):
        model.load_state_dict(state)
        model.zero_grad()
        model.train(train)
        hooks = [mod.register_forward_hook(
            lambda m, inp, out: out * (1 + pert * torch.randn(out.shape, generator=gen, dtype=out.dtype)))
            for mod in model.modules() if isinstance(mod, torch.nn.Conv2d)]
        logits = model(x)
        F.cross_entropy(logits, labels).backward()
        for h in hooks:
            h.remove()
        out = {n: p.grad.clone() for n, p in model.named_parameters()}
        out[None] = logits.detach()
        return out

    g0, g1 = grads(0.0), grads(noise)
    l0, l1 = g0.pop(None), g1.pop(None)
    model.load_state_dict(state)
    model.zero_grad()
    norm = max(((g1[n].norm() - g0[n].norm()).abs() / g0[n].norm()).item() for n in g0)
    elem = max(((g1[n] - g0[n]).abs().max() / g0[n].abs().max()).item() for n in g0)
    return norm, elem, ((l1 - l0).abs().max() / l0.abs().max()).item()


def networks():
    import numpy as np
    w = Writer()
    nets = [
        ("resnet20", lambda: CifarNet(3, True), (2, 3, 32, 32)),
        ("plain20", lambda: CifarNet(3, False), (2, 3, 32, 32)),
        ("resnet18", lambda: imagenet(18, True), (2, 3, 64, 64)),
        ("resnet50_v1", lambda: imagenet(50, False), (2, 3, 64, 64)),
        ("resnet50_v1.5", lambda: imagenet(50, True), (2, 3, 64, 64)),
    ]
    for name, make, shape in nets:
        model = make().double()
        fill_state(model)
        x = fixture_value(f"{name}.input", shape).double() * 3  # the formula (He-like scale) times 3: about ±0.09 at 32x32, ±0.05 at 64x64
        labels = torch.tensor([1, 7])
        nudged = clear_kinks(model, x)
        # Gradients are compared element by element in eval mode (batch norm as a fixed per-channel
        # affine map), where with the kinks cleared float32-sized perturbations move them by ~3e-5.
        # In train mode they stay ill-conditioned at these sizes even so: batch statistics amplify
        # rounding by |mean|/std and couple every element of a channel, and the same perturbation
        # moves single gradient elements by up to ~70% (ResNet-50) in float64 itself. Train-mode batch
        # norm backward is checked element by element at the layer level (layers.safetensors); here
        # through the train-mode logits, loss, running statistics and per-parameter gradient norms,
        # with the measured sensitivity stored beside them.
        sens_eval = gradient_sensitivity(model, x, labels, train=False)
        sens_train = gradient_sensitivity(model, x, labels, train=True)
        print(f"{name}: nudged {len(nudged)} biases; gradient sensitivity (norm, element) "
              f"eval {sens_eval[0]:.1e} {sens_eval[1]:.1e}, train {sens_train[0]:.1e} {sens_train[1]:.1e}; "
              f"train logits {sens_train[2]:.1e}")
        model.eval()
        logits_eval = model(x)
        loss_eval = F.cross_entropy(logits_eval, labels)
        loss_eval.backward()
        tensors = dict(logits_eval=logits_eval, loss_eval=loss_eval.reshape([]))
        state = model.state_dict()
        for bname in nudged:
            tensors[f"override.{bname}"] = state[bname]
        # Every parameter's gradient: its L2 norm and 16 sampled elements (positions from the same
        # hash, so the fixtures stay small even for ResNet-50).
        for pname, p in model.named_parameters():
            g = p.grad.detach().reshape(-1)
            n = g.numel()
            picks = sorted({splitmix64(fnv1a64(pname) + k) % n for k in range(16)})
            tensors[f"grad.{pname}.norm"] = g.norm().reshape([])
            tensors[f"grad.{pname}.index"] = torch.tensor(picks, dtype=torch.float64)
            tensors[f"grad.{pname}.value"] = g[picks]
        model.zero_grad()
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        tensors.update(logits_train=logits, loss=loss.reshape([]))
        for pname, p in model.named_parameters():
            tensors[f"grad_train.{pname}.norm"] = p.grad.detach().norm().reshape([])
        # Running statistics after the one train-mode forward (momentum 0.1).
        for bname, b in model.named_buffers():
            if bname.endswith("running_mean") or bname.endswith("running_var"):
                idx = torch.arange(min(8, b.numel()))
                tensors[f"buffer.{bname}.head"] = b.detach().reshape(-1)[idx]
        params = sum(p.numel() for p in model.parameters())
        w.case(name, dict(input_shape=list(shape), labels=labels.tolist(), parameters=params,
                          overrides=nudged, sensitivity_eval=list(sens_eval), sensitivity_train=list(sens_train)),
               **tensors)
    w.save("networks.safetensors")


# ---------------------------------------------------------------------------------------------
# Files written by the real `safetensors` library (torchvision's state dicts, other dtypes).
#
# A full-size ResNet-18 / ResNet-50 state dict is 47 / 100 MB: too big to commit. What the parity
# test needs from such a file is (1) exactly the bytes the library writes for torchvision's state
# dict (its header layout, ordering, padding, dtypes, the I64 `num_batches_tracked` scalars,
# torchvision's names and shapes) and (2) logits computed by torchvision from those weights. So the
# model's tensors are set from the formula both languages implement (`fixture_value`), the library
# writes the file, and only its header (a few KB) is committed, with the file's CRC-32 and length
# and torchvision's float64 logits. The Swift test rebuilds the data section from the header and the
# formula, checks that the CRC-32 and length match, so the rebuilt file *is* the library's file byte
# for byte, and runs `resnet infer` on it. A real file with torch-random weights (CIFAR ResNet-20, in
# F16) and a file of special values in every dtype are committed whole (small).

NUM_BATCHES_TRACKED = 100   # written as I64 by the library; the Swift rebuild uses the same value


def library_bytes(tensors, metadata=None):
    from safetensors.torch import save
    return save(tensors, metadata=metadata)


def write_header(blob, path):
    n = struct.unpack("<Q", blob[:8])[0]
    with open(path, "wb") as f:
        f.write(blob[:8 + n])


def input_exponent(shape):
    """The input is fixture_value("input", shape) * 2^k (exact), with k bringing it to about [-1, 1]."""
    import math
    fan_in = int(torch.tensor(shape[1:]).prod())
    return round(math.log2(1 / (3.0 / fan_in) ** 0.5))


def torchvision_files():
    import zlib
    out = os.path.join(OUT, "torchvision")
    os.makedirs(out, exist_ok=True)
    w = Writer()
    inputs = {}
    for key, shape in [("input224", (1, 3, 224, 224)), ("input32", (2, 3, 32, 32))]:
        k = input_exponent(shape)
        x = fixture_value("input", shape) * (2.0 ** k)
        blob = library_bytes({"input": x})
        write_header(blob, os.path.join(out, f"{key}.header"))
        inputs[key] = x
        w.case(key, dict(shape=list(shape), exponent=k, crc32=zlib.crc32(blob), bytes=len(blob)))
    cases = [
        # file, torchvision/zoo model, input, [(reference name, builder, resnet infer flags)]
        ("resnet18", "resnet18", "input224", [("resnet18", lambda: imagenet(18, True), ["--shortcut", "B"])]),
        ("resnet50", "resnet50", "input224", [("resnet50_v1.5", lambda: imagenet(50, True), ["--shortcut", "B", "--v1.5"]),
                                              ("resnet50_v1", lambda: imagenet(50, False), ["--shortcut", "B"])]),
        ("resnet18_A", "resnet18", "input224", [("resnet18_A", lambda: imagenet_option_a(18), [])]),
        ("resnet20", "resnet20", "input32", [("resnet20", lambda: CifarNet(3, True), [])]),
        ("plain20", "plain20", "input32", [("plain20", lambda: CifarNet(3, False), [])]),
    ]
    for fname, zoo, inp, variants in cases:
        blob = None
        for ref, make, flags in variants:
            model = make()
            fill_state(model)
            for k, v in model.state_dict().items():
                if k.endswith("num_batches_tracked"):
                    v.fill_(NUM_BATCHES_TRACKED)
            if blob is None:   # every variant has the same names, shapes and values
                blob = library_bytes({k: v.contiguous() for k, v in model.state_dict().items()}, metadata={"format": "pt"})
                write_header(blob, os.path.join(out, f"{fname}.header"))
            model = model.double().eval()
            with torch.no_grad():
                logits = model(inputs[inp].double())
            w.case(ref, dict(model=zoo, weights=f"{fname}.header", input=inp, flags=flags, crc32=zlib.crc32(blob),
                             bytes=len(blob), num_batches_tracked=NUM_BATCHES_TRACKED), logits=logits)
        print(f"torchvision/{fname}: {len(blob) / 1e6:.1f} MB file, header {os.path.getsize(os.path.join(out, fname + '.header'))} bytes")

    # A whole PyTorch state dict in F16 (CIFAR ResNet-20, zoo naming, torch-random weights and
    # statistics), written by the library, and torch's logits from the rounded weights.
    gen = torch.Generator().manual_seed(20)
    model = CifarNet(3, True)
    fill_random(model, gen)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    with open(os.path.join(out, "resnet20_f16.safetensors"), "wb") as f:
        f.write(library_bytes(half, metadata={"format": "pt"}))
    x = rand(gen, 2, 3, 32, 32)
    with open(os.path.join(out, "resnet20_f16.input.safetensors"), "wb") as f:
        f.write(library_bytes({"input": x}))
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in half.items()})
    with torch.no_grad():
        logits = model.double().eval()(x.double())
    w.case("resnet20_f16", dict(model="resnet20", flags=[]), logits=logits)

    # Every dtype the reader converts, with the values that test a conversion: signed zeros,
    # subnormals, the largest finite values, infinities, NaN, float64 values that round (ties to
    # even) or overflow in float32, and large integers; each beside torch's own float32 conversion.
    f64 = torch.tensor([0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, 1e-40, -1e-45, 1e-46, 1e39, -1e39, 3.4028235e38,
                        1 + 2.0 ** -24, 1 + 3 * 2.0 ** -24, 2.0 ** -149, float("inf"), float("-inf"), float("nan")],
                       dtype=torch.float64)
    f64 = torch.cat([f64, torch.randn(64, generator=gen, dtype=torch.float64) * 100])
    f16 = torch.tensor([0.0, -0.0, 1.0, -2.0, 65504, -65504, 6.103515625e-05, 5.960464477539063e-08, 3.0e-06,
                        float("inf"), float("-inf"), float("nan")], dtype=torch.float16)
    f16 = torch.cat([f16, (torch.randn(64, generator=gen) * 10).half()])
    bf16 = torch.tensor([0.0, -0.0, 1.0, -3.0, 3.3895313892515355e38, 9.183549615799121e-41, 1.1754943508222875e-38,
                         float("inf"), float("-inf"), float("nan")], dtype=torch.bfloat16)
    bf16 = torch.cat([bf16, (torch.randn(64, generator=gen) * 10).bfloat16()])
    i64 = torch.tensor([0, 1, -1, 7, 2 ** 40 + 1, -(2 ** 53) - 1, 2 ** 62], dtype=torch.int64)
    i32 = torch.tensor([0, 1, -1, 2 ** 31 - 1, -(2 ** 31), 16777217], dtype=torch.int32)
    f32 = torch.tensor([0.0, -0.0, 1.5, float("nan"), float("inf"), 1e-45], dtype=torch.float32)
    tensors = {"f64": f64, "f16": f16, "bf16": bf16, "i64": i64, "i32": i32, "f32": f32,
               "f16_matrix": f16[:60].reshape(3, 4, 5)}
    for k in list(tensors):
        tensors[k] = tensors[k].clone()
        tensors[f"{k}.as_f32"] = tensors[k].to(torch.float32).clone()
    with open(os.path.join(out, "dtypes.safetensors"), "wb") as f:
        f.write(library_bytes(tensors, metadata={"format": "pt"}))
    path = os.path.join("torchvision", "references.safetensors")
    w.save(path)


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # fixed summation order: byte-identical output on every run
    which = sys.argv[1:] or ["layers", "optimizers", "networks", "torchvision_files"]
    for name in which:
        globals()[name]()
