#!/usr/bin/env python3
"""Check a tq-kvdump/1 file made by tools/dump_kv.py against independent references.

Compares the dump (keys, values, queries of every layer it holds) with

1. a sample dump of the same llama2.c checkpoint made by llama2.c-order code (``--sample``,
   e.g. ../shared/data/kv/stories260K_lily_512.safetensors),
2. an independent numpy forward pass of the llama2.c checkpoint (``--checkpoint``,
   tools/llama2c_numpy.py), run here on the dump's own tokens, and/or
3. any other dump of the same model and tokens in the same channel order (``--against``,
   e.g. tools/gguf_numpy_dump.py's numpy dump of a GGUF vs tools/dump_kv.py on that GGUF).

Keys and queries of a Hugging Face conversion are in rotate_half order: the llama2.c
references' (1, 2) channels are reordered ``[0, 2, 4, ..., 1, 3, 5, ...]`` inside each head before comparing
(``--no-permute`` to compare as they are). Values are compared as they are. Attention
logits q.k (invariant under that reordering) are compared too.

Pass criterion ("same to fp16 precision"): every element within ``--ulps`` (default 2) fp16
units in the last place of its reference value, or within fp16 epsilon (2^-10) times the L2
norm of its head vector (elements near zero carry the rounding noise of the whole vector).
Columns: ``ulps@max`` = max|diff| in fp16 ulps at the tensor's largest |value|; ``rel/row`` =
max of |diff| / norm of the element's head vector. Needs numpy and
safetensors only. Exit status 0 when everything passes, 1 when something differs, 2 on
bad input.

Example::

    python3 tools/verify_dump.py out/kv.safetensors \\
        --sample ../shared/data/kv/stories260K_lily_512.safetensors \\
        --checkpoint ../shared/data/models/stories260K.bin
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import llama2c_numpy as ln  # noqa: E402


def hf_perm(d: int) -> np.ndarray:
    return np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])


def ulp16(x):
    return np.spacing(np.abs(np.asarray(x)).astype(np.float16)).astype(np.float64)


FP16_EPS = 2.0 ** -10  # fp16 machine epsilon (9.77e-4)


def compare(got, ref, ulps):
    """-> (max abs diff, same in fp16 ulps at the tensor's largest |ref|,
    max abs diff / L2 norm of the element's head vector, pass).

    Pass: every element within `ulps` fp16 ulps of its reference value, or within fp16
    epsilon (2^-10) of the norm of its head vector (elements near zero carry the rounding
    noise of the whole vector, e.g. of RoPE angles computed in float32)."""
    got = got.astype(np.float64)
    ref = ref.astype(np.float64)
    if got.shape != ref.shape:
        return float("nan"), float("nan"), float("nan"), False
    d = np.abs(got - ref)
    m = np.abs(ref).max()
    norm = np.linalg.norm(ref, axis=-1, keepdims=True)
    ok = bool(np.all(d <= np.maximum(ulps * ulp16(ref), FP16_EPS * norm) + 1e-7))
    return float(d.max()), float(d.max() / ulp16(m)), float((d / np.maximum(norm, 1e-30)).max()), ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dump", help="tq-kvdump/1 file to check (from tools/dump_kv.py)")
    ap.add_argument("--sample", help="reference tq-kvdump/1 file in llama2.c channel order")
    ap.add_argument("--checkpoint", help="llama2.c checkpoint for an independent numpy forward pass")
    ap.add_argument("--against", metavar="DUMP", action="append", default=[],
                    help="another tq-kvdump/1 of the same model and tokens, already in the dump's channel order "
                         "(e.g. tools/gguf_numpy_dump.py vs tools/dump_kv.py); may be repeated")
    ap.add_argument("--no-permute", action="store_true", help="the dump is in llama2.c order too (no reordering)")
    ap.add_argument("--ulps", type=float, default=2.0, help="tolerance in fp16 ulps (default 2)")
    args = ap.parse_args(argv)
    if not (args.sample or args.checkpoint or args.against):
        ap.error("give --sample, --checkpoint and/or --against")
    for p in (args.dump, args.sample, args.checkpoint, *args.against):
        if p and not os.path.isfile(p):
            ap.error(f"not found: {p}")

    t, md = ln.load_kvdump(args.dump)
    failures = 0
    print(f"dump: {args.dump}")
    print(f"  model={md.get('model')!r} format={md.get('format')!r} softmax_scale={md.get('softmax_scale')} "
          f"rope={md.get('rope')!r}")
    print(f"  source={md.get('source')!r}")
    if md.get("format") != "tq-kvdump/1":
        print("FAIL metadata format is not tq-kvdump/1"); failures += 1
    if "tokens" not in t:
        print("error: the dump has no tokens tensor", file=sys.stderr)
        return 2
    toks = t["tokens"].astype(np.int64).reshape(-1)
    S = toks.size
    layers = sorted({int(k.split(".")[1]) for k in t if k.startswith("layers.")})
    ts = json.loads(md.get("token_strings", "[]"))
    print(f"  {S} tokens, layers {layers}, token_strings {len(ts)} (first: {ts[:6]})")
    if len(ts) != S:
        print("FAIL token_strings length differs from tokens"); failures += 1

    refs = []
    if args.sample:
        st, smd = ln.load_kvdump(args.sample)
        stoks = st["tokens"].astype(np.int64).reshape(-1)
        same = stoks.size >= S and np.array_equal(stoks[:S], toks)
        print(f"sample: {args.sample}: tokens equal the dump's first {S}: {same}")
        if not same:
            failures += 1
        sref = {l: {n: st[f"layers.{l}.{n}"][..., :S, :] for n in ("q", "k", "v") if f"layers.{l}.{n}" in st}
                for l in layers}
        refs.append(("sample", sref, not args.no_permute))
        ss = smd.get("softmax_scale")
        if ss and md.get("softmax_scale") and not math.isclose(float(ss), float(md["softmax_scale"]), rel_tol=1e-6):
            print(f"FAIL softmax_scale {md['softmax_scale']} != sample's {ss}"); failures += 1
    if args.checkpoint:
        cfg, w = ln.read_checkpoint(args.checkpoint)
        res = ln.forward(cfg, w, toks, dtype=np.float32)
        refs.append(("numpy-fp32", {l: res[l] for l in layers}, not args.no_permute))
        logits = res["logits"]
        print(f"numpy forward: {S} tokens; greedy next token after the prompt: {int(np.argmax(logits[-1]))}")

    for i, path in enumerate(args.against):
        at, amd = ln.load_kvdump(path)
        atoks = at["tokens"].astype(np.int64).reshape(-1)
        same = atoks.size >= S and np.array_equal(atoks[:S], toks)
        print(f"against[{i}]: {path} ({amd.get('source', '')[:80]}): tokens equal: {same}")
        if not same:
            failures += 1
        aref = {l: {n: at[f"layers.{l}.{n}"][..., :S, :] for n in ("q", "k", "v") if f"layers.{l}.{n}" in at}
                for l in layers}
        refs.append((f"against[{i}]", aref, False))
        if amd.get("softmax_scale") and md.get("softmax_scale") and \
                not math.isclose(float(amd["softmax_scale"]), float(md["softmax_scale"]), rel_tol=1e-6):
            print(f"FAIL softmax_scale {md['softmax_scale']} != {amd['softmax_scale']}"); failures += 1

    print(f"\n{'reference':12s} {'tensor':14s} {'max|diff|':>10s} {'ulps@max':>9s} {'rel/row':>9s} {'max|ref|':>9s}  result")
    worst, worst_rel = {}, {}
    for rname, ref, permute in refs:
        for l in layers:
            for n in ("q", "k", "v"):
                key = f"layers.{l}.{n}"
                if key not in t or n not in ref[l]:
                    continue
                r = np.asarray(ref[l][n], dtype=np.float64)
                if n in ("q", "k") and permute:
                    r = r[..., hf_perm(r.shape[-1])]
                d, u, rel, ok = compare(t[key], r, args.ulps)
                worst[(rname, n)] = max(worst.get((rname, n), 0.0), d)
                worst_rel[(rname, n)] = max(worst_rel.get((rname, n), 0.0), rel)
                failures += not ok
                print(f"{rname:12s} {key:14s} {d:10.3e} {u:9.2f} {rel:9.2e} {np.abs(r).max():9.3f}  {'ok' if ok else 'FAIL'}")
            # attention logits: invariant under the channel reordering
            if f"layers.{l}.q" in t and "q" in ref[l]:
                q, k = t[f"layers.{l}.q"].astype(np.float64), t[f"layers.{l}.k"].astype(np.float64)
                rq, rk = np.asarray(ref[l]["q"], np.float64), np.asarray(ref[l]["k"], np.float64)
                g = q.shape[0] // k.shape[0]
                sc = float(md.get("softmax_scale", 1 / math.sqrt(q.shape[-1])))
                a = np.einsum("hsd,htd->hst", q, np.repeat(k, g, 0)) * sc
                b = np.einsum("hsd,htd->hst", rq, np.repeat(rk, g, 0)) * sc
                tri = np.tril(np.ones((S, S), bool))
                dl = float(np.abs(a - b)[:, tri].max())
                bmax = float(np.abs(b[:, tri]).max())
                del a, b
                worst[(rname, "logits")] = max(worst.get((rname, "logits"), 0.0), dl)
                print(f"{rname:12s} {'layers.%d.q.k' % l:14s} {dl:10.3e} {'':9s} {'':9s} {bmax:9.3f}  (scaled logits)")
    print("\nsummary over layers: max abs diff (max diff / head-vector norm)")
    for (rname, n), d in sorted(worst.items()):
        rel = f"  ({worst_rel[(rname, n)]:.2e})" if (rname, n) in worst_rel else "  (scaled q.k logits)"
        print(f"  vs {rname:11s} {n:6s} {d:.3e}{rel}")
    print(f"\n{'PASS' if failures == 0 else 'FAIL'}: {failures} check(s) failed")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
