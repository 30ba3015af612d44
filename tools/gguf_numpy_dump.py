#!/usr/bin/env python3
"""Run a Llama- or Qwen2-architecture GGUF model with a plain numpy forward pass and dump its KV cache.

No torch, no llama.cpp: the GGUF file is read with the ``gguf`` PyPI package, quantized
weights (Q4_0/Q4_1/Q8_0/K-quants/...) are dequantized with ``gguf.quants.dequantize``, and the
forward pass (RMSNorm, RoPE, grouped-query attention, SwiGLU) runs in float32 numpy on the CPU.
The tokenizer (GGUF ``gpt2`` byte-level BPE, e.g. SmolLM2, Qwen2.5) is rebuilt with the
``tokenizers`` package from the vocabulary and merges stored in the file (pre-tokenizers
``smollm``/``gpt2``/``default`` and ``qwen2``; the Qwen2 regex runs in ``tokenizers``' own
Unicode-aware regex engine, so no extra package is needed).

Architectures (``general.architecture``):

* ``llama`` (SmolLM2, TinyLlama, ...): no biases; output head tied to ``token_embd`` when the file
  has no ``output.weight``.
* ``qwen2`` (Qwen2/Qwen2.5, e.g. Qwen2.5-Coder-1.5B-Instruct): like llama plus q/k/v projection
  biases (``blk.L.attn_{q,k,v}.bias``); RoPE is GGML "neox" style = rotate_half on the rows as
  stored (llama.cpp's converter does not permute Qwen2's q/k rows); untied output head
  (``output.weight``, falling back to ``token_embd.weight`` when absent). RoPE theta and the
  RMSNorm epsilon are read from the file for both architectures.

RoPE / q-k layout: llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` (and their
biases) of Llama-architecture models so that RoPE rotates interleaved channel pairs (2i, 2i+1)
(GGML "normal" rope). By default the permutation is undone and RoPE is applied in Hugging
Face's rotate_half form, so the dumped queries/keys are in the same channel order as
``transformers`` (tools/dump_kv.py) produces for the original model; ``--rope-order gguf``
keeps llama.cpp's interleaved order instead (same attention scores, channels of each head
reordered). For ``qwen2`` both orders are the same (no permutation, rotate_half), so
``--rope-order`` has no effect. The dump describes the quantized model that the GGUF holds.

Output: ``tq-kvdump/1`` safetensors (docs/KVDUMP.md) with ``layers.L.q/k/v``
(``[heads, seq, head_dim]``), ``tokens``, metadata ``token_strings``, ``model``,
``softmax_scale`` and provenance.

Examples::

    # sanity check: greedy continuation and top-5 next tokens
    python3 tools/gguf_numpy_dump.py SmolLM2-135M-Instruct.Q4_1.gguf --prompt "The capital of France is" --generate 20
    python3 tools/gguf_numpy_dump.py SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt "What is the capital of France?" --generate 30
    # dump 2048 tokens of a text file, all layers
    python3 tools/gguf_numpy_dump.py SmolLM2-135M-Instruct.Q4_1.gguf --prompt-file text.txt --max-tokens 2048 -o kv.safetensors
    # Qwen2.5-Coder-1.5B-Instruct (tools/fetch_model.py downloads and verifies it)
    python3 tools/gguf_numpy_dump.py "$(python3 tools/fetch_model.py)" --prompt "The capital of France is" --generate 8
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


class GGUFDumpError(Exception):
    pass


# ----------------------------------------------------------------------------- model loading
def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


ARCHITECTURES = ("llama", "qwen2")
QKV_BIAS = {"llama": False, "qwen2": True}  # biases required by the architecture (optional otherwise)


class GGUFLlama:
    """Dequantized float32 weights + hyper-parameters of a llama- or qwen2-architecture GGUF."""

    def __init__(self, path: str, rope_order: str = "hf"):
        try:
            from gguf import GGUFReader
            from gguf.quants import dequantize
        except ImportError as e:
            raise GGUFDumpError(f"needs the `gguf` package (pip install gguf): {e}")
        if not os.path.isfile(path):
            raise GGUFDumpError(f"GGUF file not found: {path}")
        try:
            r = GGUFReader(path)
        except Exception as e:
            raise GGUFDumpError(f"{path}: not a readable GGUF file ({e})")
        self.reader = r
        arch = field(r, "general.architecture")
        if arch not in ARCHITECTURES:
            raise GGUFDumpError(f"{path}: architecture {arch!r}; this tool implements {', '.join(map(repr, ARCHITECTURES))} only")
        self.arch = arch
        p = lambda k, d=None: field(r, f"{arch}.{k}", d)
        self.name = field(r, "general.name", os.path.basename(path))
        self.n_layers = int(p("block_count"))
        self.dim = int(p("embedding_length"))
        self.n_heads = int(p("attention.head_count"))
        self.n_kv_heads = int(p("attention.head_count_kv", self.n_heads))
        self.head_dim = int(p("attention.key_length", self.dim // self.n_heads))
        self.rope_dim = int(p("rope.dimension_count", self.head_dim))
        self.theta = float(p("rope.freq_base", 10000.0))
        self.eps = float(p("attention.layer_norm_rms_epsilon", 1e-5))
        self.ctx = int(p("context_length", 2048))
        if p("rope.scaling.type") not in (None, "none"):
            raise GGUFDumpError(f"rope scaling {p('rope.scaling.type')!r} is not implemented")
        if self.rope_dim != self.head_dim:
            raise GGUFDumpError(f"partial rotary (rope dim {self.rope_dim} of {self.head_dim}) is not implemented")
        if rope_order not in ("hf", "gguf"):
            raise GGUFDumpError("rope_order must be 'hf' or 'gguf'")
        self.rope_order = rope_order
        # llama: GGUF rows permuted for GGML "normal" rope -> undo for hf order; qwen2: GGML "neox"
        # rope = rotate_half on unpermuted rows, the same in both orders
        self.rope_style = "half" if (arch == "qwen2" or rope_order == "hf") else "pairs"
        self.qtypes = {}
        t0 = time.time()
        self.w = {}
        for t in r.tensors:
            self.qtypes[t.tensor_type.name] = self.qtypes.get(t.tensor_type.name, 0) + 1
            shape = tuple(int(x) for x in reversed(t.shape))  # numpy order: [out, in]
            a = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)
            self.w[t.name] = a
        if "output.weight" not in self.w:
            self.w["output.weight"] = self.w["token_embd.weight"]
            self.tied = True
        else:
            self.tied = False
        need = ["token_embd.weight", "output_norm.weight"] + [
            f"blk.{l}.{n}.weight" for l in range(self.n_layers)
            for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
        if QKV_BIAS[arch]:
            need += [f"blk.{l}.attn_{n}.bias" for l in range(self.n_layers) for n in ("q", "k", "v")]
        missing = [n for n in need if n not in self.w]
        if missing:
            raise GGUFDumpError(f"{path}: missing tensors {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        self.has_bias = any(f"blk.{l}.attn_{n}.bias" in self.w for l in range(self.n_layers) for n in ("q", "k", "v"))
        if arch == "llama" and rope_order == "hf":
            for l in range(self.n_layers):
                for n, heads in (("q", self.n_heads), ("k", self.n_kv_heads)):
                    self.w[f"blk.{l}.attn_{n}.weight"] = unpermute_rows(self.w[f"blk.{l}.attn_{n}.weight"], heads)
                    b = self.w.get(f"blk.{l}.attn_{n}.bias")
                    if b is not None:  # the converter permutes q/k biases like the rows
                        self.w[f"blk.{l}.attn_{n}.bias"] = unpermute_rows(b.reshape(-1, 1), heads).reshape(-1)
        self.vocab_size = self.w["token_embd.weight"].shape[0]
        self.load_seconds = time.time() - t0

    # ---------------------------------------------------------------- forward
    def rope(self, x: np.ndarray, pos: np.ndarray) -> np.ndarray:
        d = x.shape[-1]
        inv = 1.0 / self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
        ang = pos[:, None].astype(np.float64) * inv[None, :]
        c, s = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
        out = np.empty_like(x)
        if self.rope_style == "half":  # rotate_half: pairs (i, i + d/2)
            x1, x2 = x[..., : d // 2], x[..., d // 2:]
            out[..., : d // 2] = x1 * c - x2 * s
            out[..., d // 2:] = x2 * c + x1 * s
        else:  # GGML normal rope: pairs (2i, 2i+1)
            x1, x2 = x[..., 0::2], x[..., 1::2]
            out[..., 0::2] = x1 * c - x2 * s
            out[..., 1::2] = x2 * c + x1 * s
        return out

    def linear(self, x, name):
        """x @ W.T (+ bias when the file has ``name.bias``)."""
        y = x @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        return y + bias if bias is not None else y

    def rmsnorm(self, x, w):
        return (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps)) * w

    def forward(self, tokens, keep_layers=(), logits_last_only=True, progress=False):
        tokens = np.asarray(tokens, dtype=np.int64)
        S = tokens.size
        if S == 0:
            raise GGUFDumpError("no tokens")
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise GGUFDumpError(f"token ids must be in [0, {self.vocab_size})")
        H, KV, hd = self.n_heads, self.n_kv_heads, self.head_dim
        g = H // KV
        pos = np.arange(S)
        W = self.w
        x = W["token_embd.weight"][tokens].astype(np.float32)
        mask = np.triu(np.full((S, S), -np.inf, dtype=np.float32), 1)
        scale = np.float32(1.0 / np.sqrt(hd))
        keep = set(keep_layers)
        out = {}
        t0 = time.time()
        for l in range(self.n_layers):
            b = f"blk.{l}."
            h = self.rmsnorm(x, W[b + "attn_norm.weight"])
            q, k, v = (self.linear(h, b + "attn_" + n) for n in ("q", "k", "v"))
            q = q.reshape(S, H, hd).transpose(1, 0, 2)
            k = k.reshape(S, KV, hd).transpose(1, 0, 2)
            v = v.reshape(S, KV, hd).transpose(1, 0, 2)
            k_pre = k
            q = self.rope(q, pos)
            k = self.rope(k, pos)
            o = np.empty((H, S, hd), dtype=np.float32)
            for kv in range(KV):  # GQA: query heads kv*g .. kv*g+g-1 share kv head kv
                qs = q[kv * g:(kv + 1) * g]
                att = (qs @ k[kv].T) * scale + mask
                att = np.exp(att - att.max(-1, keepdims=True))
                att /= att.sum(-1, keepdims=True)
                o[kv * g:(kv + 1) * g] = att @ v[kv]
            x = x + o.transpose(1, 0, 2).reshape(S, H * hd) @ W[b + "attn_output.weight"].T
            h = self.rmsnorm(x, W[b + "ffn_norm.weight"])
            a = h @ W[b + "ffn_gate.weight"].T
            u = h @ W[b + "ffn_up.weight"].T
            x = x + ((a / (1.0 + np.exp(-a))) * u) @ W[b + "ffn_down.weight"].T
            if l in keep:
                out[l] = {"q": q, "k": k, "v": v, "k_prerope": k_pre}
            if progress:
                print(f"\r  layer {l + 1}/{self.n_layers}  {time.time() - t0:.1f}s", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        xf = self.rmsnorm(x[-1:] if logits_last_only else x, W["output_norm.weight"])
        out["logits"] = xf @ W["output.weight"].T
        return out


def unpermute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation: rows per head from interleaved pairs (2i, 2i+1) order
    back to Hugging Face rotate_half order [0, 2, 4, ..., 1, 3, 5, ...]."""
    out_f, in_f = w.shape
    hd = out_f // n_heads
    return np.ascontiguousarray(w.reshape(n_heads, hd // 2, 2, in_f).swapaxes(1, 2).reshape(out_f, in_f))


# ----------------------------------------------------------------------------- tokenizer
# Qwen2's pre-tokenizer split (tokenizer.json of Qwen2/Qwen2.5; llama.cpp's QWEN2 pre-type)
QWEN2_PRE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                   r"|\s*[\r\n]+|\s+(?!\S)|\s+")


class GGUFTokenizer:
    """Byte-level BPE tokenizer (GGUF tokenizer.ggml.model == 'gpt2') via `tokenizers`."""

    def __init__(self, reader):
        try:
            from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
        except ImportError as e:
            raise GGUFDumpError(f"needs the `tokenizers` package (pip install tokenizers): {e}")
        kind = field(reader, "tokenizer.ggml.model")
        if kind != "gpt2":
            raise GGUFDumpError(f"tokenizer model {kind!r}: only GGUF 'gpt2' (byte-level BPE) tokenizers are implemented")
        toks = list(field(reader, "tokenizer.ggml.tokens"))
        types = list(field(reader, "tokenizer.ggml.token_type", [1] * len(toks)))
        merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges", [])]
        pre = field(reader, "tokenizer.ggml.pre", "default")
        vocab = {t: i for i, t in enumerate(toks)}
        tk = Tokenizer(models.BPE(vocab=vocab, merges=merges))
        if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"):
            # llama.cpp: "\p{N}" then the GPT-2 regex
            tk.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        elif pre in ("gpt2", "default"):
            tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        elif pre == "qwen2":
            # Qwen2's tokenizer.json: NFC, then the regex split (llama.cpp LLAMA_VOCAB_PRE_TYPE_QWEN2),
            # then byte-level mapping without the GPT-2 regex
            tk.normalizer = normalizers.NFC()
            tk.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(QWEN2_PRE_REGEX), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        else:
            raise GGUFDumpError(f"pre-tokenizer {pre!r} is not implemented (known: smollm, gpt2, qwen2)")
        tk.decoder = decoders.ByteLevel()
        # control (3) and user-defined (4) tokens are matched as whole tokens in the text, like
        # llama.cpp and Hugging Face's added tokens (Qwen2: <|im_start|>, <tool_call>, ...)
        special = [toks[i] for i, t in enumerate(types) if t in (3, 4)]
        tk.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
        self.tk = tk
        self.pre = pre
        self.special_ids = {vocab[s] for s in special}
        self.add_bos = bool(field(reader, "tokenizer.ggml.add_bos_token", False))
        self.bos = field(reader, "tokenizer.ggml.bos_token_id")
        self.eos = field(reader, "tokenizer.ggml.eos_token_id")
        self.chat_template = field(reader, "tokenizer.chat_template")
        self.tokens = toks
        self.byte_decoder = {c: b for b, c in bytes_to_unicode().items()}

    def encode(self, text: str) -> list[int]:
        ids = self.tk.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos is not None:
            ids = [int(self.bos)] + ids
        return ids

    def decode(self, ids) -> str:
        return self.tk.decode(list(map(int, ids)), skip_special_tokens=False)

    def token_bytes(self, t: int) -> bytes:
        """The raw text bytes of token t (special tokens: their UTF-8 name)."""
        if t in self.special_ids:
            return self.tokens[t].encode("utf-8")
        try:
            return bytes(self.byte_decoder[c] for c in self.tokens[t])
        except KeyError:  # not a byte-level piece (should not happen in a gpt2 vocabulary)
            return self.tk.decode([t]).encode("utf-8")

    def token_strings(self, ids) -> list[str]:
        """The text piece of every token, decoded incrementally: a character whose UTF-8 bytes are
        split over several tokens belongs to the token that completes it (the others get ""), so
        "".join(token_strings(ids)) == decode(ids) whenever the bytes are valid UTF-8."""
        import codecs
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        out = [dec.decode(self.token_bytes(int(t))) for t in ids]
        tail = dec.decode(b"", final=True)
        if tail and out:
            out[-1] += tail
        return out

    def chat(self, user: str) -> str:
        if not self.chat_template:
            raise GGUFDumpError("--chat: the GGUF has no tokenizer.chat_template")
        import jinja2
        return jinja2.Template(self.chat_template).render(
            messages=[{"role": "user", "content": user}], add_generation_prompt=True)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the alphabet of byte-level BPE vocabularies)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
        list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


