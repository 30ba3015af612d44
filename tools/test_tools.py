#!/usr/bin/env python3
"""CPU tests of the Python dump tools (numpy + safetensors; tokenizers/gguf tests skip if absent).

Run: ``python3 tools/test_tools.py`` (or ``python3 -m pytest tools/test_tools.py``).
Data: ../shared/data (stories260K checkpoint) if present, else skipped; tests/data samples.
"""
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import llama2c_numpy as ln  # noqa: E402
import llama2c_to_hf as conv  # noqa: E402

MODELS = os.environ.get("TQ_MODELS", os.path.join(ROOT, "..", "shared", "data", "models"))
CKPT = os.path.join(MODELS, "stories260K.bin")
TOK = os.path.join(MODELS, "tok512.bin")
DATA = os.path.join(ROOT, "tests", "data")
have_ckpt = os.path.isfile(CKPT) and os.path.isfile(TOK)


def rope_half(x, pos, theta=10000.0):
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = pos[:, None] * inv[None]
    c, s = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1)


class RopePermutation(unittest.TestCase):
    def test_permuted_rows_with_rotate_half_equal_reordered_interleaved(self):
        rng = np.random.default_rng(0)
        H, hd, D, S = 3, 8, 16, 7
        w = rng.standard_normal((H * hd, D))
        x = rng.standard_normal((S, D))
        pos = np.arange(S, dtype=np.float64)
        q_l2c = ln.rope_interleaved((x @ w.T).reshape(S, H, hd).transpose(1, 0, 2), pos)
        q_hf = rope_half((x @ conv.permute_rope_rows(w, H).T).reshape(S, H, hd).transpose(1, 0, 2), pos)
        perm = np.r_[0:hd:2, 1:hd:2]
        np.testing.assert_allclose(q_hf, q_l2c[..., perm], atol=1e-12)

    def test_gguf_unpermute_is_the_converter_permutation(self):
        import importlib.util
        if importlib.util.find_spec("gguf") is None:
            self.skipTest("gguf not installed")
        import gguf_numpy_dump as g
        w = np.arange(4 * 6 * 3, dtype=np.float64).reshape(4 * 6, 3)
        np.testing.assert_array_equal(g.unpermute_rows(w, 4), conv.permute_rope_rows(w, 4))


@unittest.skipUnless(have_ckpt, "stories260K checkpoint not found")
class Llama2cReference(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cfg, cls.w = ln.read_checkpoint(CKPT)
        cls.pieces, cls.scores = ln.read_tokenizer(TOK, cls.cfg["vocab_size"])

    def test_greedy_sample(self):
        toks = ln.greedy(self.cfg, self.w, ln.encode(self.pieces, self.scores, ""), 20)
        text = "".join(ln.decode_token_strings(self.pieces, toks)[1:])
        self.assertTrue(text.startswith("Once upon a time, there was a little girl named Lily."), text)

    def test_matches_f32_sample(self):
        t, md = ln.load_kvdump(os.path.join(DATA, "stories260K_tom_256_f32.safetensors"))
        res = ln.forward(self.cfg, self.w, t["tokens"])
        for l in range(self.cfg["n_layers"]):
            for n in ("q", "k", "v", "k_prerope"):
                np.testing.assert_allclose(res[l][n], t[f"layers.{l}.{n}"], atol=1e-4, rtol=0)

    def test_converter_and_tokenizer(self):
        with tempfile.TemporaryDirectory() as td:
            files = conv.convert(CKPT, td, TOK)
            self.assertIn("model.safetensors", files)
            cfg = json.load(open(os.path.join(td, "config.json")))
            self.assertEqual((cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]), (8, 4, 8))
            from safetensors.numpy import load_file
            sd = load_file(os.path.join(td, "model.safetensors"))
            np.testing.assert_array_equal(sd["model.layers.2.self_attn.v_proj.weight"], self.w["wv"][2])
            np.testing.assert_array_equal(sd["model.layers.2.self_attn.k_proj.weight"],
                                          conv.permute_rope_rows(self.w["wk"][2], 4))
            try:
                from tokenizers import Tokenizer
            except ImportError:
                self.skipTest("tokenizers not installed")
            tk = Tokenizer.from_file(os.path.join(td, "tokenizer.json"))
            _, md = ln.load_kvdump(os.path.join(DATA, "stories260K_lily_512.safetensors"))
            for para in (p for p in md["text"].split("\n") if p and "<s>" not in p):  # "<s>" is special in HF
                self.assertEqual(tk.encode(para).ids, ln.encode(self.pieces, self.scores, para))


