#!/usr/bin/env python3
"""Times one exported NASNet (.onnx, written by `pytorch_reference.py` into --onnx-dir) in ONNX
Runtime alone, so that `/usr/bin/time -v` around this script reports ONNX Runtime's own peak
memory without PyTorch's in the same process. For BENCHMARKS.md; never part of the tests.

    python3 benches/pytorch_reference.py --threads 2 --only infer_mobile_224_b1   # exports it
    /usr/bin/time -v python3 benches/ort_reference.py /tmp/nasnet_infer_mobile_224_b1.onnx --threads 2

Session settings as `pytorch_reference.py`'s ONNX Runtime column: ORT_ENABLE_ALL, the given
intra-op thread count, one inter-op thread, the CPU provider; a random input of the model's
shape, 3 warm-up runs, then the median and minimum wall time per run.
"""

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("onnx", help="an .onnx file written by pytorch_reference.py")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    x = np.random.default_rng(0).standard_normal(inp.shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(3):
        sess.run(None, feed)
    ts = []
    for _ in range(args.iters):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append(time.perf_counter() - t)
    print(f"{args.onnx}: onnxruntime {ort.__version__}, {args.threads} threads, input {inp.shape}:"
          f" median {statistics.median(ts) * 1e3:.1f} ms  min {min(ts) * 1e3:.1f} ms"
          f" ({args.iters} runs)")


if __name__ == "__main__":
    main()
