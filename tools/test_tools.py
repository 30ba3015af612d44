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


if __name__ == "__main__":
    unittest.main(verbosity=2)
