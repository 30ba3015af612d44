#!/usr/bin/env python3
"""Cut a smaller tq-kvdump/1 file out of a large one: some layers, the first N tokens, a dtype.

Because attention is causal, the first N positions of a dump are exactly the dump of the first
N tokens, so a token slice is itself a valid dump. Metadata is carried over and updated
(``num_layers``, ``layers``, ``prompt_tokens``, ``token_strings``, ``text``); kept layers are
renumbered 0..n-1 and their original indices recorded in ``source_layers`` and
``sliced_from`` records the source file's name and sha256.

Example::

    python3 tools/slice_kvdump.py /work/smollm2_full.safetensors tests/data/smollm2_135m_slice.safetensors \\
        --layers 0,15,29 --tokens 512 --dtype fp16 --drop k_prerope
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys

import numpy as np


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="source tq-kvdump/1 .safetensors")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--layers", default="all", help="comma-separated layer indices to keep (default all)")
    ap.add_argument("--tokens", type=int, help="keep the first N tokens (default all)")
    ap.add_argument("--dtype", choices=("keep", "fp16", "fp32"), default="keep", help="convert float tensors")
    ap.add_argument("--drop", default="", help="comma-separated tensor kinds to drop, e.g. q,k_prerope")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    if not os.path.isfile(a.src):
        ap.error(f"not found: {a.src}")
    if os.path.exists(a.dst) and not a.overwrite:
        ap.error(f"{a.dst} exists (use --overwrite)")
    if a.tokens is not None and a.tokens <= 0:
        ap.error("--tokens must be positive")
    from safetensors import safe_open
    from safetensors.numpy import save_file
    with safe_open(a.src, "np") as f:
        md = dict(f.metadata() or {})
        names = list(f.keys())
        have = sorted({int(n.split(".")[1]) for n in names if n.startswith("layers.")})
        if a.layers.strip().lower() == "all":
            keep = have
        else:
            try:
                keep = sorted({int(x) for x in a.layers.split(",") if x.strip()})
            except ValueError:
                ap.error("--layers must be comma-separated integers or 'all'")
            missing = [l for l in keep if l not in have]
            if missing:
                ap.error(f"layers {missing} not in {a.src} (it has {have})")
        drop = {x.strip() for x in a.drop.split(",") if x.strip()}
        out = {}
        S = None
        for n in names:
            if n.startswith("layers."):
                _, l, kind = n.split(".", 2)
                if int(l) not in keep or kind in drop:
                    continue
                # renumber so the slice is a complete dump (layers 0..n-1); the original indices are
                # kept in the metadata field "source_layers"
                n_out = f"layers.{keep.index(int(l))}.{kind}"
            else:
                n_out = n
            t = f.get_tensor(n)
            if n == "tokens":
                t = t[: a.tokens]
                S = t.shape[-1]
            else:
                t = t[..., : a.tokens, :] if a.tokens else t
                if a.dtype == "fp16":
                    t = t.astype(np.float16)
                elif a.dtype == "fp32":
                    t = t.astype(np.float32)
            out[n_out] = np.ascontiguousarray(t)
    if S is None:
        S = next(v.shape[-2] for k, v in out.items() if k.startswith("layers."))
    md["num_layers"] = str(len(keep))
    md["layers"] = ",".join(map(str, keep))
    md["source_layers"] = ",".join(map(str, keep))
    md["prompt_tokens"] = str(S)
    if "token_strings" in md:
        ts = json.loads(md["token_strings"])[:S]
        md["token_strings"] = json.dumps(ts, ensure_ascii=False)
        md["text"] = "".join(ts)
    md["sliced_from"] = f"{os.path.basename(a.src)} sha256 {sha256(a.src)}"
    save_file(out, a.dst, metadata=md)
    print(f"wrote {a.dst}: layers {keep}, {S} tokens, {os.path.getsize(a.dst)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
