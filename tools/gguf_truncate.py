#!/usr/bin/env python3
"""Write a copy of a llama-architecture GGUF that keeps only its first N blocks (layers).

Quantized tensors are copied byte for byte; `<arch>.block_count` is set to N. Because a
decoder is causal in depth too, layers 0..N-1 of the truncated model compute exactly what
they compute in the full model, so a small file is enough to cross-check early layers
(e.g. tools/gguf_numpy_dump.py against transformers' own GGUF loader on a machine with
little room).

Example::

    python3 tools/gguf_truncate.py SmolLM2-135M-Instruct.Q4_1.gguf smol8.gguf --layers 8
"""
import argparse
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--layers", type=int, required=True, help="number of leading blocks to keep")
    a = ap.parse_args(argv)
    import gguf
    if not os.path.isfile(a.src):
        ap.error(f"not found: {a.src}")
    r = gguf.GGUFReader(a.src)
    arch = r.fields["general.architecture"].contents()
    n = int(r.fields[f"{arch}.block_count"].contents())
    if not 0 < a.layers <= n:
        ap.error(f"--layers must be in 1..{n}")
    w = gguf.GGUFWriter(a.dst, arch=arch, endianess=r.endianess)
    for f in r.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue
        vt = f.types[0]
        st = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        val = a.layers if f.name == f"{arch}.block_count" else f.contents()
        w.add_key_value(f.name, val, vt, sub_type=st)
    keep = [t for t in r.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < a.layers]
    for t in keep:
        w.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for t in keep:
        w.write_tensor_data(t.data, tensor_endianess=r.endianess)
    w.close()
    print(f"wrote {a.dst}: {a.layers} of {n} blocks, {len(keep)} tensors, {os.path.getsize(a.dst)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
