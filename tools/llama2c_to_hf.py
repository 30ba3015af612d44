#!/usr/bin/env python3
"""Convert a llama2.c checkpoint (+ its tokenizer .bin) to a Hugging Face Llama folder.

Needs only numpy and safetensors (no torch). Writes into OUT_DIR:

* ``config.json``             LlamaForCausalLM config (rope theta 10000, RMSNorm eps 1e-5),
* ``generation_config.json``,
* ``model.safetensors``       fp32 weights under Hugging Face names,
* ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``
  (when a tokenizer file is given or found next to the checkpoint as ``tok<vocab>.bin``):
  a SentencePiece-style BPE (dummy-prefix space, byte fallback) whose merges are ranked by
  the llama2.c piece scores, loadable as ``PreTrainedTokenizerFast``.

Input format: 7 int32 ``dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len``
then fp32 weights in llama2.c order (see tools/llama2c_numpy.py); a negative vocab_size means
the classifier is stored separately (unshared), otherwise it is tied to the embedding.

RoPE convention: llama2.c rotates interleaved channel pairs (2i, 2i+1) of each head; Hugging
Face's ``rotate_half`` rotates (i, i + d/2). The q_proj/k_proj rows are therefore permuted
within each head to the order ``[0, 2, 4, ..., 1, 3, 5, ...]`` (the permutation of
transformers' own convert_llama_weights_to_hf). The converted model computes the same
logits, values and attention scores; its post-RoPE queries/keys equal llama2.c's with the
channels of each head reordered that way.

Example::

    python3 tools/llama2c_to_hf.py ../shared/data/models/stories260K.bin out/stories260K-hf
    # then, with torch + transformers:
    python3 tools/dump_kv.py out/stories260K-hf --prompt "Once upon a time" -o kv.safetensors
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from llama2c_numpy import Llama2cError, read_checkpoint, read_tokenizer  # noqa: E402

SPIECE_SPACE = "\u2581"


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection [n_heads*hd, in] from interleaved pairs
    to rotate_half order within each head: new row j<hd/2 = old 2j, j>=hd/2 = old 2(j-hd/2)+1."""
    out_f, in_f = w.shape
    hd = out_f // n_heads
    if hd * n_heads != out_f or hd % 2:
        raise Llama2cError(f"cannot permute {w.shape} rows into {n_heads} heads of even size")
    return np.ascontiguousarray(w.reshape(n_heads, hd // 2, 2, in_f).transpose(0, 2, 1, 3).reshape(out_f, in_f))


def hf_state_dict(cfg: dict, w: dict) -> dict:
    sd = {"model.embed_tokens.weight": w["tok_embeddings"]}
    for l in range(cfg["n_layers"]):
        p = f"model.layers.{l}."
        sd[p + "input_layernorm.weight"] = w["rms_att"][l]
        sd[p + "self_attn.q_proj.weight"] = permute_rope_rows(w["wq"][l], cfg["n_heads"])
        sd[p + "self_attn.k_proj.weight"] = permute_rope_rows(w["wk"][l], cfg["n_kv_heads"])
        sd[p + "self_attn.v_proj.weight"] = w["wv"][l]
        sd[p + "self_attn.o_proj.weight"] = w["wo"][l]
        sd[p + "post_attention_layernorm.weight"] = w["rms_ffn"][l]
        sd[p + "mlp.gate_proj.weight"] = w["w1"][l]
        sd[p + "mlp.up_proj.weight"] = w["w3"][l]
        sd[p + "mlp.down_proj.weight"] = w["w2"][l]
    sd["model.norm.weight"] = w["rms_final"]
    if not cfg["shared_classifier"]:
        sd["lm_head.weight"] = w["wcls"]
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}


def hf_config(cfg: dict, name: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "_name_or_path": name,
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["hidden_dim"],
        "num_hidden_layers": cfg["n_layers"],
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_kv_heads"],
        "head_dim": cfg["head_dim"],
        "vocab_size": cfg["vocab_size"],
        "max_position_embeddings": cfg["seq_len"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": bool(cfg["shared_classifier"]),
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": "float32",
        "dtype": "float32",
    }


def hf_piece(piece: bytes, i: int) -> str:
    s = piece.decode("utf-8", errors="surrogateescape")
    if i == 1 and s.strip("\n") == "<s>":
        return "<s>"
    if i == 2 and s.strip("\n") == "</s>":
        return "</s>"
    return s.replace(" ", SPIECE_SPACE)


def is_byte_piece(s: str) -> bool:
    return len(s) == 6 and s.startswith("<0x") and s.endswith(">")


def tokenizer_files(pieces: list[bytes], scores: np.ndarray, seq_len: int) -> dict:
    """Build tokenizer.json (+ config files) for a SentencePiece-BPE llama2.c vocabulary."""
    vocab_list = [hf_piece(p, i) for i, p in enumerate(pieces)]
    if len(set(vocab_list)) != len(vocab_list):
        raise Llama2cError("tokenizer has duplicate pieces; cannot build a BPE vocabulary")
    vocab = {s: i for i, s in enumerate(vocab_list)}
    special = {0: "<unk>", 1: "<s>", 2: "</s>"}
    for i, s in special.items():
        if vocab_list[i] != s:
            raise Llama2cError(f"expected {s!r} at id {i}, found {vocab_list[i]!r}")
    normal = {s for i, s in enumerate(vocab_list) if i not in special and not is_byte_piece(s)}
    merges = []
    for j, s in enumerate(vocab_list):
        if s not in normal or len(s) < 2:
            continue
        for cut in range(1, len(s)):
            a, b = s[:cut], s[cut:]
            if a in normal and b in normal:
                merges.append((-float(scores[j]), j, vocab[a], vocab[b], a, b))
    merges.sort()
    if any(" " in m[4] or " " in m[5] for m in merges):
        merge_list = [[m[4], m[5]] for m in merges]
    else:
        merge_list = [f"{m[4]} {m[5]}" for m in merges]
    added = [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, s in special.items()]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPIECE_SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE_SPACE}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
        },
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPIECE_SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merge_list},
    }
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False,
        "model_max_length": seq_len,
        "clean_up_tokenization_spaces": False,
    }
    stm = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    return {"tokenizer.json": tok, "tokenizer_config.json": tcfg, "special_tokens_map.json": stm}


