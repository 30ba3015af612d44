#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Writes the small seed corpora of the libFuzzer targets (tests/fuzz/corpus/<target>/) with numpy and
safetensors, independently of the C++ writers. fuzz_compressed's seed is made by the C++ engine
(tq-compressed/1 has no Python writer): see README.md."""
import json, os, zipfile, io
import numpy as np
from safetensors.numpy import save

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(7)
L, KV, QH, S, D = 2, 2, 4, 3, 4
md = {"format": "tq-kvdump/1", "model": "tiny", "num_layers": str(L), "num_q_heads": str(QH), "num_kv_heads": str(KV),
      "head_dim": str(D), "softmax_scale": "0.5", "token_strings": json.dumps(["a", "b", "\u00e9"])}

def tensors(dtype, layout="tq"):
    t = {}
    for l in range(L):
        k = rng.standard_normal((KV, S, D)).astype(dtype)
        v = rng.standard_normal((KV, S, D)).astype(dtype)
        q = rng.standard_normal((QH, S, D)).astype(dtype)
        if layout == "tq":
            t.update({f"layers.{l}.k": k, f"layers.{l}.v": v, f"layers.{l}.q": q})
        elif layout == "hf":
            t.update({f"past_key_values.{l}.key": k[None], f"past_key_values.{l}.value": v[None]})
    if layout == "kv":
        t["kv"] = rng.standard_normal((L, 2, KV, S, D)).astype(dtype)
    t["tokens"] = np.array([1, 2, 3], dtype=np.int32)
    return t

def write(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def npz(t, compressed):
    b = io.BytesIO()
    arrays = dict(t)
    arrays["__metadata__"] = np.frombuffer(json.dumps(md).encode(), dtype=np.uint8)
    (np.savez_compressed if compressed else np.savez)(b, **arrays)
    return b.getvalue()

def npy(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()

st = {
    "tq_f16.safetensors": save(tensors(np.float16), metadata=md),
    "tq_f32.safetensors": save(tensors(np.float32), metadata=md),
    "tq_f64.safetensors": save(tensors(np.float64)),
    "hf_f16.safetensors": save(tensors(np.float16, "hf")),
    "kv_f32.safetensors": save(tensors(np.float32, "kv")),
}
zips = {"tq_stored.npz": npz(tensors(np.float16), False), "tq_deflate.npz": npz(tensors(np.float32), True)}
npys = {"keys_f16.npy": npy(rng.standard_normal((KV, S, D)).astype(np.float16)),
        "kv_f32.npy": npy(rng.standard_normal((L, 2, KV, S, D)).astype(np.float32))}
for n, b in st.items():
    write("safetensors", n, b)
    write("kvdump", "0_" + n, bytes([4]) + b)
    write("kvdump", "1_" + n, bytes([8]) + b)
for n, b in zips.items():
    write("npz", n, b)
    write("kvdump", "0_" + n, bytes([5]) + b)
    write("kvdump", "1_" + n, bytes([9]) + b)
for n, b in npys.items():
    write("npy", n, b)
    write("kvdump", "0_" + n, bytes([6]) + b)
print("corpora written under", os.path.join(here, "corpus"))