# ----------------------------------------------------------------------------- cli
def parse_layers(spec: str, n: int) -> list[int]:
    if spec.strip().lower() in ("all", "*"):
        return list(range(n))
    out = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                out.extend(range(int(a) % n if int(a) < 0 else int(a), (int(b) % n if int(b) < 0 else int(b)) + 1))
            elif part:
                out.append(int(part) + n if int(part) < 0 else int(part))
        except ValueError:
            raise GGUFDumpError(f"bad --layers entry {part!r}")
    bad = [i for i in out if not 0 <= i < n]
    if bad:
        raise GGUFDumpError(f"--layers: {bad} out of range, the model has {n} layers")
    return sorted(set(out))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", help="GGUF model file (llama or qwen2 architecture)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", help="read the prompt from this UTF-8 file")
    src.add_argument("--token-ids", help="comma-separated token ids")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt as a user message with the GGUF's chat template")
    ap.add_argument("--max-tokens", type=int, default=512, help="keep at most this many prompt tokens (default 512)")
    ap.add_argument("--generate", type=int, default=0, metavar="N", help="greedy-decode N tokens and print them")
    ap.add_argument("--top", type=int, default=5, help="print the top-K next-token predictions (default 5)")
    ap.add_argument("-o", "--out", help="write a tq-kvdump/1 safetensors file of the prompt")
    ap.add_argument("--layers", default="all", help="layers to dump: all (default) or e.g. 0,15,29")
    ap.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16", help="stored dtype (default fp16)")
    ap.add_argument("--prerope", action="store_true", help="also store layers.L.k_prerope")
    ap.add_argument("--no-queries", action="store_true", help="store keys and values only")
    ap.add_argument("--rope-order", choices=("hf", "gguf"), default="hf",
                    help="channel order of q/k (llama): hf = rotate_half like transformers (default), gguf = interleaved "
                         "pairs; qwen2 is rotate_half either way")
    ap.add_argument("--model-name", help="metadata `model` (default: general.name of the GGUF + file name)")
    ap.add_argument("--text-source", default="", help="free text stored in metadata `source` (where the prompt text comes from)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = ap.parse_args(argv)
    if args.max_tokens <= 0:
        ap.error("--max-tokens must be positive")
    if args.generate < 0:
        ap.error("--generate must be >= 0")
    if args.out:
        if not args.out.endswith(".safetensors"):
            ap.error("--out must end in .safetensors")
        if os.path.exists(args.out) and not args.overwrite:
            ap.error(f"{args.out} exists (use --overwrite)")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            ap.error(f"output folder does not exist: {os.path.dirname(os.path.abspath(args.out))}")
    if args.prompt_file and not os.path.isfile(args.prompt_file):
        ap.error(f"--prompt-file not found: {args.prompt_file}")
    if args.chat and args.token_ids:
        ap.error("--chat needs --prompt or --prompt-file")
    try:
        m = GGUFLlama(args.gguf, args.rope_order)
        print(f"{m.name} [{m.arch}]: {m.n_layers} layers, dim {m.dim}, {m.n_heads} q / {m.n_kv_heads} kv heads, head_dim "
              f"{m.head_dim}, rope theta {m.theta:g}, eps {m.eps:g}, vocab {m.vocab_size}, tied output {m.tied}, "
              f"qkv bias {m.has_bias}; "
              f"tensor types {m.qtypes}; dequantized in {m.load_seconds:.1f}s", file=sys.stderr)
        tok = GGUFTokenizer(m.reader)
        text = None
        if args.token_ids:
            try:
                ids = [int(x) for x in args.token_ids.split(",") if x.strip()]
            except ValueError:
                raise GGUFDumpError("--token-ids must be comma-separated integers")
        else:
            text = args.prompt if args.prompt is not None else open(args.prompt_file, encoding="utf-8").read()
            if not text.strip():
                raise GGUFDumpError("the prompt is empty")
            if args.chat:
                text = tok.chat(text)
            ids = tok.encode(text)
        n_all = len(ids)
        ids = ids[: args.max_tokens]
        if n_all > len(ids):
            text = None  # the stored text is rebuilt from the kept tokens
        layers = parse_layers(args.layers, m.n_layers) if args.out else []
        t0 = time.time()
        res = m.forward(ids, keep_layers=layers, progress=bool(args.out))
        print(f"forward pass of {len(ids)} tokens{f' (of {n_all})' if n_all > len(ids) else ''}: "
              f"{time.time() - t0:.1f}s", file=sys.stderr)
        lg = res["logits"][-1].astype(np.float64)
        pr = np.exp(lg - lg.max()); pr /= pr.sum()
        top = np.argsort(-lg)[: args.top]
        print("next-token top-%d after the prompt: %s" % (
            args.top, ", ".join(f"{tok.tokens[i]!r} ({int(i)}) p={pr[i]:.3f}" for i in top)))
        if args.generate:
            gen = list(ids)
            for _ in range(args.generate):
                nxt = int(np.argmax(m.forward(gen)["logits"][-1]))
                gen.append(nxt)
                if tok.eos is not None and nxt == int(tok.eos):
                    break
                if nxt in tok.special_ids and tok.tokens[nxt] in ("<|im_end|>", "<|endoftext|>"):
                    break
            print("greedy continuation: " + json.dumps(tok.decode(gen[len(ids):]), ensure_ascii=False))
        if args.out:
            from safetensors.numpy import save_file
            dt = np.float16 if args.dtype == "fp16" else np.float32
            tensors = {"tokens": np.asarray(ids, dtype=np.int32)}
            for l in layers:
                if not args.no_queries:
                    tensors[f"layers.{l}.q"] = np.ascontiguousarray(res[l]["q"].astype(dt))
                tensors[f"layers.{l}.k"] = np.ascontiguousarray(res[l]["k"].astype(dt))
                tensors[f"layers.{l}.v"] = np.ascontiguousarray(res[l]["v"].astype(dt))
                if args.prerope:
                    tensors[f"layers.{l}.k_prerope"] = np.ascontiguousarray(res[l]["k_prerope"].astype(dt))
            ts = tok.token_strings(ids)
            if m.arch == "qwen2":
                order = "rotate_half (Hugging Face / GGML neox) channel order; GGUF rows as stored (qwen2: not permuted)"
            elif args.rope_order == "hf":
                order = "rotate_half (Hugging Face) channel order; llama.cpp's q/k row permutation undone"
            else:
                order = "interleaved pairs (2i, 2i+1), llama.cpp GGUF row order"
            md = {
                "format": "tq-kvdump/1",
                "model": args.model_name or f"{m.name} ({os.path.basename(args.gguf)})",
                "architecture": f"{m.arch} (GGUF{', q/k/v biases' if m.has_bias else ''}, dequantized: " + ", ".join(f"{k} x{v}" for k, v in m.qtypes.items()) + ")",
                "num_layers": str(len(layers)),
                "layers": ",".join(map(str, layers)),
                "num_q_heads": str(m.n_heads),
                "num_kv_heads": str(m.n_kv_heads),
                "head_dim": str(m.head_dim),
                "softmax_scale": repr(1.0 / float(np.sqrt(m.head_dim))),
                "rope": f"post (theta {m.theta:g}, {order})",
                "token_strings": json.dumps(ts, ensure_ascii=False),
                "text": text if text is not None else tok.decode(ids),
                "prompt_tokens": str(len(ids)),
                "source": "tools/gguf_numpy_dump.py (numpy float32 forward pass of the GGUF weights)"
                          + (f"; text: {args.text_source}" if args.text_source else ""),
            }
            save_file(tensors, args.out, metadata=md)
            print(f"wrote {args.out}: {len(ids)} tokens, layers {layers[0]}..{layers[-1]} ({len(layers)}), "
                  f"{os.path.getsize(args.out)} bytes", file=sys.stderr)
    except GGUFDumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