def convert(checkpoint: str, out_dir: str, tokenizer: str | None = None, name: str | None = None,
            overwrite: bool = False, with_tokenizer: bool = True) -> list[str]:
    """Convert; returns the file names written. tokenizer=None looks for tok<vocab>.bin beside
    the checkpoint (no tokenizer files if absent); with_tokenizer=False writes none."""
    from safetensors.numpy import save_file
    cfg, w = read_checkpoint(checkpoint)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise Llama2cError(f"output {out_dir} exists and is not a folder")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise Llama2cError(f"output folder {out_dir} is not empty (use --overwrite)")
    tok_path = tokenizer if with_tokenizer else None
    if with_tokenizer and tok_path is None:
        guess = os.path.join(os.path.dirname(checkpoint) or ".", f"tok{cfg['vocab_size']}.bin")
        if os.path.isfile(guess):
            tok_path = guess
        else:
            print(f"warning: no tokenizer given and {guess} not found: writing no tokenizer files", file=sys.stderr)
    name = name or os.path.basename(checkpoint).rsplit(".", 1)[0]
    tok_files = {}
    if tok_path:
        pieces, scores = read_tokenizer(tok_path, cfg["vocab_size"])
        tok_files = tokenizer_files(pieces, scores, cfg["seq_len"])
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def dump_json(fn, obj):
        with open(os.path.join(out_dir, fn), "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, indent=1 if fn != "tokenizer.json" else None)
        written.append(fn)

    dump_json("config.json", hf_config(cfg, name))
    dump_json("generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "max_length": cfg["seq_len"]})
    save_file(hf_state_dict(cfg, w), os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    written.append("model.safetensors")
    for fn, obj in tok_files.items():
        dump_json(fn, obj)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="llama2.c checkpoint (.bin, legacy v0 format)")
    ap.add_argument("out_dir", help="output folder (created)")
    ap.add_argument("--tokenizer", help="llama2.c tokenizer .bin (default: tok<vocab_size>.bin next to the checkpoint)")
    ap.add_argument("--no-tokenizer", action="store_true", help="write no tokenizer files")
    ap.add_argument("--name", help="model name recorded in config.json (default: checkpoint file stem)")
    ap.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")
    args = ap.parse_args(argv)
    if args.no_tokenizer and args.tokenizer:
        ap.error("--tokenizer and --no-tokenizer exclude each other")
    try:
        if args.tokenizer and not os.path.isfile(args.tokenizer):
            raise Llama2cError(f"tokenizer not found: {args.tokenizer}")
        files = convert(args.checkpoint, args.out_dir, args.tokenizer, args.name, args.overwrite,
                        with_tokenizer=not args.no_tokenizer)
    except Llama2cError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}: {', '.join(files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
