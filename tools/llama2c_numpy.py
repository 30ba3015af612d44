#!/usr/bin/env python3
"""Reference forward pass of a llama2.c checkpoint in plain numpy (no torch).

This is an independent re-implementation of the forward pass in Andrej Karpathy's
llama2.c ``run.c`` (RMSNorm, interleaved-pair RoPE, grouped-query attention, SwiGLU FFN),
used to check KV dumps without torch:

* ``--check SAMPLE``  recompute the sample's tokens and compare q/k/v/k_prerope to a
  ``tq-kvdump/1`` file made from the same checkpoint (e.g. ../shared/data/kv/*),
* ``--generate N``    greedy-decode N tokens from a prompt (sanity check of the model),
* ``--dump OUT``      write the forward pass's tensors as a ``tq-kvdump/1`` safetensors file
  (llama2.c channel order: RoPE rotates interleaved pairs (2i, 2i+1)).

The llama2.c checkpoint ("legacy" version 0 format): 7 int32
``dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len`` then fp32 weights
in the order token_embedding, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final,
freq_cis_real, freq_cis_imag, [wcls if vocab_size < 0]. Every matrix is row-major
``[out_features, in_features]`` (the torch ``nn.Linear`` layout).
The tokenizer file (``tok512.bin``, ``tokenizer.bin``): int32 max_token_length, then per
token: float32 score, int32 length, bytes (SentencePiece pieces with U+2581 replaced by a
space; BOS/EOS written as "\\n<s>\\n" / "\\n</s>\\n").

Examples::

    python3 tools/llama2c_numpy.py ../shared/data/models/stories260K.bin --generate 40
    python3 tools/llama2c_numpy.py ../shared/data/models/stories260K.bin \\
        --check ../shared/data/kv/stories260K_lily_512.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import sys

import numpy as np

HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


class Llama2cError(Exception):
    pass


# ----------------------------------------------------------------------------- reading
def read_checkpoint(path: str) -> tuple[dict, dict]:
    """Return (config, weights) of a llama2.c checkpoint; weights are fp32 numpy arrays.

    config has the 7 header fields (vocab_size made positive), ``shared_classifier``,
    ``head_dim``. weights: ``tok_embeddings [V, D]``, per layer lists ``rms_att``, ``wq
    [H*hd, D]``, ``wk``, ``wv [KV*hd, D]``, ``wo [D, H*hd]``, ``rms_ffn``, ``w1 [F, D]``,
    ``w2 [D, F]``, ``w3 [F, D]`` and ``rms_final [D]``, ``wcls [V, D]``.
    """
    if not os.path.isfile(path):
        raise Llama2cError(f"checkpoint not found: {path}")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size < 28:
        raise Llama2cError(f"{path}: too short for a llama2.c header ({raw.size} bytes)")
    hdr = struct.unpack("<7i", raw[:28].tobytes())
    cfg = dict(zip(HEADER_FIELDS, hdr))
    if cfg["dim"] <= 0 or cfg["n_layers"] <= 0 or cfg["n_heads"] <= 0 or cfg["n_kv_heads"] <= 0:
        raise Llama2cError(f"{path}: implausible header {cfg} (is this a llama2.c v0 checkpoint?)")
    if cfg["dim"] % cfg["n_heads"] or cfg["n_heads"] % cfg["n_kv_heads"]:
        raise Llama2cError(f"{path}: dim/n_heads/n_kv_heads inconsistent: {cfg}")
    cfg["shared_classifier"] = cfg["vocab_size"] > 0
    cfg["vocab_size"] = abs(cfg["vocab_size"])
    D, F, L = cfg["dim"], cfg["hidden_dim"], cfg["n_layers"]
    H, KV, V, S = cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab_size"], cfg["seq_len"]
    hd = D // H
    cfg["head_dim"] = hd
    data = raw[28:]
    if data.size % 4:
        raise Llama2cError(f"{path}: weight bytes not a multiple of 4")
    w = data.view("<f4")
    sizes = [
        ("tok_embeddings", (V, D)),
        ("rms_att", (L, D)),
        ("wq", (L, H * hd, D)),
        ("wk", (L, KV * hd, D)),
        ("wv", (L, KV * hd, D)),
        ("wo", (L, D, H * hd)),
        ("rms_ffn", (L, D)),
        ("w1", (L, F, D)),
        ("w2", (L, D, F)),
        ("w3", (L, F, D)),
        ("rms_final", (D,)),
        ("freq_cis_real", (S, hd // 2)),
        ("freq_cis_imag", (S, hd // 2)),
    ]
    if not cfg["shared_classifier"]:
        sizes.append(("wcls", (V, D)))
    need = sum(int(np.prod(s)) for _, s in sizes)
    if w.size < need:
        raise Llama2cError(f"{path}: {w.size} floats after the header, the header implies {need}")
    if w.size > need:
        print(f"warning: {path}: {w.size - need} trailing floats ignored", file=sys.stderr)
    out, off = {}, 0
    for name, shape in sizes:
        n = int(np.prod(shape))
        out[name] = np.array(w[off:off + n], dtype=np.float32).reshape(shape)
        off += n
    if cfg["shared_classifier"]:
        out["wcls"] = out["tok_embeddings"]
    return cfg, out


def read_tokenizer(path: str, vocab_size: int) -> tuple[list[bytes], np.ndarray]:
    """Return (pieces as bytes exactly as stored, scores) of a llama2.c tokenizer file."""
    if not os.path.isfile(path):
        raise Llama2cError(f"tokenizer not found: {path}")
    b = open(path, "rb").read()
    off = 4  # max_token_length
    pieces, scores = [], []
    for i in range(vocab_size):
        if off + 8 > len(b):
            raise Llama2cError(f"{path}: ends after {i} tokens, the model has {vocab_size}")
        score, n = struct.unpack_from("<fi", b, off)
        off += 8
        pieces.append(b[off:off + n])
        scores.append(score)
        off += n
    return pieces, np.array(scores, dtype=np.float32)


def piece_text(piece: bytes) -> str:
    """Display text of one stored piece: BOS/EOS as <s>/</s>, <0xNN> as that byte."""
    s = piece.decode("utf-8", errors="replace")
    if s.strip("\n") in ("<s>", "</s>") and s.startswith("\n"):
        return s.strip("\n")
    if len(s) == 6 and s.startswith("<0x") and s.endswith(">"):
        return bytes([int(s[3:5], 16)]).decode("latin-1")
    return s


def decode_token_strings(pieces: list[bytes], tokens) -> list[str]:
    """Per-token text pieces following llama2.c's decode (leading space stripped after BOS)."""
    out, prev = [], None
    for t in tokens:
        s = piece_text(pieces[int(t)])
        if prev == 1 and s.startswith(" ") and int(t) != 1:
            s = s[1:]
        out.append(s)
        prev = int(t)
    return out