class SmolLM2Slice(unittest.TestCase):
    def test_slice_layout(self):
        path = os.path.join(DATA, "smollm2_135m_slice.safetensors")
        if not os.path.isfile(path):
            self.skipTest("slice not present")
        self.assertLess(os.path.getsize(path), 4 * 1024 * 1024)
        t, md = ln.load_kvdump(path)
        self.assertEqual(md["format"], "tq-kvdump/1")
        self.assertEqual(md["source_layers"], "0,15,29")  # stored renumbered as layers 0, 1, 2
        self.assertEqual(float(md["softmax_scale"]), 0.125)
        S = t["tokens"].size
        self.assertEqual(S, 512)
        self.assertEqual(len(json.loads(md["token_strings"])), S)
        for l in (0, 1, 2):
            self.assertEqual(t[f"layers.{l}.q"].shape, (9, S, 64))
            self.assertEqual(t[f"layers.{l}.k"].shape, (3, S, 64))
            self.assertEqual(t[f"layers.{l}.v"].shape, (3, S, 64))
            self.assertEqual(t[f"layers.{l}.k"].dtype, np.float16)
            self.assertTrue(np.isfinite(t[f"layers.{l}.q"]).all())


class Qwen25Slice(unittest.TestCase):
    def test_slice_layout(self):
        path = os.path.join(ROOT, "resources", "qwen25_coder_1p5b_sqlite_512.safetensors")
        if not os.path.isfile(path):
            self.skipTest("slice not present")
        self.assertLess(os.path.getsize(path), 10 * 1024 * 1024)
        t, md = ln.load_kvdump(path)
        self.assertEqual(md["format"], "tq-kvdump/1")
        self.assertEqual(md["source_layers"], "0,9,15,27")  # stored renumbered as layers 0..3
        self.assertAlmostEqual(float(md["softmax_scale"]), 1 / np.sqrt(128))
        S = t["tokens"].size
        self.assertEqual(S, 512)
        ts = json.loads(md["token_strings"])
        self.assertEqual(len(ts), S)
        self.assertEqual("".join(ts), md["text"])
        self.assertTrue(md["text"].startswith("Appropriate Uses For SQLite"))
        for l in range(4):
            self.assertEqual(t[f"layers.{l}.q"].shape, (12, S, 128))
            self.assertEqual(t[f"layers.{l}.k"].shape, (2, S, 128))
            self.assertEqual(t[f"layers.{l}.v"].shape, (2, S, 128))
            self.assertEqual(t[f"layers.{l}.k"].dtype, np.float16)
            self.assertTrue(np.isfinite(t[f"layers.{l}.q"]).all())
        # layer 0's keys are Qwen2's key bias plus small noise (docs/results/qwen25_coder_1p5b_key_stats.log)
        k0 = t["layers.0.k"].astype(np.float64)
        self.assertGreater(np.linalg.norm(k0, axis=-1).mean(), 500)
        self.assertLess(np.linalg.norm(t["layers.3.k"].astype(np.float64), axis=-1).mean(), 50)


