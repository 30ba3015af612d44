#!/usr/bin/env bash
# Verification run for tools/dump_kv.py on a machine with torch + transformers (no network).
# Expects in $C (default .devcarry/): stories260K.bin, tok512.bin, smol6.gguf (made with
#   tools/gguf_truncate.py SmolLM2-135M-Instruct.Q4_1.gguf smol6.gguf --layers 6) and a gguf wheel.
# Writes dumps and log.txt to $OUT (default /tmp/tq_verify).
set -u
export C DEV
C=${C:-.devcarry}
DEV=${DEV:-cuda}
OUT=${OUT:-/tmp/tq_verify}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
step() { echo; echo "=== $*"; }
{
step "environment"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
if ls "$C"/gguf-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$C"/gguf-*.whl && export PYTHONPATH=/tmp/site
fi
python3 -c "import torch, transformers, safetensors, numpy, tokenizers, gguf; print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| cuda', torch.cuda.is_available(), '| transformers', transformers.__version__, '| safetensors', safetensors.__version__, '| numpy', numpy.__version__, '| tokenizers', tokenizers.__version__, '| gguf', getattr(gguf, '__version__', 'ok'))"

step "1. convert stories260K (llama2.c) to a Hugging Face folder"
python3 tools/llama2c_to_hf.py "$C/stories260K.bin" /tmp/s260 --tokenizer "$C/tok512.bin" --overwrite

step "2. transformers greedy sample from BOS vs the numpy reference"
python3 - <<'PY'
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
sys.path.insert(0, "tools")
import llama2c_numpy as ln
tok = AutoTokenizer.from_pretrained("/tmp/s260")
import os
dev = os.environ.get("DEV", "cuda")
m = AutoModelForCausalLM.from_pretrained("/tmp/s260", dtype=torch.float32).to(dev).eval()
ids = tok("Once upon a time", return_tensors="pt").input_ids
print("tokenizer('Once upon a time') =", ids[0].tolist())
g = m.generate(ids.to(dev), max_new_tokens=40, do_sample=False)[0].tolist()
print("transformers:", repr(tok.decode(g, skip_special_tokens=True)))
cfg, w = ln.read_checkpoint(os.environ.get("C", ".devcarry") + "/stories260K.bin")
ref = ln.greedy(cfg, w, ids[0].tolist(), 40)
print("numpy ref   :", repr(tok.decode(ref, skip_special_tokens=True)))
print("greedy tokens identical:", g == ref)
PY

step "3. dump 256 tokens of the lily sample with tools/dump_kv.py (GPU, fp16 and fp32 storage)"
python3 tools/dump_kv.py /tmp/s260 --offline --device "$DEV" --tokens-from tests/data/stories260K_lily_512.safetensors \
  --max-tokens 256 --model-name stories260K-hf -o "$OUT/stories260K_lily_256_hf.safetensors" --overwrite
python3 tools/dump_kv.py /tmp/s260 --offline --device "$DEV" --tokens-from tests/data/stories260K_lily_512.safetensors \
  --max-tokens 256 --dtype fp32 --model-name stories260K-hf -o "$OUT/stories260K_lily_256_hf_f32.safetensors" --overwrite

step "4. verify fp16 dump vs the sample (reordered channels) and vs the numpy forward pass"
python3 tools/verify_dump.py "$OUT/stories260K_lily_256_hf.safetensors" \
  --sample tests/data/stories260K_lily_512.safetensors --checkpoint "$C/stories260K.bin"
step "5. verify fp32 dump vs the numpy forward pass (fp32)"
python3 tools/verify_dump.py "$OUT/stories260K_lily_256_hf_f32.safetensors" --checkpoint "$C/stories260K.bin" | tail -8
step "5b. negative control: the same fp16 dump WITHOUT the channel reordering must fail"
python3 tools/verify_dump.py "$OUT/stories260K_lily_256_hf.safetensors" --sample tests/data/stories260K_lily_512.safetensors --no-permute | tail -1

if [ -f "$C/smol6.gguf" ]; then
step "6. SmolLM2-135M-Instruct (first 6 of 30 blocks of the Q4_1 GGUF): transformers GGUF loader + dump_kv.py on GPU vs tools/gguf_numpy_dump.py"
mkdir -p /tmp/smol && cp "$C/smol6.gguf" /tmp/smol/
python3 tools/gguf_numpy_dump.py /tmp/smol/smol6.gguf --prompt-file tools/data/sqlite_whentouse.txt --max-tokens 512 \
  -o "$OUT/smol6_numpy.safetensors" --overwrite
python3 tools/dump_kv.py /tmp/smol --gguf-file smol6.gguf --offline --device "$DEV" --prompt-file tools/data/sqlite_whentouse.txt \
  --no-special-tokens --max-tokens 512 --model-name "SmolLM2-135M-Instruct Q4_1 (6 blocks)" -o "$OUT/smol6_hf.safetensors" --overwrite
python3 tools/verify_dump.py "$OUT/smol6_hf.safetensors" --against "$OUT/smol6_numpy.safetensors" \
  --against tests/data/smollm2_135m_slice.safetensors | grep -v 'q\.k'
fi
step "done"; date -u
} 2>&1 | grep -v -E 'it/s\]|s/it\]' | tee "$OUT/log.txt"
