#!/usr/bin/env python3
"""Times the `nasnet` criterion group's workloads in PyTorch on the CPU, for BENCHMARKS.md, and the
inference ones also in ONNX Runtime (the model exported with torch.onnx.export, opset 17, run with
ORT_ENABLE_ALL on the same number of threads).

Optional to run, never part of the tests. Needs `pip install torch onnx onnxruntime` (CPU is
enough; without onnxruntime, or with --no-ort, the ONNX Runtime column is left out). The model is
NASNet-A built the way TF-slim builds it (the same generic cell semantics as nasnet-cells), so the
parameter counts match nasnet-rs exactly (printed for checking):

    python3 benches/pytorch_reference.py --threads 2

Workloads (as benches/benches/nasnet.rs):
  train_cifar_6_768_b32  NASNet-A 6@768, CIFAR stem, 10 classes, 32x32, batch 32: one SGD step
  train_cifar_2_384_b64  NASNet-A 2@384, CIFAR stem, 10 classes, 32x32, batch 64: one SGD step
  infer_mobile_224_b1    NASNet-A Mobile 4@1056, 1000 classes, 224x224, batch 1, eval mode
  infer_mobile_224_b8    the same, batch 8
  infer_large_331_b1     NASNet-A Large 6@4032, 1000 classes, 331x331, batch 1, eval mode
  infer_cifar_6_768_b64  NASNet-A 6@768, CIFAR stem, 10 classes, 32x32, batch 64, eval mode
A training step is forward (drop path off, no auxiliary head), cross-entropy, backward and an SGD
momentum update (Nesterov, weight decay 5e-4).
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# NASNet-A as TF-slim encodes it: (input, op) pairs per block, added; explicit output lists.
NORMAL = dict(
    blocks=[((0, "sep5"), (1, "sep3")), ((1, "sep5"), (1, "sep3")), ((0, "avg3"), (1, "id")),
            ((1, "avg3"), (1, "avg3")), ((0, "sep3"), (0, "id"))],
    concat=[1, 2, 3, 4, 5, 6])
REDUCTION = dict(
    blocks=[((0, "sep5"), (1, "sep7")), ((0, "max3"), (1, "sep7")), ((0, "avg3"), (1, "sep5")),
            ((3, "id"), (2, "avg3")), ((2, "sep3"), (0, "max3"))],
    concat=[3, 4, 5, 6])


def same_pad(x, k, stride):
    h, w = x.shape[-2:]
    ph = max((math.ceil(h / stride) - 1) * stride + k - h, 0)
    pw = max((math.ceil(w / stride) - 1) * stride + k - w, 0)
    return (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)


class Same(nn.Module):
    """TF SAME padding computed from the input (symmetric padding when it is)."""

    def __init__(self, k, stride, fn):
        super().__init__()
        self.k, self.stride, self.fn = k, stride, fn

    def forward(self, x):
        return self.fn(x, same_pad(x, self.k, self.stride))


def bn(c, eps, mom):
    return nn.BatchNorm2d(c, eps=eps, momentum=mom)


class SepConv(nn.Module):
    def __init__(self, cin, cout, k, stride, eps, mom):
        super().__init__()
        self.k, self.stride = k, stride
        self.dw1 = nn.Conv2d(cin, cin, k, stride, 0, groups=cin, bias=False)
        self.pw1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn1 = bn(cout, eps, mom)
        self.dw2 = nn.Conv2d(cout, cout, k, 1, k // 2, groups=cout, bias=False)
        self.pw2 = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn2 = bn(cout, eps, mom)

    def forward(self, x):
        x = F.pad(F.relu(x), same_pad(x, self.k, self.stride))
        x = self.bn1(self.pw1(self.dw1(x)))
        return self.bn2(self.pw2(self.dw2(F.relu(x))))


class ReluConvBn(nn.Module):
    def __init__(self, cin, cout, stride, eps, mom, relu=True):
        super().__init__()
        self.relu = relu
        self.conv = nn.Conv2d(cin, cout, 1, stride, bias=False)
        self.bn = bn(cout, eps, mom)

    def forward(self, x):
        return self.bn(self.conv(F.relu(x) if self.relu else x))


class Pool(nn.Module):
    def __init__(self, kind, cin, cout, stride, eps, mom):
        super().__init__()
        self.kind, self.stride = kind, stride
        self.proj = ReluConvBn(cin, cout, 1, eps, mom, relu=False) if cin != cout else None

    def forward(self, x):
        if self.kind == "max":
            x = F.max_pool2d(F.pad(x, same_pad(x, 3, self.stride), value=-math.inf), 3, self.stride)
        elif same_pad(x, 3, self.stride) == (1, 1, 1, 1):
            # Symmetric SAME padding: PyTorch's own pool excludes it from the count.
            x = F.avg_pool2d(x, 3, self.stride, padding=1, count_include_pad=False)
        else:
            x = self._avg_exclude(x)
        return self.proj(x) if self.proj is not None else x

    def _avg_exclude(self, x):
        pad = same_pad(x, 3, self.stride)
        s = F.avg_pool2d(F.pad(x, pad), 3, self.stride, divisor_override=1)
        ones = torch.ones_like(x[:1, :1])
        n = F.avg_pool2d(F.pad(ones, pad), 3, self.stride, divisor_override=1)
        return s / n


class FactorizedReduction(nn.Module):
    def __init__(self, cin, cout, eps, mom):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.c2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = bn(cout, eps, mom)

    def forward(self, x):
        x = F.relu(x)
        p1 = self.c1(x[:, :, ::2, ::2])
        p2 = self.c2(F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:][:, :, ::2, ::2])
        return self.bn(torch.cat([p1, p2], 1))


def make_op(name, cin, f, stride, eps, mom):
    if name.startswith("sep"):
        return SepConv(cin, f, int(name[3:]), stride, eps, mom)
    if name == "avg3":
        return Pool("avg", cin, f, stride, eps, mom)
    if name == "max3":
        return Pool("max", cin, f, stride, eps, mom)
    if name == "id":
        return ReluConvBn(cin, f, stride, eps, mom) if stride > 1 or cin != f else nn.Identity()
    raise ValueError(name)


class Cell(nn.Module):
    def __init__(self, spec, reduction, cin, prev, f, eps, mom):
        """cin: (channels, level) of the input; prev: the older input's or None."""
        super().__init__()
        self.spec = spec
        self.conv_1x1 = ReluConvBn(cin[0], f, 1, eps, mom)
        if prev is None:
            self.prev_mode, s1 = "none", cin
        elif prev[1] != cin[1]:
            self.prev_mode, s1 = "reduce", (f, cin[1])
            self.prev = FactorizedReduction(prev[0], f, eps, mom)
        elif prev[0] != f:
            self.prev_mode, s1 = "conv", (f, prev[1])
            self.prev = ReluConvBn(prev[0], f, 1, eps, mom)
        else:
            self.prev_mode, s1 = "asis", prev
        states = [(f, cin[1]), s1]
        out_level = cin[1] + int(reduction)
        self.ops = nn.ModuleList()
        for (i0, o0), (i1, o1) in spec["blocks"]:
            for i, o in ((i0, o0), (i1, o1)):
                stride = 2 if reduction and i < 2 else 1
                self.ops.append(make_op(o, states[i][0], f, stride, eps, mom))
            states.append((f, out_level))
        self.adjust = nn.ModuleDict()
        out = 0
        for i in spec["concat"]:
            c, lvl = states[i]
            if lvl != out_level:
                self.adjust[str(i)] = FactorizedReduction(c, f, eps, mom)
            elif i < 2 and c != f:
                self.adjust[str(i)] = ReluConvBn(c, f, 1, eps, mom, relu=False)
            out += f if str(i) in self.adjust else c
        self.out = (out, out_level)

    def forward(self, x, prev):
        if self.prev_mode == "none":
            s1 = x
        elif self.prev_mode == "asis":
            s1 = prev
        else:
            s1 = self.prev(prev)
        states = [self.conv_1x1(x), s1]
        for b, ((i0, _), (i1, _)) in enumerate(self.spec["blocks"]):
            states.append(self.ops[2 * b](states[i0]) + self.ops[2 * b + 1](states[i1]))
        outs = [self.adjust[str(i)](states[i]) if str(i) in self.adjust else states[i]
                for i in self.spec["concat"]]
        return torch.cat(outs, 1)


