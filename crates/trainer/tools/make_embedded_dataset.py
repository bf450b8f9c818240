#!/usr/bin/env python3
"""Regenerates the Fashion-MNIST subset embedded in nasnet-trainer (crates/trainer/data/).

The subset is stratified and takes the first images of each class in file order: the first
1,200 of every class from the training files (12,000 images) and the first 200 of every class
from the test files (2,000 images). The output is IDX, gzip-compressed with a zero timestamp and
no file name in the header, so running this script twice gives byte-identical files.

Usage (from the repository root):

    python3 crates/trainer/tools/make_embedded_dataset.py \
        --source ../shared/datasets/fashion-mnist --out crates/trainer/data

Standard library only.
"""

import argparse
import gzip
import hashlib
import io
import os
import struct
import sys

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
NUM_CLASSES = 10


def read_idx(path, magic):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        sys.exit(f"{path}: magic {found:#010x}, expected {magic:#010x}")
    ndims = found & 0xFF
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    body = data[4 + 4 * ndims :]
    size = 1
    for d in dims:
        size *= d
    if len(body) != size:
        sys.exit(f"{path}: {len(body)} data bytes, header says {size}")
    return dims, body


def subset(images_path, labels_path, per_class):
    (n, rows, cols), images = read_idx(images_path, IMAGES_MAGIC)
    (n_labels,), labels = read_idx(labels_path, LABELS_MAGIC)
    if n != n_labels:
        sys.exit(f"{images_path}: {n} images but {n_labels} labels")
    pixels = rows * cols
    taken = [0] * NUM_CLASSES
    chosen = []
    for i, label in enumerate(labels):
        if label >= NUM_CLASSES:
            sys.exit(f"{labels_path}: label {label} at {i} is out of range")
        if taken[label] < per_class:
            taken[label] += 1
            chosen.append(i)
    if min(taken) < per_class:
        sys.exit(f"{labels_path}: a class has fewer than {per_class} images")
    out_images = b"".join(images[i * pixels : (i + 1) * pixels] for i in chosen)
    out_labels = bytes(labels[i] for i in chosen)
    return (len(chosen), rows, cols), out_images, out_labels


def write_gz(path, payload):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(payload)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    print(f"{path}: {len(buf.getvalue())} bytes, sha256 {hashlib.sha256(buf.getvalue()).hexdigest()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="folder with the four Fashion-MNIST IDX .gz files")
    parser.add_argument("--out", required=True, help="output folder (crates/trainer/data)")
    parser.add_argument("--train-per-class", type=int, default=1200)
    parser.add_argument("--test-per-class", type=int, default=200)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for split, prefix, per_class in (
        ("train", "train", args.train_per_class),
        ("test", "t10k", args.test_per_class),
    ):
        (n, rows, cols), images, labels = subset(
            os.path.join(args.source, f"{prefix}-images-idx3-ubyte.gz"),
            os.path.join(args.source, f"{prefix}-labels-idx1-ubyte.gz"),
            per_class,
        )
        header = struct.pack(">IIII", IMAGES_MAGIC, n, rows, cols)
        write_gz(os.path.join(args.out, f"{split}-images-idx3-ubyte.gz"), header + images)
        write_gz(
            os.path.join(args.out, f"{split}-labels-idx1-ubyte.gz"),
            struct.pack(">II", LABELS_MAGIC, n) + labels,
        )


if __name__ == "__main__":
    main()
