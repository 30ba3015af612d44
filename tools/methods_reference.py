#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""numpy re-implementations of the engine's baselines (core/methods): KIVI, rotated int, fp8, fp16.

Written from docs/METHODS.md, not from the C++: float32 throughout, numpy's round-half-to-even, fp16 via
numpy's float16, fp8 via ml_dtypes when it is installed (else a table of the format's values, which the
tests compare with ml_dtypes and torch where they exist). `python3 tools/methods_reference.py --write`
regenerates tests/data/methods_golden.safetensors, which tests/core/tst_methods.cpp compares with the
engine bit for bit; tools/test_tools.py checks that this file still reproduces it.
"""
import argparse
import os

import numpy as np

F32 = np.float32
HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(os.path.dirname(HERE), "tests", "data", "methods_golden.safetensors")


def f16(x):
    return np.asarray(x, dtype=F32).astype(np.float16).astype(F32)


# ---- fp8 --------------------------------------------------------------------------------------------

FP8 = {"e4m3": dict(man=3, bias=7, max_code=0x7E, max=448.0), "e5m2": dict(man=2, bias=15, max_code=0x7B, max=57344.0)}


def fp8_table(fmt):
    p = FP8[fmt]
    vals = []
    for c in range(p["max_code"] + 1):
        e, m = c >> p["man"], c & ((1 << p["man"]) - 1)
        frac = m / (1 << p["man"])
        vals.append(np.ldexp(frac, 1 - p["bias"]) if e == 0 else np.ldexp(1 + frac, e - p["bias"]))
    return np.array(vals, dtype=np.float64)


def fp8_encode_table(x, fmt):
    """Nearest finite value, ties to the even code, saturating; returns uint8 codes."""
    t = fp8_table(fmt)
    x = np.asarray(x, dtype=F32)
    a = np.minimum(np.abs(x).astype(np.float64), t[-1])
    hi = np.clip(np.searchsorted(t, a, side="left"), 0, len(t) - 1)
    lo = np.maximum(hi - 1, 0)
    dl, dh = a - t[lo], t[hi] - a
    code = np.where(dl < dh, lo, np.where(dh < dl, hi, np.where(lo % 2 == 0, lo, hi)))
    code = np.where(t[hi] == a, hi, code)
    return (code | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


def fp8_decode_table(c, fmt):
    t = fp8_table(fmt)
    c = np.asarray(c, dtype=np.uint8)
    v = t[np.minimum(c & 0x7F, len(t) - 1)]
    return np.where(c & 0x80, -v, v).astype(F32)


def fp8_roundtrip(x, fmt):
    """x (already scaled, |x| <= max) -> codes, values; ml_dtypes when available."""
    try:
        import ml_dtypes
        dt = ml_dtypes.float8_e4m3fn if fmt == "e4m3" else ml_dtypes.float8_e5m2
        q = np.asarray(x, dtype=F32).astype(dt)
        return q.view(np.uint8), q.astype(F32)
    except ImportError:
        c = fp8_encode_table(x, fmt)
        return c, fp8_decode_table(c, fmt)


def fp8(x, fmt):
    x = np.asarray(x, dtype=F32)
    mx = F32(FP8[fmt]["max"])
    amax = np.abs(x).max()
    scale = F32(amax / mx) if amax > 0 else F32(1)
    y = np.clip(x / scale, -mx, mx)
    codes, vals = fp8_roundtrip(y, fmt)
    return codes, (vals * scale).astype(F32), x.size + 4


# ---- fp16 -------------------------------------------------------------------------------------------

def fp16(x):
    return f16(x), 2 * x.size


# ---- KIVI -------------------------------------------------------------------------------------------

def _asym(lo, hi, bits):
    zero = f16(lo)
    scale = f16(np.maximum(F32(0), hi - zero) / F32((1 << bits) - 1))
    return zero, scale


def _asym_codes(x, zero, scale, bits):
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint((x - zero) / scale)
    q = np.where(scale > 0, np.clip(q, 0, (1 << bits) - 1), 0)
    return q.astype(np.uint8)


def kivi(x, bits, values, group=32, window=128):
    """Keys: per channel over groups of `group` tokens; values: per token over groups of `group` channels.
    The last `window` tokens (and, for keys, a group that is not full) stay fp16."""
    x = np.asarray(x, dtype=F32)
    n, d = x.shape
    avail = n - min(n, window)
    nq = avail if values else avail // group * group
    out = np.empty_like(x)
    groups = 0
    if not values:
        for g0 in range(0, nq, group):
            blk = x[g0:g0 + group]
            zero, scale = _asym(blk.min(axis=0), blk.max(axis=0), bits)
            q = _asym_codes(blk, zero, scale, bits)
            out[g0:g0 + group] = zero + q.astype(F32) * scale
            groups += d
    else:
        for j0 in range(0, d, group):
            blk = x[:nq, j0:j0 + group]
            zero, scale = _asym(blk.min(axis=1, keepdims=True), blk.max(axis=1, keepdims=True), bits)
            q = _asym_codes(blk, zero, scale, bits)
            out[:nq, j0:j0 + group] = zero + q.astype(F32) * scale
            groups += nq
    out[nq:] = f16(x[nq:])
    nbytes = (nq * d * bits + 7) // 8 + 4 * groups + 2 * (n - nq) * d
    return out, nbytes


# ---- rotated int ------------------------------------------------------------------------------------

def int_rot_block(d):
    b = 32
    while b > 1 and d % b:
        b //= 2
    return b


def block_hadamard(x, block):
    """H_block / sqrt(block) on every block of coordinates: butterflies in ascending stride, float32."""
    y = np.array(x, dtype=F32).reshape(-1, block)
    h = 1
    while h < block:
        y = y.reshape(-1, block // (2 * h), 2, h)
        a, b = y[:, :, 0, :].copy(), y[:, :, 1, :].copy()
        y[:, :, 0, :] = a + b
        y[:, :, 1, :] = a - b
        h *= 2
    y = y.reshape(-1, block) * (F32(1) / np.sqrt(F32(block)))
    return y.reshape(np.shape(x)).astype(F32)


def int_rot(x, bits):
    """Each block of 32 coordinates rotated, then symmetric ints with an fp16 scale per block:
    scale = m / -2^(b-1) with m the block's element of largest magnitude (q4_0's rule)."""
    x = np.asarray(x, dtype=F32)
    n, d = x.shape
    B = int_rot_block(d)
    y = block_hadamard(x, B).reshape(-1, B)
    half = 1 << (bits - 1)
    m = y[np.arange(len(y)), np.argmax(np.abs(y), axis=1)]
    s = f16(m / F32(-half))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s != 0, np.clip(np.rint(y / s), -half, half - 1), 0)
    rec = block_hadamard((q.astype(F32) * s).reshape(n, d), B)
    nbytes = (n * d * bits + 7) // 8 + 2 * (n * d // B)
    return rec, nbytes


# ---- fixture and golden file ------------------------------------------------------------------------

def fixture(n, d, seed):
    """Keys-like data: a per-channel bias, two outlier channels, a few exact ties and zeros."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(F32)
    x += rng.standard_normal(d).astype(F32) * F32(3)
    x[:, 1] *= F32(20)
    x[:, d // 2] += F32(15)
    x[5, :] = 0
    x[7, :8] = F32(0.5)
    return x.astype(F32)


CASES = [("a", 200, 64, 1), ("b", 77, 48, 2)]
OPTS = dict(group=32, window=40)


def golden_tensors():
    out = {}
    for name, n, d, seed in CASES:
        x = fixture(n, d, seed)
        out[f"{name}.x"] = x
        for bits in (1, 2, 3, 4, 8):
            for role, values in (("k", False), ("v", True)):
                rec, nb = kivi(x, bits, values, **OPTS)
                out[f"{name}.kivi{bits}.{role}"] = rec
                out[f"{name}.kivi{bits}.{role}.bytes"] = np.array([nb], dtype=np.int64)
            rec, nb = int_rot(x, bits)
            out[f"{name}.introt{bits}"] = rec
            out[f"{name}.introt{bits}.bytes"] = np.array([nb], dtype=np.int64)
        for fmt in ("e4m3", "e5m2"):
            codes, rec, nb = fp8(x, fmt)
            out[f"{name}.fp8{fmt}.codes"] = codes
            out[f"{name}.fp8{fmt}"] = rec
            out[f"{name}.fp8{fmt}.bytes"] = np.array([nb], dtype=np.int64)
        rec, nb = fp16(x)
        out[f"{name}.fp16"] = rec
        out[f"{name}.fp16.bytes"] = np.array([nb], dtype=np.int64)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {os.path.relpath(GOLDEN)}")
    args = ap.parse_args()
    t = golden_tensors()
    if args.write:
        from safetensors.numpy import save_file
        save_file(t, GOLDEN, metadata={"format": "tq-methods-golden/1", "kivi_group": str(OPTS["group"]), "kivi_window": str(OPTS["window"])})
        print(f"wrote {GOLDEN}: {len(t)} tensors")
    else:
        print(f"{len(t)} tensors (use --write to save them)")


if __name__ == "__main__":
    main()
