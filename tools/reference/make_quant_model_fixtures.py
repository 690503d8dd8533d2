#!/usr/bin/env python3
"""Quantized GGUF copies of the phi-3.5-mini fixture, written by the `gguf` package
(ggml's own Python quantizer and writer): testdata/models/phi-3.5-mini-gguf-py-<type>.gguf.

Usage (after make_model_fixtures.py): .venv-ref/bin/python tools/reference/make_quant_model_fixtures.py
"""
import json
from pathlib import Path

from gguf import GGMLQuantizationType as T
from safetensors.torch import load_file

from make_model_fixtures import write_gguf_py


def main():
    root = Path(__file__).resolve().parents[2]
    src = root / "testdata/models/phi-3.5-mini"
    cfg = json.loads((src / "config.json").read_text())
    sd = load_file(src / "model.safetensors")
    # state-dict order as the f32 copy writes it
    for qt in (T.Q8_0, T.Q4_0):
        out = root / f"testdata/models/phi-3.5-mini-gguf-py-{qt.name.lower()}.gguf"
        write_gguf_py(out, cfg, sd, qt)
        print(out, out.stat().st_size)


if __name__ == "__main__":
    main()
