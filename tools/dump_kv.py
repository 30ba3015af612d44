#!/usr/bin/env python3
"""Dump the KV cache (and post-RoPE queries) of a Hugging Face causal LM as ``tq-kvdump/1``.

Runs one prompt through any ``transformers`` causal LM (a local folder, which works offline,
or a hub id) and writes, for the chosen layers, a safetensors file with

* ``layers.L.k`` ``[kv_heads, seq, head_dim]``   keys as the cache holds them (post-RoPE),
* ``layers.L.v`` ``[kv_heads, seq, head_dim_v]`` values from the cache,
* ``layers.L.q`` ``[q_heads, seq, head_dim]``    post-RoPE queries, one row per query head
  (GQA: q_heads is a multiple of kv_heads; query head h reads kv head h // (q_heads/kv_heads)),
* ``tokens`` ``[seq]`` (int32),

and metadata ``format=tq-kvdump/1``, ``model``, ``num_layers``, ``num_q_heads``,
``num_kv_heads``, ``head_dim``, ``softmax_scale`` (the scale the attention module really
uses), ``rope``, ``token_strings`` (JSON list of each token's text piece), ``text``,
``prompt_tokens``, ``source``. See docs/KVDUMP.md / docs/DUMPING.md.

Queries are captured inside the attention call: the script registers a pass-through attention
function in transformers' ``AttentionInterface`` that records (query, key, value, scaling) of
every layer and then runs the model's normal attention (sdpa or eager), so it works for every
architecture that uses that interface (Llama, Mistral, Qwen2/2.5/3, Gemma, Phi-3, ...;
transformers >= 4.48). Keys and values are read from the returned cache and cross-checked
against the captured ones.

Examples::

    python3 tools/dump_kv.py HuggingFaceTB/SmolLM2-135M-Instruct --prompt-file README.md \\
        --max-tokens 1024 --layers 0,15,29 -o smollm2.safetensors
    python3 tools/dump_kv.py ./my-local-model --offline --prompt "Hello" --layers all -o kv.safetensors
    python3 tools/dump_kv.py ./stories260K-hf --tokens-from sample.safetensors --max-tokens 256 -o kv.safetensors
    python3 tools/dump_kv.py ./gguf-folder --gguf-file model.Q4_1.gguf --prompt-file text.txt -o kv.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import sys

EXIT_USAGE = 2
CAPTURE_NAME = "tq_capture"


class DumpError(Exception):
    pass


# ----------------------------------------------------------------------------- arguments
def parse_layers(spec: str, n_layers: int) -> list[int]:
    """'all' | comma list of indices and ranges 'a-b' (negative indices count from the end)."""
    spec = spec.strip().lower()
    if spec in ("all", "*", ""):
        return list(range(n_layers))
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                lo, hi = int(a), int(b)
                if lo < 0:
                    lo += n_layers
                if hi < 0:
                    hi += n_layers
                rng = list(range(lo, hi + 1))
                if not rng:
                    raise DumpError(f"empty layer range {part!r}")
                out.extend(rng)
            else:
                i = int(part)
                out.append(i + n_layers if i < 0 else i)
        except ValueError:
            raise DumpError(f"bad --layers entry {part!r}: use 'all', indices and ranges like 0,5-7,-1")
    bad = [i for i in out if not 0 <= i < n_layers]
    if bad:
        raise DumpError(f"--layers {spec!r}: layer(s) {bad} out of range, the model has {n_layers} layers (0..{n_layers - 1})")
    return sorted(set(out))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="Hugging Face model: a local folder or a hub id")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-file", help="read the prompt text from this file (UTF-8)")
    src.add_argument("--token-ids", help="comma-separated token ids to feed as they are")
    src.add_argument("--tokens-from", metavar="DUMP",
                     help="feed the `tokens` tensor of an existing tq-kvdump/1 file (.safetensors/.npz)")
    ap.add_argument("-o", "--out", required=True, help="output .safetensors file")
    ap.add_argument("--max-tokens", type=int, default=512,
                    help="keep at most this many tokens (after adding special tokens); default 512")
    ap.add_argument("--layers", default="all", help="layers to dump: 'all' (default) or e.g. '0,15,29' or '0-3,-1'")
    ap.add_argument("--dtype", choices=("fp16", "bf16", "fp32"), default="fp16", help="stored tensor dtype (default fp16)")
    ap.add_argument("--model-dtype", choices=("auto", "fp32", "bf16", "fp16"), default="fp32",
                    help="dtype the model runs in (default fp32; 'auto' = the checkpoint's)")
    ap.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, cuda:1, mps")
    ap.add_argument("--no-queries", action="store_true", help="write keys and values only")
    ap.add_argument("--no-special-tokens", action="store_true", help="do not let the tokenizer add BOS etc.")
    ap.add_argument("--chat", action="store_true", help="wrap the prompt as one user message with the chat template")
    ap.add_argument("--offline", action="store_true", help="never touch the network (sets HF_HUB_OFFLINE=1)")
    ap.add_argument("--trust-remote-code", action="store_true", help="allow models with custom code")
    ap.add_argument("--revision", help="hub revision (branch, tag or commit)")
    ap.add_argument("--gguf-file", help="load this GGUF file inside the model folder / repo (transformers dequantizes it; "
                                        "needs the gguf and accelerate packages)")
    ap.add_argument("--model-name", help="name stored in metadata `model` (default: the model argument)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return ap


def check_args(ap, args):
    if args.max_tokens is not None and args.max_tokens <= 0:
        ap.error("--max-tokens must be positive")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        ap.error(f"output folder does not exist: {out_dir}")
    if os.path.exists(args.out) and not args.overwrite:
        ap.error(f"{args.out} exists (use --overwrite)")
    if not args.out.endswith(".safetensors"):
        ap.error("--out must end in .safetensors")
    if args.prompt_file and not os.path.isfile(args.prompt_file):
        ap.error(f"--prompt-file not found: {args.prompt_file}")
    if args.tokens_from and not os.path.isfile(args.tokens_from):
        ap.error(f"--tokens-from not found: {args.tokens_from}")
    if args.prompt is not None and not args.prompt:
        ap.error("--prompt is empty")
    if args.chat and (args.token_ids or args.tokens_from):
        ap.error("--chat needs --prompt or --prompt-file")
    looks_local = os.path.sep in args.model or args.model.startswith(".") or os.path.exists(args.model)
    if looks_local and not os.path.isdir(args.model):
        ap.error(f"model folder not found: {args.model}")
    if args.gguf_file and os.path.isdir(args.model) and not os.path.isfile(os.path.join(args.model, args.gguf_file)):
        ap.error(f"--gguf-file {args.gguf_file} not found in {args.model}")


# ----------------------------------------------------------------------------- helpers
def read_token_file(path: str):
    import numpy as np
    if path.endswith(".npz"):
        z = np.load(path)
        if "tokens" not in z.files:
            raise DumpError(f"{path} has no `tokens` array (found: {', '.join(z.files)})")
        return [int(t) for t in z["tokens"].reshape(-1)]
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        if "tokens" not in f.keys():
            raise DumpError(f"{path} has no `tokens` tensor (found: {', '.join(sorted(f.keys())[:20])} ...)")
        return [int(t) for t in f.get_tensor("tokens").reshape(-1)]


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    """Text piece of every token: the growth of the decoded text when the token is appended
    to a short left context (keeps leading spaces and fuses byte-fallback pieces sensibly)."""
    if tokenizer is None:
        return [str(i) for i in ids]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = []
    for i, t in enumerate(ids):
        if t in special:
            out.append(tokenizer.convert_ids_to_tokens(t))
            continue
        ctx = [c for c in ids[max(0, i - 6):i] if c not in special]
        try:
            a = tokenizer.decode(ctx, skip_special_tokens=True, clean_up_tokenization_spaces=False) if ctx else ""
            b = tokenizer.decode(ctx + [t], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            piece = b[len(a):] if b.startswith(a) else tokenizer.decode([t], clean_up_tokenization_spaces=False)
        except Exception:  # pragma: no cover - exotic tokenizers
            piece = str(tokenizer.convert_ids_to_tokens(t))
        out.append(piece)
    return out


def cache_layer_kv(cache, layer: int):
    """(keys, values) of one layer from any transformers cache flavour, or None."""
    if cache is None:
        return None
    try:
        if hasattr(cache, "layers"):  # transformers >= 4.56 Cache with CacheLayer objects
            lay = cache.layers[layer]
            return lay.keys, lay.values
        if hasattr(cache, "key_cache"):  # DynamicCache 4.36 .. 4.55
            return cache.key_cache[layer], cache.value_cache[layer]
        if isinstance(cache, (tuple, list)):  # legacy tuple of (k, v)
            return cache[layer][0], cache[layer][1]
    except (IndexError, AttributeError, TypeError):
        return None
    return None


def describe_rope(config) -> str:
    rp = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if isinstance(rp, dict) and rp and all(isinstance(v, dict) for v in rp.values()):
        rp = next(iter(rp.values()))  # per-layer-type parameters (e.g. Gemma 3)
    theta = (rp.get("rope_theta") if isinstance(rp, dict) else None) or getattr(config, "rope_theta", None)
    kind = (rp.get("rope_type") or rp.get("type")) if isinstance(rp, dict) else None
    parts = [f"theta {theta:g}" if theta else None, kind if kind and kind != "default" else None,
             "rotate_half (Hugging Face) channel order"]
    return "post (" + ", ".join(p for p in parts if p) + ")"


# ----------------------------------------------------------------------------- main work
def dump(args) -> dict:
    try:
        import numpy as np
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise DumpError(f"dump_kv.py needs torch, transformers, numpy and safetensors ({e})")
    try:
        from transformers import AttentionInterface
    except ImportError:
        raise DumpError(f"transformers {transformers.__version__} has no AttentionInterface; need >= 4.48")
    from safetensors.numpy import save_file

    if args.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    common = {"trust_remote_code": args.trust_remote_code}
    if args.revision:
        common["revision"] = args.revision
    if args.offline:
        common["local_files_only"] = True
    if args.gguf_file:
        common["gguf_file"] = args.gguf_file

    # ---- tokens
    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, **common)
    except Exception as e:
        if args.prompt is not None or args.prompt_file:
            raise DumpError(f"cannot load a tokenizer for {args.model}: {e}")
        print(f"warning: no tokenizer ({type(e).__name__}); token_strings will be ids", file=sys.stderr)
    if args.token_ids:
        try:
            ids = [int(x) for x in args.token_ids.replace(" ", "").split(",") if x]
        except ValueError:
            raise DumpError("--token-ids must be comma-separated integers")
        text = None
    elif args.tokens_from:
        ids, text = read_token_file(args.tokens_from), None
    else:
        text = args.prompt if args.prompt is not None else open(args.prompt_file, encoding="utf-8").read()
        if not text.strip():
            raise DumpError("the prompt is empty")
        if args.chat:
            if not getattr(tokenizer, "chat_template", None):
                raise DumpError("--chat: the tokenizer has no chat template")
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False)
            enc = tokenizer(text, add_special_tokens=False)
        else:
            enc = tokenizer(text, add_special_tokens=not args.no_special_tokens)
        ids = list(enc["input_ids"])
    if not ids:
        raise DumpError("no tokens to run")
    n_given = len(ids)
    ids = ids[: args.max_tokens]

    # ---- model
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "auto": "auto"}[args.model_dtype]
    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = args.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise DumpError("--device cuda but torch sees no CUDA device")
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dt, **common)
        except TypeError:
            model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=dt, **common)
    except OSError as e:
        raise DumpError(f"cannot load model {args.model!r}: {e}")
    except ValueError as e:
        raise DumpError(f"{args.model!r} is not a causal LM transformers can load: {e}")
    model.to(device).eval()
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n_layers = text_cfg.num_hidden_layers
    layers = parse_layers(args.layers, n_layers)
    maxpos = getattr(text_cfg, "max_position_embeddings", None)
    if maxpos and len(ids) > maxpos:
        print(f"warning: {len(ids)} tokens exceed max_position_embeddings {maxpos}", file=sys.stderr)
    vocab = getattr(text_cfg, "vocab_size", None)
    if vocab and (min(ids) < 0 or max(ids) >= vocab):
        raise DumpError(f"token ids must be in [0, {vocab})")

    # ---- capture through the attention interface
    base_impl = getattr(cfg, "_attn_implementation", None) or "eager"
    captured: dict[int, dict] = {}
    want = set(layers)

    def capture(module, query, key, value, attention_mask, *a, **kw):
        li = getattr(module, "layer_idx", None)
        if li is None:
            raise DumpError(f"attention module {type(module).__name__} has no layer_idx; cannot attribute captures")
        if li in want:
            captured[li] = {
                "q": query.detach()[0].float().cpu().numpy() if not args.no_queries else None,
                "k": key.detach()[0].float().cpu().numpy(),
                "v": value.detach()[0].float().cpu().numpy(),
                "scaling": kw.get("scaling", a[0] if a else None),
            }
        if base_impl == "eager" or base_impl not in AttentionInterface._global_mapping:
            mod = sys.modules[type(module).__module__]
            fn = getattr(mod, "eager_attention_forward", None)
            if fn is None:
                raise DumpError(f"{type(module).__module__} has no eager_attention_forward; use --model-dtype/--device to pick sdpa")
        else:
            fn = AttentionInterface._global_mapping[base_impl]
        return fn(module, query, key, value, attention_mask, *a, **kw)

    AttentionInterface.register(CAPTURE_NAME, capture)
    try:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(CAPTURE_NAME)
        else:
            raise AttributeError
    except Exception:
        def set_impl(c):
            c._attn_implementation = CAPTURE_NAME
            for sub in ("text_config",):
                if getattr(c, sub, None) is not None:
                    set_impl(getattr(c, sub))
        set_impl(cfg)

    with torch.no_grad():
        inp = torch.tensor([ids], dtype=torch.long, device=device)
        out = model(input_ids=inp, use_cache=True)
    # transformers >= 5.x names the returned cache `cache`, older versions `past_key_values`
    cache = out["cache"] if "cache" in out else (out["past_key_values"] if "past_key_values" in out else None)
    missing = [l for l in layers if l not in captured]
    if missing:
        raise DumpError(f"no attention call was captured for layer(s) {missing}: this architecture does not route "
                        f"attention through transformers' AttentionInterface ({type(model).__name__})")

    # ---- assemble
    S = len(ids)
    np_dt = {"fp16": np.float16, "fp32": np.float32, "bf16": None}[args.dtype]
    tensors = {"tokens": np.asarray(ids, dtype=np.int32)}
    scales, notes = set(), []
    q_heads = kv_heads = head_dim = None
    for l in layers:
        c = captured[l]
        k, v = c["k"], c["v"]
        ckv = cache_layer_kv(cache, l)
        if ckv is not None and ckv[0] is not None and ckv[0].shape[-2] == S:
            ck = ckv[0].detach()[0].float().cpu().numpy()
            cv = ckv[1].detach()[0].float().cpu().numpy()
            dk = float(np.abs(ck - k).max()) if ck.shape == k.shape else float("inf")
            dv = float(np.abs(cv - v).max()) if cv.shape == v.shape else float("inf")
            if dk > 1e-3 * (1 + np.abs(k).max()) or dv > 1e-3 * (1 + np.abs(v).max()):
                notes.append(f"layer {l}: cache differs from the attention inputs (|dk| {dk:.3g}, |dv| {dv:.3g}); cache kept")
            k, v = ck, cv
        else:
            notes.append(f"layer {l}: cache not readable at full length (sliding window?); keys/values taken from the attention call")
        if k.shape[-2] != S:
            raise DumpError(f"layer {l}: keys cover {k.shape[-2]} positions, expected {S}")
        tensors[f"layers.{l}.k"] = k
        tensors[f"layers.{l}.v"] = v
        if c["q"] is not None:
            q = c["q"]
            if q.shape[0] % k.shape[0]:
                raise DumpError(f"layer {l}: {q.shape[0]} query heads not a multiple of {k.shape[0]} kv heads")
            tensors[f"layers.{l}.q"] = q
            q_heads = q.shape[0]
        kv_heads, head_dim = k.shape[0], k.shape[-1]
        if c["scaling"] is not None:
            scales.add(float(c["scaling"]))
    if q_heads is None:
        q_heads = getattr(text_cfg, "num_attention_heads", "")
    if len(scales) > 1:
        notes.append(f"layers use different softmax scales {sorted(scales)}; metadata has the first layer's")
    scale = float(captured[layers[0]]["scaling"]) if captured[layers[0]]["scaling"] is not None else head_dim ** -0.5

    for name, arr in list(tensors.items()):
        if name == "tokens":
            continue
        if args.dtype == "bf16":
            import torch as _t
            tensors[name] = _t.from_numpy(np.ascontiguousarray(arr)).to(_t.bfloat16)
        else:
            tensors[name] = np.ascontiguousarray(arr.astype(np_dt))
    ts = token_strings(tokenizer, ids)
    md = {
        "format": "tq-kvdump/1",
        "model": args.model_name or args.model,
        "architecture": f"{getattr(text_cfg, 'model_type', '?')} ({type(model).__name__})",
        "num_layers": str(len(layers)),
        "layers": ",".join(map(str, layers)),
        "num_q_heads": str(q_heads),
        "num_kv_heads": str(kv_heads),
        "head_dim": str(head_dim),
        "softmax_scale": repr(scale),
        "rope": describe_rope(text_cfg),
        "token_strings": json.dumps(ts, ensure_ascii=False),
        "text": "".join(ts) if text is None else text,
        "prompt_tokens": str(S),
        "source": f"tools/dump_kv.py (transformers {transformers.__version__}, torch {torch.__version__}, "
                  f"model dtype {args.model_dtype}, device {device}, attention {base_impl})",
    }
    if notes:
        md["notes"] = "; ".join(notes)
    if args.dtype == "bf16":
        from safetensors.torch import save_file as save_t
        tensors["tokens"] = torch.from_numpy(tensors["tokens"])
        save_t(tensors, args.out, metadata=md)
    else:
        save_file(tensors, args.out, metadata=md)
    for n in notes:
        print("note:", n, file=sys.stderr)
    return {"tokens": S, "given": n_given, "layers": layers, "q_heads": q_heads, "kv_heads": kv_heads,
            "head_dim": head_dim, "scale": scale, "bytes": os.path.getsize(args.out)}


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_args(ap, args)
    try:
        info = dump(args)
    except DumpError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    trunc = f" (truncated from {info['given']})" if info["given"] > info["tokens"] else ""
    print(f"wrote {args.out}: {info['tokens']} tokens{trunc}, layers {info['layers']}, "
          f"q_heads {info['q_heads']}, kv_heads {info['kv_heads']}, head_dim {info['head_dim']}, "
          f"softmax_scale {info['scale']:.6g}, {info['bytes']} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
