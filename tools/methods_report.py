#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Markdown table of methods from `tqstudio-cli evaluate --methods ... --json` output (docs/RESULTS.md).

One row per (method, K, V) with K = V (and fp8 / fp16 at their own width): bytes per (token, kv head) for
keys + values from the engine's ledger, the compression versus fp16, the mean attention cosine, top-1, KL,
output error over every (layer, query head), and the worst layer (the lowest per-layer mean attention cosine).

  python3 tools/methods_report.py RESULT.json [--bits 2,3,4]
"""
import argparse
import json
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result")
    ap.add_argument("--bits", default="2,3,4")
    args = ap.parse_args()
    j = json.load(open(args.result))
    bits = {int(b) for b in args.bits.split(",")}
    d = j["head_dim"]
    fp16 = 4.0 * d  # keys + values, 2 bytes each
    layer = defaultdict(list)
    for r in j["per_head"]:
        layer[(r["method"], r["key_bits"], r["value_bits"], r["layer"])].append(r["attention_cosine"])
    print(f"{j['model']} · {j['tokens']} tokens · head_dim {d} · {j['queries']} · key centering {j['key_centering']} · {j['backend']} ({j['device']})")
    print()
    print("| method | K/V bits | B per token·head (K+V) | × vs fp16 | attention cosine | top-1 | KL | output error | worst layer (cosine) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for e in j["summary"]:
        m, kb, vb = e["method"], e["key_bits"], e["value_bits"]
        fixed = m in ("fp8-e4m3", "fp8-e5m2", "fp16")
        if not fixed and (kb != vb or kb not in bits):
            continue
        per = {l: sum(v) / len(v) for (mm, k, vv, l), v in layer.items() if (mm, k, vv) == (m, kb, vb)}
        wl = min(per, key=per.get)
        b = e["key_bytes_per_vector"] + e["value_bytes_per_vector"]
        opts = f" ({e['method_options']})" if e.get("method_options") else ""
        print(f"| {m}{opts} | {kb}/{vb} | {b:.1f} | {fp16 / b:.2f} | {e['attention_cosine']:.4f} | {e['top1']:.3f} | {e['kl']:.3g} | "
              f"{e['output_error']:.3f} | L{wl}: {per[wl]:.3f} |")


if __name__ == "__main__":
    main()