def _bytes_to_unicode():
    """GPT-2's byte -> printable character table (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_qwen2(path, rng, n_layers=2, dim=64, n_heads=2, n_kv=1, hd=32, ffn=96, theta=10000.0,
                     eps=1e-6, untied=True, zero_token=None):
    """A tiny random qwen2-architecture GGUF (F32 tensors) with a byte-level BPE vocabulary + merges.
    Returns the float64 weights (numpy [out, in]) and the vocabulary."""
    import gguf
    alphabet = list(_bytes_to_unicode().values())
    merges = ["t h", "th e", "Ġ the", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "2 0", "' s"]
    vocab = alphabet + [m.replace(" ", "") for m in merges] + ["<|endoftext|>", "<|im_end|>"]
    types = [1] * (len(vocab) - 2) + [3, 3]
    V = len(vocab)
    w = {"token_embd.weight": rng.standard_normal((V, dim)) * 0.5,
         "output_norm.weight": 1.0 + 0.1 * rng.standard_normal(dim)}
    if untied:
        w["output.weight"] = rng.standard_normal((V, dim)) * 0.2
    if zero_token is not None:
        w["token_embd.weight"][zero_token] = 0.0
    for l in range(n_layers):
        b = f"blk.{l}."
        shapes = {"attn_q.weight": (n_heads * hd, dim), "attn_k.weight": (n_kv * hd, dim),
                  "attn_v.weight": (n_kv * hd, dim), "attn_output.weight": (dim, n_heads * hd),
                  "ffn_gate.weight": (ffn, dim), "ffn_up.weight": (ffn, dim), "ffn_down.weight": (dim, ffn),
                  "attn_q.bias": (n_heads * hd,), "attn_k.bias": (n_kv * hd,), "attn_v.bias": (n_kv * hd,)}
        for n, sh in shapes.items():
            w[b + n] = rng.standard_normal(sh) * (0.5 if n.endswith("bias") else 1.0 / np.sqrt(sh[-1]))
        w[b + "attn_k.bias"][:hd // 2] += 3.0  # a large key bias, as in real Qwen2 models
        w[b + "attn_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(dim)
        w[b + "ffn_norm.weight"] = 1.0 + 0.1 * rng.standard_normal(dim)
    wr = gguf.GGUFWriter(path, "qwen2")
    wr.add_name("tiny-qwen2-test")
    wr.add_block_count(n_layers)
    wr.add_context_length(256)
    wr.add_embedding_length(dim)
    wr.add_feed_forward_length(ffn)
    wr.add_head_count(n_heads)
    wr.add_head_count_kv(n_kv)
    wr.add_rope_freq_base(theta)
    wr.add_layer_norm_rms_eps(eps)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("qwen2")
    wr.add_token_list(vocab)
    wr.add_token_types(types)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(V - 2)
    wr.add_eos_token_id(V - 1)
    wr.add_add_bos_token(False)
    for n, a in w.items():
        wr.add_tensor(n, a.astype(np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return w, vocab


def ref_forward_qwen2(w, tokens, n_layers, n_heads, n_kv, hd, theta, eps, untied=True):
    """Independent float64 reference of a Qwen2 (HF Qwen2ForCausalLM) forward pass: biases, rotate_half RoPE."""
    S = len(tokens)
    pos = np.arange(S, dtype=np.float64)
    rms = lambda x, g: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * g
    x = w["token_embd.weight"][tokens]
    out = {}
    for l in range(n_layers):
        b = f"blk.{l}."
        h = rms(x, w[b + "attn_norm.weight"])
        proj = {n: h @ w[b + f"attn_{n}.weight"].T + w[b + f"attn_{n}.bias"] for n in "qkv"}
        q = proj["q"].reshape(S, n_heads, hd).transpose(1, 0, 2)
        k = proj["k"].reshape(S, n_kv, hd).transpose(1, 0, 2)
        v = proj["v"].reshape(S, n_kv, hd).transpose(1, 0, 2)
        qr, kr = rope_half(q, pos, theta), rope_half(k, pos, theta)
        kk = np.repeat(kr, n_heads // n_kv, 0)
        vv = np.repeat(v, n_heads // n_kv, 0)
        a = qr @ kk.transpose(0, 2, 1) / np.sqrt(hd) + np.triu(np.full((S, S), -np.inf), 1)
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ vv).transpose(1, 0, 2).reshape(S, -1)
        x = x + o @ w[b + "attn_output.weight"].T
        h = rms(x, w[b + "ffn_norm.weight"])
        g, u = h @ w[b + "ffn_gate.weight"].T, h @ w[b + "ffn_up.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[b + "ffn_down.weight"].T
        out[l] = {"q": qr, "k": kr, "v": v, "k_prerope": k}
    out["logits"] = rms(x, w["output_norm.weight"]) @ w["output.weight" if untied else "token_embd.weight"].T
    return out


def _have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


@unittest.skipUnless(_have("gguf"), "gguf not installed")
class Qwen2Synthetic(unittest.TestCase):
    L, DIM, H, KV, HD, THETA, EPS = 2, 64, 2, 1, 32, 10000.0, 1e-6

    @classmethod
    def setUpClass(cls):
        import gguf_numpy_dump as g
        cls.g = g
        cls.td = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls.td.name, "tiny-qwen2.gguf")
        cls.zero = 7
        cls.w, cls.vocab = write_tiny_qwen2(cls.path, np.random.default_rng(1), cls.L, cls.DIM, cls.H, cls.KV,
                                            cls.HD, theta=cls.THETA, eps=cls.EPS, zero_token=cls.zero)
        cls.m = g.GGUFLlama(cls.path)
        cls.tokens = [cls.zero, 3, 100, 255, 17, cls.zero, 42, 200, 5, 64, 11]

    @classmethod
    def tearDownClass(cls):
        cls.td.cleanup()

    def test_hyperparameters(self):
        m = self.m
        self.assertEqual((m.arch, m.n_layers, m.dim, m.n_heads, m.n_kv_heads, m.head_dim), ("qwen2", 2, 64, 2, 1, 32))
        self.assertEqual((m.theta, m.eps, m.tied, m.has_bias, m.rope_style), (self.THETA, float(np.float32(self.EPS)), False, True, "half"))

    def test_shapes_and_reference(self):
        S = len(self.tokens)
        res = self.m.forward(self.tokens, keep_layers=range(self.L), logits_last_only=False)
        ref = ref_forward_qwen2(self.w, self.tokens, self.L, self.H, self.KV, self.HD, self.THETA, self.EPS)
        for l in range(self.L):
            self.assertEqual(res[l]["q"].shape, (self.H, S, self.HD))
            for n in ("k", "v", "k_prerope"):
                self.assertEqual(res[l][n].shape, (self.KV, S, self.HD))
            for n in ("q", "k", "v", "k_prerope"):
                np.testing.assert_allclose(res[l][n], ref[l][n], atol=2e-4, rtol=1e-4, err_msg=f"layer {l} {n}")
        self.assertEqual(res["logits"].shape, (S, len(self.vocab)))
        np.testing.assert_allclose(res["logits"], ref["logits"], atol=2e-4, rtol=1e-4)
        # the untied head is used: the tied one gives other logits
        tied = ref_forward_qwen2(self.w, self.tokens, self.L, self.H, self.KV, self.HD, self.THETA, self.EPS, untied=False)
        self.assertGreater(np.abs(tied["logits"] - ref["logits"]).max(), 0.1)

    def test_biases_applied(self):
        # a zero embedding normalises to 0, so at position 0 (RoPE = identity) q/k/v are the biases
        res = self.m.forward([self.zero, 5], keep_layers=[0])
        for n, heads in (("q", self.H), ("k", self.KV), ("v", self.KV)):
            np.testing.assert_allclose(res[0][n][:, 0, :], self.w[f"blk.0.attn_{n}.bias"].reshape(heads, self.HD),
                                       atol=1e-6, err_msg=n)
        # at position 5 the key of the zero token is the bias rotated by rotate_half RoPE
        res = self.m.forward([3, 4, 5, 6, 8, self.zero], keep_layers=[0])
        kb = self.w["blk.0.attn_k.bias"].reshape(1, 1, self.HD)
        np.testing.assert_allclose(res[0]["k"][:, 5:6], rope_half(kb, np.array([5.0]), self.THETA), atol=1e-5)

    def test_rope_is_rotate_half_without_permutation(self):
        S = len(self.tokens)
        res = self.m.forward(self.tokens, keep_layers=[0])
        k_pre = res[0]["k_prerope"].astype(np.float64)
        pos = np.arange(S, dtype=np.float64)
        np.testing.assert_allclose(res[0]["k"], rope_half(k_pre, pos, self.THETA), atol=1e-5)
        # interleaved pairs (GGML "normal" rope) or un-permuting the rows would differ
        self.assertGreater(np.abs(ln.rope_interleaved(k_pre, pos, self.THETA) - res[0]["k"]).max(), 0.1)
        unperm = self.g.unpermute_rows(self.w["blk.0.attn_k.weight"], self.KV)
        self.assertGreater(np.abs(unperm - self.w["blk.0.attn_k.weight"]).max(), 0.1)
        np.testing.assert_allclose(self.m.w["blk.0.attn_k.weight"], self.w["blk.0.attn_k.weight"], atol=1e-6)
        # --rope-order gguf is the same for qwen2
        m2 = self.g.GGUFLlama(self.path, rope_order="gguf")
        np.testing.assert_array_equal(m2.forward(self.tokens, keep_layers=[1])[1]["k"],
                                      self.m.forward(self.tokens, keep_layers=[1])[1]["k"])

    def test_output_falls_back_to_token_embd(self):
        p = os.path.join(self.td.name, "tied.gguf")
        w, _ = write_tiny_qwen2(p, np.random.default_rng(2), 1, self.DIM, self.H, self.KV, self.HD, untied=False)
        m = self.g.GGUFLlama(p)
        self.assertTrue(m.tied)
        ref = ref_forward_qwen2(w, self.tokens, 1, self.H, self.KV, self.HD, 10000.0, 1e-6, untied=False)
        np.testing.assert_allclose(m.forward(self.tokens)["logits"][-1], ref["logits"][-1], atol=2e-4, rtol=1e-4)

    def test_tokenizer_round_trip(self):
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            self.skipTest("tokenizers not installed")
        tok = self.g.GGUFTokenizer(self.m.reader)
        self.assertEqual(tok.pre, "qwen2")
        v = {t: i for i, t in enumerate(self.vocab)}
        for text in ("the world, it's 2026!\n\n  x = y\t", "Ünïcødé → 東京 ☃", "the the world<|endoftext|> ok"):
            ids = tok.encode(text)
            self.assertEqual(tok.decode(ids), text)
            self.assertEqual("".join(tok.token_strings(ids)), text)
        self.assertEqual(tok.encode("the world"), [v["the"], v["Ġworld"]])
        # Qwen2 splits digits one by one (the "2 0" merge must not apply); GPT-2's regex would keep "2026" together
        self.assertEqual(tok.encode("2026"), [v["2"], v["0"], v["2"], v["6"]])
        self.assertEqual(tok.encode("it's"), [v["i"], v["t"], v["'s"]])
        self.assertIn(len(self.vocab) - 2, tok.encode("a<|endoftext|>b"))  # control token matched whole

    def test_cli_dump(self):
        try:
            import tokenizers  # noqa: F401
            import safetensors  # noqa: F401
        except ImportError:
            self.skipTest("tokenizers/safetensors not installed")
        out = os.path.join(self.td.name, "d.safetensors")
        r = self.g.main([self.path, "--prompt", "the world the world", "--prerope", "--layers", "all", "-o", out,
                         "--overwrite"])
        self.assertEqual(r, 0)
        t, md = ln.load_kvdump(out)
        S = t["tokens"].size
        self.assertEqual(md["format"], "tq-kvdump/1")
        self.assertTrue(md["architecture"].startswith("qwen2"))
        self.assertEqual(md["text"], "the world the world")
        self.assertEqual(len(json.loads(md["token_strings"])), S)
        self.assertEqual(t["layers.1.q"].shape, (self.H, S, self.HD))
        self.assertEqual(t["layers.1.k_prerope"].shape, (self.KV, S, self.HD))
        self.assertEqual(t["layers.0.k"].dtype, np.float16)


class SyntheticDump(unittest.TestCase):
    def test_layout_and_refusal(self):
        try:
            import safetensors  # noqa: F401
        except ImportError:
            self.skipTest("safetensors not installed")
        import synthetic_dump as sd
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "s.safetensors")
            self.assertEqual(sd.main([path, "--layers", "2", "--kv-heads", "2", "--q-heads", "4", "--tokens", "16", "--head-dim", "8"]), 0)
            t, md = ln.load_kvdump(path)
            self.assertEqual(md["format"], "tq-kvdump/1")
            self.assertEqual(t["layers.1.q"].shape, (4, 16, 8))
            self.assertEqual(t["layers.0.k"].shape, (2, 16, 8))
            self.assertEqual(t["layers.0.v"].dtype, np.float16)
            self.assertEqual(sd.main([path, "--layers", "1"]), 2)  # exists: not overwritten
            with self.assertRaises(SystemExit):
                sd.main([path, "--q-heads", "3", "--kv-heads", "2", "--force"])


class DumpKvCli(unittest.TestCase):
    def run_tool(self, *args):
        return subprocess.run([sys.executable, os.path.join(HERE, "dump_kv.py"), *args],
                              capture_output=True, text=True)

    def test_help_without_torch(self):
        r = self.run_tool("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("tq-kvdump/1", r.stdout)

    def test_bad_arguments(self):
        with tempfile.TemporaryDirectory() as td:
            r = self.run_tool(td, "--prompt", "x", "-o", os.path.join(td, "a.npz"))
            self.assertEqual(r.returncode, 2)
            self.assertIn(".safetensors", r.stderr)
            r = self.run_tool(td, "-o", os.path.join(td, "a.safetensors"))
            self.assertEqual(r.returncode, 2)
            r = self.run_tool(os.path.join(td, "missing"), "--prompt", "x", "-o", os.path.join(td, "a.safetensors"))
            self.assertEqual(r.returncode, 2)
            self.assertIn("not found", r.stderr)

    def test_parse_layers(self):
        sys.path.insert(0, HERE)
        import dump_kv
        self.assertEqual(dump_kv.parse_layers("0,15,-1", 30), [0, 15, 29])
        self.assertEqual(dump_kv.parse_layers("2-4", 30), [2, 3, 4])
        self.assertEqual(dump_kv.parse_layers("all", 3), [0, 1, 2])
        with self.assertRaises(dump_kv.DumpError):
            dump_kv.parse_layers("30", 30)


class MethodsReference(unittest.TestCase):
    """tools/methods_reference.py: its fp8 against ml_dtypes / torch, and the golden file it wrote."""

    def setUp(self):
        import methods_reference as mr
        self.mr = mr

    def test_fp8_table_equals_ml_dtypes_and_torch(self):
        mr = self.mr
        rng = np.random.default_rng(11)
        for fmt in ("e4m3", "e5m2"):
            t = mr.fp8_table(fmt)
            mids = ((t[1:] + t[:-1]) / 2).astype(np.float32)
            x = np.concatenate([rng.standard_normal(20000).astype(np.float32) * np.float32(t[-1] / 4), mids, -mids, t.astype(np.float32)])
            x = np.clip(x, -t[-1], t[-1]).astype(np.float32)
            codes = mr.fp8_encode_table(x, fmt)
            np.testing.assert_array_equal(mr.fp8_decode_table(codes, fmt), np.abs(mr.fp8_decode_table(codes, fmt)) * np.where(codes & 0x80, -1, 1))
            checked = 0
            try:
                import ml_dtypes
                dt = ml_dtypes.float8_e4m3fn if fmt == "e4m3" else ml_dtypes.float8_e5m2
                np.testing.assert_array_equal(codes, x.astype(dt).view(np.uint8))
                checked += 1
            except ImportError:
                pass
            try:
                import torch
                tt = torch.float8_e4m3fn if fmt == "e4m3" else torch.float8_e5m2
                np.testing.assert_array_equal(codes, torch.from_numpy(x).to(tt).view(torch.uint8).numpy())
                checked += 1
            except (ImportError, AttributeError):
                pass
            if not checked:
                self.skipTest("neither ml_dtypes nor torch is installed")

    def test_reproduces_the_golden_file(self):
        from safetensors.numpy import load_file
        want = load_file(self.mr.GOLDEN)
        got = self.mr.golden_tensors()
        self.assertEqual(sorted(want), sorted(got))
        for k in got:
            np.testing.assert_array_equal(got[k].view(np.uint8), want[k].view(np.uint8), err_msg=k)

    def test_kivi_window_and_groups_are_charged(self):
        x = self.mr.fixture(100, 64, 0)
        _, nb = self.mr.kivi(x, 2, False, group=32, window=30)  # 70 tokens -> 64 quantized, 36 fp16
        self.assertEqual(nb, 64 * 64 * 2 // 8 + 4 * 2 * 64 + 2 * 36 * 64)
        _, nb = self.mr.kivi(x, 2, True, group=32, window=30)   # 70 quantized, 2 groups per token
        self.assertEqual(nb, 70 * 64 * 2 // 8 + 4 * 70 * 2 + 2 * 30 * 64)


if __name__ == "__main__":
    unittest.main(verbosity=2)
