#!/usr/bin/env python3
"""Runs tools/test_tools.py; exits 77 (CTest: skipped) with the reason when numpy/safetensors are missing."""
import os
import subprocess
import sys

missing = []
for mod in ("numpy", "safetensors"):
    try:
        __import__(mod)
    except ImportError:
        missing.append(mod)
if missing:
    print(f"SKIP: python module(s) {', '.join(missing)} not installed for {sys.executable}")
    sys.exit(77)
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.exit(subprocess.call([sys.executable, os.path.join(root, "tools", "test_tools.py")]))
