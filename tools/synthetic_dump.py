#!/usr/bin/env python3
"""Write a synthetic tq-kvdump/1 file (safetensors, fp16): Gaussian keys with a few outlier channels
per head (like real keys), Gaussian values and queries, for benchmarks at production sizes.

Example (the evaluation-sweep benchmark of docs/CUDA.md: 32 layers x 8 kv heads x 8192 tokens, d = 128)::

    python3 tools/synthetic_dump.py /tmp/synth_32x8x8192.safetensors --layers 32 --kv-heads 8 --q-heads 8 \\
        --tokens 8192 --head-dim 128
    build/app/tqstudio-cli evaluate /tmp/synth_32x8x8192.safetensors --backend cuda --key-bits 1,2,3,4 \\
        --mode mse,prod --proj-dim 32,64,128 --value-bits 3 --rotation hadamard --json

Needs numpy and safetensors. Writes the file in one pass; refuses to overwrite without --force.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def make_tensors(layers, kv_heads, q_heads, tokens, head_dim, seed, outliers):
    rng = np.random.default_rng(seed)
    out = {}
    for l in range(layers):
        k = rng.standard_normal((kv_heads, tokens, head_dim), dtype=np.float32)
        ch = rng.choice(head_dim, size=min(outliers, head_dim), replace=False)
        k[:, :, ch] *= 8.0
        out[f"layers.{l}.k"] = k.astype(np.float16)
        out[f"layers.{l}.v"] = rng.standard_normal((kv_heads, tokens, head_dim), dtype=np.float32).astype(np.float16)
        out[f"layers.{l}.q"] = rng.standard_normal((q_heads, tokens, head_dim), dtype=np.float32).astype(np.float16)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output .safetensors")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--q-heads", type=int, default=8, help="a multiple of --kv-heads (GQA)")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--outliers", type=int, default=4, help="outlier channels per layer (x8)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--force", action="store_true", help="overwrite an existing file")
    a = ap.parse_args(argv)
    for name in ("layers", "kv_heads", "q_heads", "tokens", "head_dim"):
        if getattr(a, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if a.q_heads % a.kv_heads:
        ap.error("--q-heads must be a multiple of --kv-heads")
    if os.path.exists(a.out) and not a.force:
        print(f"{a.out}: exists; pass --force to overwrite", file=sys.stderr)
        return 2
    try:
        from safetensors.numpy import save_file
    except ImportError:
        print("synthetic_dump.py needs the safetensors package (pip install safetensors)", file=sys.stderr)
        return 2
    t = make_tensors(a.layers, a.kv_heads, a.q_heads, a.tokens, a.head_dim, a.seed, a.outliers)
    md = {"format": "tq-kvdump/1", "model": "synthetic", "num_layers": str(a.layers), "num_q_heads": str(a.q_heads),
          "num_kv_heads": str(a.kv_heads), "head_dim": str(a.head_dim),
          "generator": json.dumps({"tool": "tools/synthetic_dump.py", "seed": a.seed, "outliers": a.outliers})}
    save_file(t, a.out, metadata=md)
    print(f"{a.out}: {a.layers} layers x {a.kv_heads} kv heads ({a.q_heads} q heads) x {a.tokens} tokens x {a.head_dim}, "
          f"{os.path.getsize(a.out)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