def encode(pieces: list[bytes], scores: np.ndarray, text: str, bos: bool = True) -> list[int]:
    """llama2.c's BPE encode (dummy prefix space, byte fallback, greedy best-score merges)."""
    lookup = {p: i for i, p in enumerate(pieces)}
    toks = [1] if bos else []
    if not text:
        return toks
    ids = [lookup[b" "]]
    for ch in text:
        cb = ch.encode("utf-8")
        if cb in lookup:
            ids.append(lookup[cb])
        else:
            ids.extend(c + 3 for c in cb)
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(len(ids) - 1):
            j = lookup.get(pieces[ids[i]] + pieces[ids[i + 1]])
            if j is not None and scores[j] > best:
                best, best_i, best_id = scores[j], i, j
        if best_i < 0:
            break
        ids[best_i:best_i + 2] = [best_id]
    return toks + ids


# ----------------------------------------------------------------------------- forward
def rope_interleaved(x: np.ndarray, pos: np.ndarray, theta: float = 10000.0) -> np.ndarray:
    """Rotate pairs (2i, 2i+1) of the last axis by pos * theta^(-2i/d) (llama2.c run.c)."""
    d = x.shape[-1]
    freq = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None].astype(np.float64) * freq[None, :]  # [S, d/2]
    c, s = np.cos(ang).astype(x.dtype), np.sin(ang).astype(x.dtype)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def forward(cfg: dict, w: dict, tokens, dtype=np.float32, layers=None) -> dict:
    """Full-sequence causal forward pass. Returns dict with ``logits [S, V]`` and per layer
    ``L`` the tensors ``q [H, S, hd]``, ``k``, ``k_prerope``, ``v [KV, S, hd]``
    (post-RoPE q/k in llama2.c's interleaved channel order)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    S = tokens.size
    if S == 0:
        raise Llama2cError("no tokens")
    if tokens.min() < 0 or tokens.max() >= cfg["vocab_size"]:
        raise Llama2cError(f"token ids must be in [0, {cfg['vocab_size']})")
    D, H, KV, hd = cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
    g = H // KV
    pos = np.arange(S)
    x = w["tok_embeddings"][tokens].astype(dtype)
    mask = np.triu(np.full((S, S), -np.inf, dtype=dtype), 1)
    keep = set(range(cfg["n_layers"])) if layers is None else set(layers)
    out = {}
    cast = lambda a: a.astype(dtype)
    for l in range(cfg["n_layers"]):
        h = rmsnorm(x, cast(w["rms_att"][l]))
        q = (h @ cast(w["wq"][l]).T).reshape(S, H, hd).transpose(1, 0, 2)
        k = (h @ cast(w["wk"][l]).T).reshape(S, KV, hd).transpose(1, 0, 2)
        v = (h @ cast(w["wv"][l]).T).reshape(S, KV, hd).transpose(1, 0, 2)
        k_pre = k
        q = rope_interleaved(q, pos)
        k = rope_interleaved(k, pos)
        kr = np.repeat(k, g, axis=0)  # kv head of query head h is h // g
        vr = np.repeat(v, g, axis=0)
        att = q @ kr.transpose(0, 2, 1) / np.sqrt(hd).astype(dtype) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = (att @ vr).transpose(1, 0, 2).reshape(S, H * hd)
        x = x + o @ cast(w["wo"][l]).T
        h = rmsnorm(x, cast(w["rms_ffn"][l]))
        a = h @ cast(w["w1"][l]).T
        b = h @ cast(w["w3"][l]).T
        x = x + ((a / (1 + np.exp(-a))) * b) @ cast(w["w2"][l]).T
        if l in keep:
            out[l] = {"q": q, "k": k, "k_prerope": k_pre, "v": v}
    x = rmsnorm(x, cast(w["rms_final"]))
    out["logits"] = x @ cast(w["wcls"]).T
    return out


def greedy(cfg, w, tokens, n):
    toks = list(tokens)
    for _ in range(n):
        toks.append(int(np.argmax(forward(cfg, w, toks, layers=[])["logits"][-1])))
    return toks


# ----------------------------------------------------------------------------- io
def load_kvdump(path: str) -> tuple[dict, dict]:
    """Load a tq-kvdump/1 safetensors or npz file: (tensors as numpy, metadata)."""
    if path.endswith(".npz"):
        z = np.load(path)
        t = {k: z[k] for k in z.files if k != "__metadata__"}
        md = json.loads(bytes(z["__metadata__"]).decode()) if "__metadata__" in z.files else {}
        return t, md
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})


def write_dump(path, cfg, res, tokens, token_strings, model, dtype=np.float16, text=""):
    from safetensors.numpy import save_file
    t = {"tokens": np.asarray(tokens, dtype=np.int32)}
    layers = sorted(k for k in res if isinstance(k, int))
    for l in layers:
        for name in ("q", "k", "v", "k_prerope"):
            t[f"layers.{l}.{name}"] = np.ascontiguousarray(res[l][name].astype(dtype))
    md = {
        "format": "tq-kvdump/1", "model": model,
        "architecture": "llama (llama2.c checkpoint)",
        "num_layers": str(len(layers)), "num_q_heads": str(cfg["n_heads"]),
        "num_kv_heads": str(cfg["n_kv_heads"]), "head_dim": str(cfg["head_dim"]),
        "softmax_scale": repr(1.0 / float(np.sqrt(cfg["head_dim"]))),
        "rope": "post (theta 10000, interleaved pairs)",
        "token_strings": json.dumps(token_strings, ensure_ascii=False),
        "text": text, "source": "tools/llama2c_numpy.py (numpy reference forward pass)",
    }
    save_file(t, path, metadata=md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="llama2.c .bin checkpoint")
    ap.add_argument("--tokenizer", help="llama2.c tokenizer .bin (default: tok<vocab>.bin next to the checkpoint)")
    ap.add_argument("--prompt", default="", help="prompt text for --generate / --dump (BOS is prepended)")
    ap.add_argument("--generate", type=int, metavar="N", help="greedy-decode N tokens and print the text")
    ap.add_argument("--check", metavar="DUMP", help="compare against a tq-kvdump/1 file of this checkpoint")
    ap.add_argument("--max-tokens", type=int, default=None, help="use at most this many tokens of --check's file")
    ap.add_argument("--dump", metavar="OUT", help="write a tq-kvdump/1 safetensors of the forward pass")
    ap.add_argument("--tokens-from", metavar="DUMP", help="for --dump: take the token ids from this dump's `tokens`")
    ap.add_argument("--float64", action="store_true", help="compute in float64 (default float32)")
    args = ap.parse_args(argv)
    try:
        cfg, w = read_checkpoint(args.checkpoint)
        dtype = np.float64 if args.float64 else np.float32
        tokp = args.tokenizer or os.path.join(os.path.dirname(args.checkpoint) or ".", f"tok{cfg['vocab_size']}.bin")
        pieces = scores = None
        if os.path.isfile(tokp):
            pieces, scores = read_tokenizer(tokp, cfg["vocab_size"])
        print(f"config: { {k: cfg[k] for k in HEADER_FIELDS} } shared_classifier={cfg['shared_classifier']}")
        if not (args.generate or args.check or args.dump):
            ap.error("nothing to do: give --generate, --check or --dump")
        if args.generate:
            if pieces is None:
                raise Llama2cError(f"--generate needs the tokenizer ({tokp} not found; use --tokenizer)")
            toks = greedy(cfg, w, encode(pieces, scores, args.prompt), args.generate)
            print("".join(decode_token_strings(pieces, toks)[1:]))
        if args.check:
            ref, md = load_kvdump(args.check)
            if "tokens" not in ref:
                raise Llama2cError(f"{args.check} has no `tokens` tensor")
            toks = ref["tokens"].astype(np.int64).reshape(-1)[: args.max_tokens]
            S = toks.size
            res = forward(cfg, w, toks, dtype=dtype)
            worst = 0.0
            for l in range(cfg["n_layers"]):
                for name in ("q", "k", "v", "k_prerope"):
                    key = f"layers.{l}.{name}"
                    if key not in ref:
                        continue
                    r = ref[key].astype(np.float64)[..., :S, :]
                    mine = res[l][name].astype(np.float64)
                    # compare what the file's dtype can represent: round ours the same way
                    mine_r = mine.astype(ref[key].dtype).astype(np.float64)
                    d = float(np.abs(r - mine).max())
                    dr = float(np.abs(r - mine_r).max())
                    worst = max(worst, d)
                    print(f"{key:22s} max|ref-numpy| {d:.3e}  after rounding to {ref[key].dtype}: {dr:.3e}  (max|ref| {np.abs(r).max():.2f})")
            print(f"{S} tokens, worst max abs diff {worst:.3e}")
        if args.dump:
            if args.tokens_from:
                toks = load_kvdump(args.tokens_from)[0]["tokens"].astype(np.int64).reshape(-1)[: args.max_tokens]
            else:
                if pieces is None:
                    raise Llama2cError("--dump without --tokens-from needs the tokenizer")
                toks = encode(pieces, scores, args.prompt)
            res = forward(cfg, w, toks, dtype=dtype)
            ts = decode_token_strings(pieces, toks) if pieces is not None else [str(int(t)) for t in toks]
            write_dump(args.dump, cfg, res, toks, ts, os.path.basename(args.checkpoint).rsplit(".", 1)[0],
                       text="".join(ts[1:]))
            print(f"wrote {args.dump} ({len(toks)} tokens)")
    except Llama2cError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