class NasNet(nn.Module):
    def __init__(self, n, p, classes, stem, stem_filters, skip_reduction, eps, mom, in_ch=3):
        super().__init__()
        f = p // 24
        self.imagenet = stem == "imagenet"
        if self.imagenet:
            self.conv0 = nn.Sequential(nn.Conv2d(in_ch, stem_filters, 3, 2, bias=False),
                                       bn(stem_filters, eps, mom))
        else:
            self.conv0 = nn.Sequential(nn.Conv2d(in_ch, stem_filters, 3, 1, 1, bias=False),
                                       bn(stem_filters, eps, mom))
        self.cells = nn.ModuleList()
        self.links = []  # (cell index, older input index into outputs list)
        outs = [None, (stem_filters, 1 if self.imagenet else 0)]
        if self.imagenet:
            scale = 0.25
            for _ in range(2):
                c = Cell(REDUCTION, True, outs[-1], outs[-2], int(f * scale), eps, mom)
                self.cells.append(c)
                outs.append(c.out)
                scale *= 2
        scale = 1.0
        total = 3 * n
        for cell_num in range(total):
            prev = outs[-2]
            if cell_num in (n, 2 * n):
                scale *= 2
                c = Cell(REDUCTION, True, outs[-1], outs[-2], int(f * scale), eps, mom)
                self.cells.append(c)
                outs.append(c.out)
            if not skip_reduction:
                prev = outs[-2]
            c = Cell(NORMAL, False, outs[-1], prev, int(f * scale), eps, mom)
            self.cells.append(c)
            outs.append(c.out)
        self.skip_reduction = skip_reduction
        self.n = n
        self.last_linear = nn.Linear(outs[-1][0], classes)

    def forward(self, x):
        x = self.conv0(x)
        outs = [None, x]
        i = 0
        if self.imagenet:
            for _ in range(2):
                outs.append(self.cells[i](outs[-1], outs[-2]))
                i += 1
        for cell_num in range(3 * self.n):
            prev = outs[-2]
            if cell_num in (self.n, 2 * self.n):
                outs.append(self.cells[i](outs[-1], outs[-2]))
                i += 1
            if not self.skip_reduction:
                prev = outs[-2]
            outs.append(self.cells[i](outs[-1], prev))
            i += 1
        x = F.adaptive_avg_pool2d(F.relu(outs[-1]), 1).flatten(1)
        return self.last_linear(x)


def cifar(n, p):
    return NasNet(n, p, 10, "cifar", 3 * (p // 24), False, 1e-5, 0.1)


def mobile():
    return NasNet(4, 1056, 1000, "imagenet", 32, False, 1e-3, 0.0003)


def large():
    return NasNet(6, 4032, 1000, "imagenet", 96, True, 1e-3, 0.0003)


def params(m):
    return sum(p.numel() for p in m.parameters())


def time_it(fn, warmup, iters, clock=time.perf_counter):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t = clock()
        fn()
        ts.append(clock() - t)
    return ts


def train_step_fn(model, batch, size):
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 10, (batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return step


def ort_times(model, x, threads, iters, path):
    """Exports `model` at `x`'s shape (opset 17) and times ONNX Runtime on it, or returns None
    when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    torch.onnx.export(model, (x,), path, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamo=False)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    with torch.no_grad():
        want = model(x).numpy()
    got = sess.run(None, feed)[0]
    err = float(abs(got - want).max())
    return time_it(lambda: sess.run(None, feed), 3, iters), err, ort.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--only", default=None, help="run one workload by id")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime column")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time training steps as process CPU time (all threads) instead of wall time")
    ap.add_argument("--onnx-dir", default="/tmp", help="where the exported .onnx files go")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    work = {
        "train_cifar_6_768_b32": lambda: (cifar(6, 768), "train", 32, 32),
        "train_cifar_2_384_b64": lambda: (cifar(2, 384), "train", 64, 32),
        "infer_mobile_224_b1": lambda: (mobile(), "infer", 1, 224),
        "infer_mobile_224_b8": lambda: (mobile(), "infer", 8, 224),
        "infer_large_331_b1": lambda: (large(), "infer", 1, 331),
        "infer_cifar_6_768_b64": lambda: (cifar(6, 768), "infer", 64, 32),
    }
    for name, make in work.items():
        if args.only and name != args.only:
            continue
        model, kind, batch, size = make()
        if kind == "train":
            fn = train_step_fn(model, batch, size)
            clock = time.process_time if args.cpu_time else time.perf_counter
            ts = time_it(fn, 2, args.iters, clock)
        else:
            model.eval()
            x = torch.randn(batch, 3, size, size)

            def fn():
                with torch.no_grad():
                    model(x)
            ts = time_it(fn, 3, max(args.iters, 10))
        results[name] = dict(params=params(model), median_s=statistics.median(ts),
                             min_s=min(ts), iters=len(ts))
        print(f"{name:24s} params {params(model):>10,d}  median {statistics.median(ts)*1e3:9.1f} ms"
              f"  min {min(ts)*1e3:9.1f} ms", flush=True)
        if kind == "infer" and not args.no_ort:
            ort_result = ort_times(model, x, args.threads, max(args.iters, 10),
                                   f"{args.onnx_dir}/nasnet_{name}.onnx")
            if ort_result is not None:
                ots, err, version = ort_result
                results[name]["onnxruntime"] = dict(median_s=statistics.median(ots),
                                                    min_s=min(ots), iters=len(ots),
                                                    max_abs_diff=err, version=version)
                print(f"{name:24s} onnxruntime {version}  median "
                      f"{statistics.median(ots)*1e3:9.1f} ms  min {min(ots)*1e3:9.1f} ms"
                      f"  (max |ort - torch| {err:.1e})", flush=True)
    print(json.dumps(dict(torch=torch.__version__, threads=args.threads, results=results)))


if __name__ == "__main__":
    main()
